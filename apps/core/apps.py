from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Orchard core"

    def ready(self) -> None:
        # The data directory (SQLite, media, the install secret) and the static root exist
        # before anything uses them; settings only name them.
        from pathlib import Path

        from django.conf import settings

        for folder in (settings.DATA_DIR, settings.MEDIA_ROOT, settings.STATIC_ROOT):
            Path(folder).mkdir(parents=True, exist_ok=True)
