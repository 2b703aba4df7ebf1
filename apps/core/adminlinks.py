"""Links from the stock admin pages to the operator console (apps.console), which the admin
pages of every app show in a "console" column."""

from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html


def console_link(name: str, pk) -> str:
    """A link to the object's console page ("-" where the console site is not installed)."""
    try:
        return format_html('<a href="{}">open</a>', reverse(name, args=[pk]))
    except NoReverseMatch:
        return "-"
