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
    path(
        PREFIX + "dataset/progress",
        views.DatasetProgressView.as_view(),
        name="hanami-dataset-progress",
    ),
    path(PREFIX + "dataset", views.DatasetView.as_view(), name="hanami-dataset"),
    path(PREFIX + "dataset/all", views.DatasetListView.as_view(), name="hanami-dataset-all"),
]
