from django.apps import AppConfig


class HanamiConfig(AppConfig):
    name = "apps.hanami"
    label = "hanami"
