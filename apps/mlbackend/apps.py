from django.apps import AppConfig


class MlbackendConfig(AppConfig):
    name = "apps.mlbackend"
    label = "mlbackend"
