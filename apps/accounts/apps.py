from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts and projects"

    def ready(self) -> None:
        from apps.accounts import schema  # noqa: F401 - registers the OpenAPI auth extension
        from apps.accounts.tenancy import resolve_access
        from apps.core.tenancy import register_access_resolver

        register_access_resolver(resolve_access)
