"""Clusters (Orchard's models), their checkpoints, modes and hosts."""

from __future__ import annotations

from rest_framework.response import Response

from apps.clusters import selectors as clusters_selectors
from apps.clusters import services as clusters
from apps.clusters.models import Checkpoint, Cluster
from apps.core.exceptions import NotFound
from apps.hanami import selectors
from apps.hanami.answers import host_uuid, owned_answer, owned_rows, table
from apps.hanami.serializers import (
    CheckpointLoadInput,
    CheckpointSaveInput,
    ClusterCreateInput,
    HostSwitchInput,
    ModeInput,
    UuidQuery,
    validated,
)
from apps.hanami.views.base import HanamiGlobalView, HanamiView


class ClusterBase(HanamiView):
    queryset = Cluster.objects.all()

    def cluster(self, cluster_id: str, *, edit: bool = False) -> Cluster:
        """A cluster of the token's project that the caller sees (and may change, with `edit`)."""
        return clusters_selectors.cluster_get(
            access=self.access, cluster_id=cluster_id, for_edit=edit
        )


class ClusterView(ClusterBase):
    """POST {name, template (base64)}; GET/DELETE [uuid]."""

    def post(self, request):
        data = validated(ClusterCreateInput, request.data)
        self.access.require_write()
        cluster = clusters.cluster_create(
            project=self.access.project,
            actor=request.user,
            name=data["name"],
            template_text=data["template"],
        )
        return Response(owned_answer(cluster))

    def get(self, request):
        return Response(
            owned_answer(self.cluster(validated(UuidQuery, request.query_params)["uuid"]))
        )

    def delete(self, request):
        cluster_id = validated(UuidQuery, request.query_params)["uuid"]
        clusters.cluster_delete(cluster=self.cluster(cluster_id, edit=True))
        return Response({})


class ClusterListView(ClusterBase):
    def get(self, request):
        return Response(owned_rows(selectors.cluster_rows(access=self.access)))


class ClusterSaveView(ClusterBase):
    """POST {name, cluster_uuid} -> the new checkpoint {uuid, name}."""

    def post(self, request):
        data = validated(CheckpointSaveInput, request.data, access=self.access)
        checkpoint = clusters.checkpoint_save(
            cluster=data["cluster_uuid"], actor=request.user, name=data["name"]
        )
        return Response({"uuid": str(checkpoint.pk), "name": checkpoint.name})


class ClusterLoadView(ClusterBase):
    """POST {checkpoint_uuid, cluster_uuid}: restore a checkpoint into a cluster."""

    def post(self, request):
        data = validated(CheckpointLoadInput, request.data, access=self.access)
        cluster = data["cluster_uuid"]
        clusters.checkpoint_restore(checkpoint=data["checkpoint_uuid"], cluster=cluster)
        return Response({"uuid": str(cluster.pk)})


class ClusterModeView(ClusterBase):
    """PUT {new_state: DIRECT|TASK, uuid}; DIRECT needs an empty task queue (409)."""

    def put(self, request):
        data = validated(ModeInput, request.data, access=self.access)
        cluster = clusters.cluster_set_mode(cluster=data["uuid"], mode=data["new_state"])
        return Response(owned_answer(cluster))


class ClusterHostView(ClusterBase):
    """PUT {cluster_uuid, host_uuid}: the cluster's next tasks run on that host (named by its
    Hanami uuid or by its Orchard name, `cpu` or `gpu-0`)."""

    def put(self, request):
        data = validated(HostSwitchInput, request.data, access=self.access)
        cluster, wanted = data["cluster_uuid"], data["host_uuid"]
        host_id = next(
            (h.pk for h in clusters.host_refresh() if wanted in (h.pk, host_uuid(h.pk))), None
        )
        if host_id is None:
            raise NotFound("Host not found.")
        cluster = clusters.cluster_switch_host(cluster=cluster, host_id=host_id)
        return Response(owned_answer(cluster))


class CheckpointView(HanamiView):
    queryset = Checkpoint.objects.all()

    def delete(self, request):
        checkpoint = clusters_selectors.checkpoint_get(
            access=self.access,
            checkpoint_id=validated(UuidQuery, request.query_params)["uuid"],
            for_edit=True,
        )
        clusters.checkpoint_delete(checkpoint=checkpoint)
        return Response({})


class CheckpointListView(CheckpointView):
    def get(self, request):
        return Response(owned_rows(selectors.checkpoint_rows(access=self.access)))


class HostListView(HanamiGlobalView):
    tenancy_exempt_reason = "hosts are the machine's devices, shared by every project"

    def get(self, request):
        rows = [(host_uuid(h.pk), h.kind) for h in clusters.host_refresh()]
        return Response(table(["uuid", "type"], rows))
