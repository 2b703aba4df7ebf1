"""One "Tasks" section in the admin: django-dramatiq's own Task model is unregistered.

Orchard's Task row (apps.tasks) is the truth about every job; django-dramatiq's table is only
written by its AdminMiddleware, which Orchard does not install (DRAMATIQ_MIDDLEWARE), so its admin
section was an always-empty second "Tasks". The app itself stays installed: it configures the
broker from DRAMATIQ_BROKER and its DbConnectionsMiddleware closes the workers' database
connections."""

from django.contrib import admin

try:
    from django_dramatiq.models import Task as DramatiqTask
except ImportError:  # pragma: no cover - the app is always installed
    DramatiqTask = None

if DramatiqTask is not None and admin.site.is_registered(DramatiqTask):
    admin.site.unregister(DramatiqTask)
