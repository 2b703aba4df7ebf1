from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "apps.clusters"
    label = "clusters"

    def ready(self) -> None:
        from apps.clusters.handlers import register_builtin_kinds

        register_builtin_kinds()
