"""Routes of the training studio (mounted under /api/ without trailing slashes)."""

from django.urls import path

from apps.training.api import views

urlpatterns = [
    # Experiments (seed section 4).
    path(
        "training/<str:project_id>/experiments",
        views.ExperimentListView.as_view(),
        name="training-experiments",
    ),
    path(
        "training/<str:project_id>/experiments/<str:exp_id>",
        views.ExperimentDetailView.as_view(),
        name="training-experiment",
    ),
    path(
        "training/<str:project_id>/experiments/<str:exp_id>/run",
        views.ExperimentRunView.as_view(),
        name="training-experiment-run",
    ),
    path(
        "training/<str:project_id>/experiments/<str:exp_id>/runs",
        views.ExperimentRunsView.as_view(),
        name="training-experiment-runs",
    ),
    # Runs.
    path("training/<str:project_id>/runs", views.RunListView.as_view(), name="training-runs"),
    path(
        "training/<str:project_id>/runs/<str:run_id>",
        views.RunDetailView.as_view(),
        name="training-run",
    ),
    path(
        "training/<str:project_id>/runs/<str:run_id>/stop",
        views.RunStopView.as_view(),
        name="training-run-stop",
    ),
    path(
        "training/<str:project_id>/runs/<str:run_id>/resume",
        views.RunResumeView.as_view(),
        name="training-run-resume",
    ),
    path(
        "training/<str:project_id>/runs/<str:run_id>/metrics",
        views.RunMetricsView.as_view(),
        name="training-run-metrics",
    ),
    path(
        "training/<str:project_id>/runs/<str:run_id>/stream",
        views.RunStreamView.as_view(),
        name="training-run-stream",
    ),
    # Evaluations (seed section 5).
    path("evaluation/<str:project_id>", views.EvaluationListView.as_view(), name="evaluations"),
    path(
        "evaluation/<str:project_id>/<str:eval_id>",
        views.EvaluationDetailView.as_view(),
        name="evaluation",
    ),
    path(
        "evaluation/<str:project_id>/<str:eval_id>/results",
        views.EvaluationResultsView.as_view(),
        name="evaluation-results",
    ),
]
