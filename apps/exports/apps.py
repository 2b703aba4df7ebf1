from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "apps.exports"
    label = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        from apps.exports.handlers import register_export_kind

        register_export_kind()
