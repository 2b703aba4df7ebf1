"""The admin site of Orchard: Django's admin with the operator console.

- Its index is the dashboard (hosts and their queues, latest runs, failed tasks of the last day).
- Its URLs include the console pages under `/admin/console/` (see `apps.console.urls`).
- Project admins may log in; they see the console for their projects only (`apps.console.access`)
  and no model pages unless a global admin grants them Django permissions.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.template.response import TemplateResponse

from apps.console.access import is_console_user


class OrchardAdminSite(AdminSite):
    site_header = "Orchard administration"
    site_title = "Orchard admin"
    index_title = "Operator console"
    index_template = "console/index.html"

    def may_log_in(self, user) -> bool:
        """The login policy (read by the admin login form): global and project admins."""
        return is_console_user(user)

    def has_permission(self, request) -> bool:
        cached = getattr(request, "_console_allowed", None)
        if cached is None:
            cached = request._console_allowed = is_console_user(request.user)
        return cached

    def get_urls(self):
        from apps.console.urls import console_urls

        return console_urls(self) + super().get_urls()

    def index(self, request, extra_context=None):
        from apps.console import selectors

        context = {
            **self.each_context(request),
            "title": self.index_title,
            "subtitle": None,
            "app_list": self.get_app_list(request),
            "dashboard": selectors.dashboard(
                user=request.user, project_id=request.GET.get("project")
            ),
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, self.index_template, context)
