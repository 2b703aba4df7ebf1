"""Routes of the labelprop half: napari-labelprop's protocol at the root (`gateway_urlpatterns`,
mounted by apps/mlbackend/urls.py). No main-API routes."""

from django.urls import path

from apps.mlbackend.labelprop import views

gateway_urlpatterns = [
    path("check", views.CheckView.as_view(), name="labelprop-check"),
    path("list_ckpts", views.ListCheckpointsView.as_view(), name="labelprop-list-ckpts"),
    path("list_hash", views.ListHashView.as_view(), name="labelprop-list-hash"),
    path("get_ckpt_dir", views.GetCheckpointDirView.as_view(), name="labelprop-get-ckpt-dir"),
    path("set_ckpt_dir", views.SetCheckpointDirView.as_view(), name="labelprop-set-ckpt-dir"),
    path("send_ckpt", views.SendCheckpointView.as_view(), name="labelprop-send-ckpt"),
    path("inference", views.InferenceView.as_view(), name="labelprop-inference"),
    path("training", views.TrainingView.as_view(), name="labelprop-training"),
    path("get_session_list", views.SessionListView.as_view(), name="labelprop-session-list"),
    path(
        "download_inference",
        views.DownloadInferenceView.as_view(),
        name="labelprop-download-inference",
    ),
    path("get_session_info", views.SessionInfoView.as_view(), name="labelprop-session-info"),
]
