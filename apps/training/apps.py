from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "apps.training"
    label = "training"
    verbose_name = "Training studio"

    def ready(self) -> None:
        from apps.training import schema  # noqa: F401 - registers the OpenAPI auth extension
        from apps.training.handlers import register_kinds

        register_kinds()
