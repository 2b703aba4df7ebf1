from django.apps import AppConfig


class MlbackendConfig(AppConfig):
    name = "apps.mlbackend"
    label = "mlbackend"
    verbose_name = "ML backends"

    def ready(self) -> None:
        # Label Studio half: the `labelstudio_train` task kind.
        from apps.mlbackend.labelstudio.handlers import register_kinds as register_labelstudio

        register_labelstudio()

        # labelprop half: the `labelprop_propagate` and `labelprop_train` task kinds.
        from apps.mlbackend.labelprop.handlers import register_kinds as register_labelprop

        register_labelprop()
