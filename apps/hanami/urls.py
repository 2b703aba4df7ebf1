"""The Hanami-compatible gateway under `/control/v1/` (auto-included by config/urls.py).

Routes take no URL kwargs (the SDK sends ids in query strings and bodies), so the generic
cross-tenant test does not reach them: tests/hanami/test_tenancy.py covers every route instead.
"""

from django.urls import path, re_path

from apps.hanami.views import accounts, clusters, datasets, logs, tasks
from apps.hanami.views.base import UnknownRouteView

PREFIX = "control/v1/"

urlpatterns = [
    path(PREFIX + "token", accounts.TokenView.as_view(), name="hanami-token"),
    path(PREFIX + "user", accounts.UserView.as_view(), name="hanami-user"),
    path(PREFIX + "user/all", accounts.UserListView.as_view(), name="hanami-user-all"),
    path(PREFIX + "user/project", accounts.UserProjectView.as_view(), name="hanami-user-project"),
    path(PREFIX + "project", accounts.ProjectView.as_view(), name="hanami-project"),
    path(PREFIX + "project/all", accounts.ProjectListView.as_view(), name="hanami-project-all"),
    path(
        PREFIX + "mnist/dataset", datasets.MnistDatasetView.as_view(), name="hanami-mnist-dataset"
    ),
    path(PREFIX + "csv/dataset", datasets.CsvDatasetView.as_view(), name="hanami-csv-dataset"),
    # The same two endpoints under the paths later SDK releases use (dataset.upload_mnist_files /
    # upload_csv_files POST and PUT `dataset/upload/mnist` and `dataset/upload/csv`).
    path(
        PREFIX + "dataset/upload/mnist",
        datasets.MnistDatasetView.as_view(),
        name="hanami-dataset-upload-mnist",
    ),
    path(
        PREFIX + "dataset/upload/csv",
        datasets.CsvDatasetView.as_view(),
        name="hanami-dataset-upload-csv",
    ),
    path(
        PREFIX + "dataset/progress",
        datasets.DatasetProgressView.as_view(),
        name="hanami-dataset-progress",
    ),
    path(PREFIX + "dataset", datasets.DatasetView.as_view(), name="hanami-dataset"),
    path(PREFIX + "dataset/all", datasets.DatasetListView.as_view(), name="hanami-dataset-all"),
    path(PREFIX + "dataset/check", tasks.DatasetCheckView.as_view(), name="hanami-dataset-check"),
    path(PREFIX + "cluster", clusters.ClusterView.as_view(), name="hanami-cluster"),
    path(PREFIX + "cluster/all", clusters.ClusterListView.as_view(), name="hanami-cluster-all"),
    path(PREFIX + "cluster/save", clusters.ClusterSaveView.as_view(), name="hanami-cluster-save"),
    path(PREFIX + "cluster/load", clusters.ClusterLoadView.as_view(), name="hanami-cluster-load"),
    path(
        PREFIX + "cluster/set_mode", clusters.ClusterModeView.as_view(), name="hanami-cluster-mode"
    ),
    path(
        PREFIX + "cluster/switch_host",
        clusters.ClusterHostView.as_view(),
        name="hanami-cluster-switch-host",
    ),
    path(PREFIX + "task", tasks.TaskView.as_view(), name="hanami-task"),
    path(PREFIX + "task/all", tasks.TaskListView.as_view(), name="hanami-task-all"),
    path(PREFIX + "request_result", tasks.RequestResultView.as_view(), name="hanami-result"),
    path(
        PREFIX + "request_result/all",
        tasks.RequestResultListView.as_view(),
        name="hanami-result-all",
    ),
    path(PREFIX + "checkpoint", clusters.CheckpointView.as_view(), name="hanami-checkpoint"),
    path(
        PREFIX + "checkpoint/all",
        clusters.CheckpointListView.as_view(),
        name="hanami-checkpoint-all",
    ),
    path(PREFIX + "host/all", clusters.HostListView.as_view(), name="hanami-host-all"),
    path(PREFIX + "audit_log", logs.AuditLogView.as_view(), name="hanami-audit-log"),
    path(PREFIX + "error_log", logs.ErrorLogView.as_view(), name="hanami-error-log"),
    # After every route: an unknown one answers 404 as JSON, like the rest of the gateway.
    re_path(r"^control(?:/.*)?$", UnknownRouteView.as_view(), name="hanami-unknown"),
]
