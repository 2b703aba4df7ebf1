from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "apps.marketplace"
    label = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        # The orchestrator's error shape for oversized bodies, refused before a view runs.
        from apps.core.middleware import register_too_large_answer
        from apps.marketplace.http import too_large_answer

        register_too_large_answer("/orchestrator", too_large_answer)

        # The built-in compute: `learnuplet` and `preduplet` jobs on the job engine.
        from apps.marketplace.compute import register_kinds
        from apps.marketplace.push import register_kind

        register_kinds()
        # Compute push: runnable uplets POSTed to a project's compute API (`compute_push` jobs).
        register_kind()
