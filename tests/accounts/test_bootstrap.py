"""`manage.py bootstrap`: an admin (password from the environment or printed once) and the demo
project, idempotent."""

import io

import pytest
from django.core.management import call_command

from apps.accounts.models import Membership, Project, User

pytestmark = pytest.mark.django_db


def test_bootstrap_creates_admin_and_demo_project_once(settings):
    settings.ORCHARD_DEMO_HOOKS = []
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "password:" in out.getvalue()
    password = out.getvalue().split("password: ")[1].split()[0]
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert Membership.objects.get(user=admin, project_id="demo").is_project_admin
    again = io.StringIO()
    call_command("bootstrap", stdout=again)
    assert "password" not in again.getvalue()
    assert User.objects.count() == 1 and Project.objects.count() == 1


def test_bootstrap_takes_the_password_from_the_environment(settings):
    settings.ORCHARD_DEMO_HOOKS = []
    settings.ADMIN_PASSWORD = "from-the-environment-123"
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "from-the-environment-123" not in out.getvalue()
    assert User.objects.get(username="admin").check_password("from-the-environment-123")
