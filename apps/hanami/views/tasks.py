"""Tasks, their request results, and checking a result against a dataset."""

from __future__ import annotations

from rest_framework.response import Response

from apps.clusters import services as clusters
from apps.clusters.models import RequestResult
from apps.hanami import selectors
from apps.hanami.answers import owned_answer, owned_rows, task_answer, task_rows
from apps.hanami.serializers import (
    ClusterQuery,
    ResultCheckInput,
    TaskCreateInput,
    TaskQuery,
    UuidQuery,
    validated,
)
from apps.hanami.views.base import HanamiView
from apps.tasks import services as tasks
from apps.tasks.models import Task


class _TaskBase(HanamiView):
    queryset = Task.objects.all()

    def task(self, request, *, edit: bool = False) -> Task:
        """The task of `?uuid=` (of the cluster of `?cluster_uuid=` when given), one the caller
        may change with `edit`."""
        query = validated(TaskQuery, request.query_params)
        return selectors.task_get(
            access=self.access,
            task_id=query["uuid"],
            cluster_id=query.get("cluster_uuid"),
            for_edit=edit,
        )


class TaskView(_TaskBase):
    """POST {name, type, cluster_uuid, dataset_uuid}; GET/DELETE [uuid, cluster_uuid]."""

    def post(self, request):
        data = validated(TaskCreateInput, request.data, access=self.access)
        cluster, dataset = data["cluster_uuid"], data["dataset_uuid"]
        clusters.require_task_rights(access=self.access, kind=data["type"], cluster=cluster)
        task = clusters.cluster_task_create(
            project=self.access.project,
            actor=request.user,
            kind=data["type"],
            name=data["name"],
            cluster=cluster,
            dataset=dataset,
        )
        return Response({"uuid": str(task.pk), "name": task.name})

    def get(self, request):
        return Response(task_answer(self.task(request)))

    def delete(self, request):
        task = self.task(request, edit=True)
        tasks.task_delete(task=task)
        return Response({})


class TaskListView(_TaskBase):
    def get(self, request):
        cluster = validated(ClusterQuery, request.query_params, access=self.access)["cluster_uuid"]
        return Response(task_rows(selectors.cluster_task_list(access=self.access, cluster=cluster)))


class _ResultBase(HanamiView):
    queryset = RequestResult.objects.all()

    def result(self, result_id: str, *, edit: bool = False) -> RequestResult:
        return selectors.request_result_get(access=self.access, result_id=result_id, for_edit=edit)


class RequestResultView(_ResultBase):
    def get(self, request):
        result = self.result(validated(UuidQuery, request.query_params)["uuid"])
        classes = clusters.request_result_classes(result)
        return Response({**owned_answer(result), "data": classes.tolist()})

    def delete(self, request):
        result = self.result(validated(UuidQuery, request.query_params)["uuid"], edit=True)
        clusters.request_result_delete(result=result)
        return Response({})


class RequestResultListView(_ResultBase):
    def get(self, request):
        return Response(owned_rows(selectors.request_result_list(access=self.access)))


class DatasetCheckView(_ResultBase):
    """POST {result_uuid, dataset_uuid} -> {accuracy} in percent.

    The SDK has sent this check both ways: `request_result.check_against_dataset` POSTs a body,
    the older `dataset.check_mnist_dataset` GETs with `?dataset_uuid=..&result_uuid=..`.
    """

    def post(self, request):
        return self._check(request.data)

    def get(self, request):
        return self._check(request.query_params)

    def _check(self, data) -> Response:
        data = validated(ResultCheckInput, data, access=self.access)
        result, dataset = data["result_uuid"], data["dataset_uuid"]
        return Response({"accuracy": clusters.request_result_check(result=result, dataset=dataset)})
