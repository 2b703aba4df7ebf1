from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "apps.marketplace"
    label = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        # The built-in compute: `learnuplet` and `preduplet` jobs on the job engine.
        from apps.marketplace.compute import register_kinds
        from apps.marketplace.push import register_kind

        register_kinds()
        # Compute push: runnable uplets POSTed to a project's compute API (`compute_push` jobs).
        register_kind()
