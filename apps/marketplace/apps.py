from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "apps.marketplace"
    label = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        # The orchestrator's error shape for errors answered outside its views.
        from apps.core.errors import register_error_answer
        from apps.marketplace.http import error_answer

        register_error_answer("/orchestrator", error_answer)

        # The built-in compute: `learnuplet` and `preduplet` jobs on the job engine.
        from apps.marketplace.compute import register_kinds
        from apps.marketplace.push import register_kind

        register_kinds()
        # Compute push: runnable uplets POSTed to a project's compute API (`compute_push` jobs).
        register_kind()
        # Uplets that waited for a dataset still uploading when it was registered as data.
        from apps.datasets.signals import dataset_ready
        from apps.marketplace.dispatch import on_dataset_ready

        dataset_ready.connect(on_dataset_ready, dispatch_uid="marketplace-dataset-ready")
