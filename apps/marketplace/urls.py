"""The Morpheo orchestrator gateway under `/orchestrator/` (auto-included by config/urls.py).

Routes with a document uuid use one URL kwarg per collection (`problem_uuid`, ...) so that the
generic cross-tenant test (tests/test_tenancy.py) fills each with an object of the right kind;
tests/marketplace/test_tenancy.py covers the routes without kwargs.
"""

from django.urls import path, re_path

from apps.marketplace import views

PREFIX = "orchestrator/"

urlpatterns = [
    path(PREFIX + "problem", views.ProblemCollectionView.as_view(), name="orchestrator-problems"),
    path(
        PREFIX + "problem/<str:problem_uuid>",
        views.ProblemDocumentView.as_view(),
        name="orchestrator-problem",
    ),
    path(PREFIX + "algo", views.AlgoCollectionView.as_view(), name="orchestrator-algos"),
    path(
        PREFIX + "algo/<str:algo_uuid>", views.AlgoDocumentView.as_view(), name="orchestrator-algo"
    ),
    path(PREFIX + "data", views.DataCollectionView.as_view(), name="orchestrator-datas"),
    path(
        PREFIX + "data/<str:data_uuid>", views.DataDocumentView.as_view(), name="orchestrator-data"
    ),
    path(
        PREFIX + "learnuplet",
        views.LearnupletCollectionView.as_view(),
        name="orchestrator-learnuplets",
    ),
    path(
        PREFIX + "learnuplet/<str:learnuplet_uuid>",
        views.LearnupletDocumentView.as_view(),
        name="orchestrator-learnuplet",
    ),
    path(
        PREFIX + "preduplet",
        views.PredupletCollectionView.as_view(),
        name="orchestrator-preduplets",
    ),
    path(
        PREFIX + "preduplet/<str:preduplet_uuid>",
        views.PredupletDocumentView.as_view(),
        name="orchestrator-preduplet",
    ),
    path(PREFIX + "prediction", views.PredictionView.as_view(), name="orchestrator-prediction"),
    path(
        PREFIX + "worker/learnuplet/<str:learnuplet_uuid>",
        views.LearnupletWorkerView.as_view(),
        name="orchestrator-worker-learnuplet",
    ),
    path(
        PREFIX + "worker/preduplet/<str:preduplet_uuid>",
        views.PredupletWorkerView.as_view(),
        name="orchestrator-worker-preduplet",
    ),
    path(
        PREFIX + "learndone/<str:learnuplet_uuid>",
        views.LearnDoneView.as_view(),
        name="orchestrator-learndone",
    ),
    path(
        PREFIX + "preddone/<str:preduplet_uuid>",
        views.PredDoneView.as_view(),
        name="orchestrator-preddone",
    ),
    re_path(
        r"^orchestrator(?:/.*)?$", views.UnknownRouteView.as_view(), name="orchestrator-unknown"
    ),
]
