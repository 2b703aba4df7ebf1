"""Prepare a fresh installation: an admin user and a project with the demo data.

Idempotent: running it again changes nothing. The admin's password comes from
ORCHARD_ADMIN_PASSWORD or is generated and printed once.
"""

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from apps.accounts import services
from apps.accounts.models import Project, User
from apps.core.conf import setting

DEMO_PROJECT_ID = "demo"


class Command(BaseCommand):
    help = "Create the admin user and the demo project (idempotent)."

    def handle(self, *args, **options):
        admin = User.objects.filter(username=settings.ADMIN_USERNAME).first()
        if admin is None:
            password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(12)
            admin = User(
                username=settings.ADMIN_USERNAME,
                email=settings.ADMIN_EMAIL,
                name="Administrator",
                is_superuser=True,
                is_staff=True,
            )
            admin.set_password(password)  # the operator chose it; validators apply to the API
            admin.save()
            shown = password if not settings.ADMIN_PASSWORD else "(from ORCHARD_ADMIN_PASSWORD)"
            self.stdout.write(
                self.style.SUCCESS(f"Admin user: {admin.username}  password: {shown}")
            )
        project = Project.objects.filter(pk=DEMO_PROJECT_ID).first()
        if project is None:
            project = services.project_create(
                actor=admin,
                name="Demo",
                task=Project.Task.CLASSIFICATION,
                project_id=DEMO_PROJECT_ID,
            )
            self.stdout.write(f"Demo project: {project.pk}")
        for hook in setting("ORCHARD_DEMO_HOOKS"):
            import_string(hook)(project=project, actor=admin, stdout=self.stdout)
