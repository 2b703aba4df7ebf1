from django.apps import AppConfig


class HanamiConfig(AppConfig):
    name = "apps.hanami"
    label = "hanami"

    def ready(self) -> None:
        # Hanami's error shape for errors answered outside its views.
        from apps.core.errors import register_error_answer
        from apps.hanami.http import error_answer

        register_error_answer("/control/", error_answer)
