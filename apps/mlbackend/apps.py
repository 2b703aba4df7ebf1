from django.apps import AppConfig


class MlbackendConfig(AppConfig):
    name = "apps.mlbackend"
    label = "mlbackend"
    verbose_name = "ML backends"

    def ready(self) -> None:
        # Label Studio's error shape for oversized bodies, refused before a view runs.
        from apps.core.middleware import register_too_large_answer
        from apps.mlbackend.labelstudio.http import too_large_answer

        register_too_large_answer("/ml/", too_large_answer)

        # Label Studio half: the `labelstudio_train` task kind.
        from apps.mlbackend.labelstudio.handlers import register_kinds as register_labelstudio

        register_labelstudio()

        # labelprop half: the `labelprop_propagate` and `labelprop_train` task kinds.
        from apps.mlbackend.labelprop.handlers import register_kinds as register_labelprop

        register_labelprop()
