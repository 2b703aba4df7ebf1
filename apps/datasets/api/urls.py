"""Routes of the datasets API (mounted under /api/ without trailing slashes)."""

from django.urls import path

from apps.datasets.api import views

urlpatterns = [
    # Studio (seed section 2): the project's image dataset.
    path("datasets/<str:project_id>", views.StudioDatasetView.as_view(), name="studio-dataset"),
    path(
        "datasets/<str:project_id>/import/local",
        views.StudioImportLocalView.as_view(),
        name="studio-dataset-import-local",
    ),
    path(
        "datasets/<str:project_id>/import/upload",
        views.StudioImportUploadView.as_view(),
        name="studio-dataset-import-upload",
    ),
    path("datasets/<str:project_id>/images", views.ImageListView.as_view(), name="studio-images"),
    # `filename` holds a slash (class/name.png): the info route must come before the file route.
    path(
        "datasets/<str:project_id>/images/<path:filename>/info",
        views.ImageInfoView.as_view(),
        name="studio-image-info",
    ),
    path(
        "datasets/<str:project_id>/images/<path:filename>",
        views.ImageFileView.as_view(),
        name="studio-image",
    ),
    path(
        "datasets/<str:project_id>/thumbnails/<path:filename>",
        views.ThumbnailView.as_view(),
        name="studio-thumbnail",
    ),
    # Splits (seed section 3); preview routes before /{split_index}.
    path("splits/<str:project_id>", views.SplitListView.as_view(), name="studio-splits"),
    path(
        "splits/<str:project_id>/preview",
        views.SplitPreviewView.as_view(),
        name="studio-split-preview",
    ),
    path(
        "splits/<str:project_id>/<int:split_index>",
        views.SplitDetailView.as_view(),
        name="studio-split",
    ),
    # Datasets of every kind.
    path(
        "projects/<str:project_id>/datasets", views.DatasetListView.as_view(), name="dataset-list"
    ),
    path(
        "projects/<str:project_id>/datasets/mnist",
        views.MnistImportView.as_view(),
        name="dataset-import-mnist",
    ),
    path(
        "projects/<str:project_id>/datasets/csv",
        views.CsvImportView.as_view(),
        name="dataset-import-csv",
    ),
    path(
        "projects/<str:project_id>/datasets/volume",
        views.VolumeImportView.as_view(),
        name="dataset-import-volume",
    ),
    path(
        "projects/<str:project_id>/datasets/from-uploads",
        views.DatasetFromUploadsView.as_view(),
        name="dataset-from-uploads",
    ),
    path(
        "projects/<str:project_id>/datasets/<str:dataset_id>",
        views.DatasetDetailView.as_view(),
        name="dataset-detail",
    ),
    path("projects/<str:project_id>/uploads", views.UploadCreateView.as_view(), name="upload-list"),
    path(
        "projects/<str:project_id>/uploads/<str:upload_id>",
        views.UploadDetailView.as_view(),
        name="upload-detail",
    ),
]
