from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "apps.marketplace"
    label = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        # The built-in compute: `learnuplet` and `preduplet` jobs on the job engine.
        from apps.marketplace.compute import register_kinds

        register_kinds()
