"""`django.contrib.admin` with Orchard's console site as the default site (`admin.site`).

Installed in place of "django.contrib.admin": every `admin.register` of the apps lands on the
console site, whose index is the dashboard and whose URLs include the console pages."""

from django.contrib.admin.apps import AdminConfig


class OrchardAdminConfig(AdminConfig):
    default_site = "apps.console.site.OrchardAdminSite"
