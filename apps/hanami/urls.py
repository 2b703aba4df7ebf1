"""The Hanami-compatible gateway under `/control/v1/` (auto-included by config/urls.py).

Routes take no URL kwargs (the SDK sends ids in query strings and bodies), so the generic
cross-tenant test does not reach them: tests/hanami/test_tenancy.py covers every route instead.
"""

from django.urls import path

from apps.hanami import views

PREFIX = "control/v1/"

urlpatterns = [
    path(PREFIX + "token", views.TokenView.as_view(), name="hanami-token"),
    path(PREFIX + "user", views.UserView.as_view(), name="hanami-user"),
    path(PREFIX + "user/all", views.UserListView.as_view(), name="hanami-user-all"),
    path(PREFIX + "user/project", views.UserProjectView.as_view(), name="hanami-user-project"),
    path(PREFIX + "project", views.ProjectView.as_view(), name="hanami-project"),
    path(PREFIX + "project/all", views.ProjectListView.as_view(), name="hanami-project-all"),
    path(PREFIX + "mnist/dataset", views.MnistDatasetView.as_view(), name="hanami-mnist-dataset"),
    path(PREFIX + "csv/dataset", views.CsvDatasetView.as_view(), name="hanami-csv-dataset"),
    # The same two endpoints under the paths later SDK releases use (dataset.upload_mnist_files /
    # upload_csv_files POST and PUT `dataset/upload/mnist` and `dataset/upload/csv`).
    path(
        PREFIX + "dataset/upload/mnist",
        views.MnistDatasetView.as_view(),
        name="hanami-dataset-upload-mnist",
    ),
    path(
        PREFIX + "dataset/upload/csv",
        views.CsvDatasetView.as_view(),
        name="hanami-dataset-upload-csv",
    ),
    path(
        PREFIX + "dataset/progress",
        views.DatasetProgressView.as_view(),
        name="hanami-dataset-progress",
    ),
    path(PREFIX + "dataset", views.DatasetView.as_view(), name="hanami-dataset"),
    path(PREFIX + "dataset/all", views.DatasetListView.as_view(), name="hanami-dataset-all"),
    path(PREFIX + "dataset/check", views.DatasetCheckView.as_view(), name="hanami-dataset-check"),
    path(PREFIX + "cluster", views.ClusterView.as_view(), name="hanami-cluster"),
    path(PREFIX + "cluster/all", views.ClusterListView.as_view(), name="hanami-cluster-all"),
    path(PREFIX + "cluster/save", views.ClusterSaveView.as_view(), name="hanami-cluster-save"),
    path(PREFIX + "cluster/load", views.ClusterLoadView.as_view(), name="hanami-cluster-load"),
    path(PREFIX + "cluster/set_mode", views.ClusterModeView.as_view(), name="hanami-cluster-mode"),
    path(
        PREFIX + "cluster/switch_host",
        views.ClusterHostView.as_view(),
        name="hanami-cluster-switch-host",
    ),
    path(PREFIX + "task", views.TaskView.as_view(), name="hanami-task"),
    path(PREFIX + "task/all", views.TaskListView.as_view(), name="hanami-task-all"),
    path(PREFIX + "request_result", views.RequestResultView.as_view(), name="hanami-result"),
    path(
        PREFIX + "request_result/all",
        views.RequestResultListView.as_view(),
        name="hanami-result-all",
    ),
    path(PREFIX + "checkpoint", views.CheckpointView.as_view(), name="hanami-checkpoint"),
    path(
        PREFIX + "checkpoint/all",
        views.CheckpointListView.as_view(),
        name="hanami-checkpoint-all",
    ),
    path(PREFIX + "host/all", views.HostListView.as_view(), name="hanami-host-all"),
    path(PREFIX + "audit_log", views.AuditLogView.as_view(), name="hanami-audit-log"),
    path(PREFIX + "error_log", views.ErrorLogView.as_view(), name="hanami-error-log"),
]
