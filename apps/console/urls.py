"""The console's URLs, part of the admin site's (`/admin/console/...`, names `admin:console-*`).
Each view is wrapped in `site.admin_view`: a login is required and `has_permission` applies."""

from functools import partial, update_wrapper

from django.urls import path

from apps.console import dataset_views, views

_ROUTES = [
    ("token", views.console_token, "console-token"),
    ("runs/<str:run_id>/", views.run_detail, "console-run"),
    ("runs/<str:run_id>/<str:metric>.svg", views.run_chart, "console-run-chart"),
    ("experiments/<str:exp_id>/compare/", views.compare, "console-compare"),
    (
        "experiments/<str:exp_id>/compare/<str:metric>.svg",
        views.compare_chart,
        "console-compare-chart",
    ),
    ("evaluations/<str:eval_id>/", views.evaluation_detail, "console-evaluation"),
    ("evaluations/<str:eval_id>/confusion.svg", views.evaluation_confusion, "console-confusion"),
    ("datasets/<str:dataset_id>/", dataset_views.dataset_detail, "console-dataset"),
    (
        "datasets/<str:dataset_id>/distribution.svg",
        dataset_views.dataset_distribution,
        "console-dataset-distribution",
    ),
    (
        "datasets/<str:dataset_id>/thumbs/<str:item_id>",
        dataset_views.dataset_thumb,
        "console-dataset-thumb",
    ),
    (
        "datasets/<str:dataset_id>/samples/<int:index>.png",
        dataset_views.dataset_sample,
        "console-dataset-sample",
    ),
    (
        "datasets/<str:dataset_id>/volumes/<int:volume>/slices/<int:index>.png",
        dataset_views.dataset_slice,
        "console-dataset-slice",
    ),
    ("tasks/<str:task_id>/", views.task_detail, "console-task"),
    ("tasks/<str:task_id>/abort", views.task_abort, "console-task-abort"),
    ("tasks/<str:task_id>/retry", views.task_retry, "console-task-retry"),
    ("backends/<str:backend_id>/", views.backend_detail, "console-backend"),
]


def console_urls(site) -> list:
    def wrap(view):
        bound = update_wrapper(partial(view, site=site), view)
        return site.admin_view(bound)

    return [path(f"console/{route}", wrap(view), name=name) for route, view, name in _ROUTES]
