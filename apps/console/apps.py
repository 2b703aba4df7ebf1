from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """Templates and static files of the operator console (its pages are the admin site's)."""

    default = True
    name = "apps.console"
    label = "console"
    verbose_name = "Operator console"
