from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "apps.clusters"
    label = "clusters"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from apps.clusters.handlers import register_builtin_kinds
        from apps.clusters.models import Cluster
        from apps.clusters.services import cluster_tasks_delete
        from apps.tasks.signals import worker_starting

        register_builtin_kinds()
        post_delete.connect(cluster_tasks_delete, sender=Cluster, dispatch_uid="clusters.tasks")

        # A starting worker refreshes the Host rows from its machine's devices.
        worker_starting.connect(_refresh_hosts, dispatch_uid="clusters.host_refresh")


def _refresh_hosts(sender, **kwargs) -> None:
    """The Host rows follow the devices of the machine whose worker starts."""
    from apps.clusters.services import host_refresh

    host_refresh()
