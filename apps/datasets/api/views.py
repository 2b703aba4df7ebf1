"""Datasets of the main API: the studio routes (`/api/datasets/{project_id}`, one image dataset
per project, and `/api/splits/{project_id}`) and the generic routes for datasets of every kind
under `/api/projects/{project_id}/datasets`, with chunked upload sessions."""

from __future__ import annotations

from django.db.models import Max, Min
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.response import Response

from apps.core.api.parsers import JSONParser  # refuses NUL strings and too deep bodies
from apps.core.api.views import ProjectScopedAPIView
from apps.core.exceptions import Conflict, NotFound, ValidationFailed
from apps.datasets import images, imports, mnist, selectors, services
from apps.datasets import uploads as dataset_uploads
from apps.datasets.api import serializers as s
from apps.datasets.api.filters import DatasetFilter
from apps.datasets.exceptions import DatasetNotImported, SplitNotFound
from apps.datasets.models import Dataset, DatasetItem, Split, UploadSession

_UUID_PARAMS = {
    name: OpenApiParameter(name, OpenApiTypes.UUID, OpenApiParameter.PATH)
    for name in ("dataset_id", "upload_id")
}
_FILENAME = OpenApiParameter(
    "filename", OpenApiTypes.STR, OpenApiParameter.PATH, description="class/image.png"
)
_SPLIT_INDEX = OpenApiParameter("split_index", OpenApiTypes.INT, OpenApiParameter.PATH)


class OctetStreamParser(BaseParser):
    """Accepts raw `application/octet-stream` bodies; views stream `request.stream` themselves."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


# The answer (403) to a change of a dataset, or of an upload session, the caller may not change.
DATASET_DENIED = "Only the owner or a project admin may change this dataset."
UPLOAD_DENIED = "Only the uploader or a project admin may use this upload."


def _studio_dataset_to_change(access) -> Dataset | None:
    """The project's studio dataset (None before the first import), if the caller may change it."""
    return selectors.studio_dataset(access=access, for_edit=True, denied=DATASET_DENIED)


def _validated(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# -- generic datasets -------------------------------------------------------------------------


class DatasetListView(ProjectScopedAPIView):
    """Datasets of the project (every kind), newest first."""

    queryset = Dataset.objects.all()
    serializer_class = s.DatasetSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "kind",
                OpenApiTypes.STR,
                required=False,
                description="Only datasets of this kind: " + ", ".join(Dataset.Kind.values),
            )
        ],
        responses=s.DatasetSerializer(many=True),
    )
    def get(self, request, project_id):
        qs = DatasetFilter.apply(request, selectors.dataset_list(access=self.access))
        qs = qs.select_related("owner")
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(s.DatasetSerializer(page, many=True).data)


class MnistImportView(ProjectScopedAPIView):
    """Import an MNIST pair of idx files (multipart `images`, `labels`, `name`)."""

    queryset = Dataset.objects.all()
    parser_classes = [MultiPartParser, FormParser]
    accepts_uploads = True  # bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)

    @extend_schema(request=s.MnistImportSerializer, responses={201: s.DatasetSerializer})
    def post(self, request, project_id):
        with mnist.streamed_upload(request, self.access.project):  # parsed as the body arrives
            data = _validated(s.MnistImportSerializer, request.data)
            dataset = imports.dataset_import_mnist(
                project=self.access.project,
                actor=request.user,
                name=data["name"],
                images=data["images"],
                labels=data["labels"],
            )
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class CsvImportView(ProjectScopedAPIView):
    """Import a CSV table (multipart `file`, `name`, `label_column`, `input_columns`)."""

    queryset = Dataset.objects.all()
    parser_classes = [MultiPartParser, FormParser]
    accepts_uploads = True  # bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)

    @extend_schema(request=s.CsvImportSerializer, responses={201: s.DatasetSerializer})
    def post(self, request, project_id):
        data = _validated(s.CsvImportSerializer, request.data)
        dataset = imports.dataset_import_csv(
            project=self.access.project,
            actor=request.user,
            name=data["name"],
            file=data["file"],
            label_column=data["label_column"] or None,
            input_columns=data["input_columns"] or None,
        )
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class VolumeImportView(ProjectScopedAPIView):
    """Import a 3D volume with optional labels (multipart `file`, `labels`, `name`)."""

    queryset = Dataset.objects.all()
    parser_classes = [MultiPartParser, FormParser]
    accepts_uploads = True  # bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)

    @extend_schema(request=s.VolumeImportSerializer, responses={201: s.DatasetSerializer})
    def post(self, request, project_id):
        data = _validated(s.VolumeImportSerializer, request.data)
        dataset = imports.dataset_import_volume(
            project=self.access.project,
            actor=request.user,
            name=data["name"],
            file=data["file"],
            labels=data.get("labels"),
        )
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetFromUploadsView(ProjectScopedAPIView):
    """Turn completed upload sessions into a dataset (parsed and validated per kind)."""

    queryset = Dataset.objects.all()
    parser_classes = [JSONParser]

    @extend_schema(request=s.FromUploadsSerializer, responses={201: s.DatasetSerializer})
    def post(self, request, project_id):
        data = _validated(s.FromUploadsSerializer, request.data)
        # Every upload not found answers 404 before any the caller may not use answers 403.
        for upload_id in data["uploads"].values():
            UploadSession.objects.get_visible(self.access, pk=upload_id)
        uploads = {
            role: UploadSession.objects.get_visible(
                self.access, for_edit=True, denied=UPLOAD_DENIED, pk=upload_id
            )
            for role, upload_id in data["uploads"].items()
        }
        options = {k: data[k] for k in ("label_column", "input_columns") if data.get(k)}
        dataset = dataset_uploads.dataset_create_pending(
            project=self.access.project,
            actor=request.user,
            name=data["name"],
            kind=data["kind"],
            uploads=uploads,
            options=options,
            origin=dataset_uploads.FROM_UPLOADS,
        )
        try:
            dataset = dataset_uploads.dataset_finalize_upload(dataset=dataset)
        except Exception:
            # One call on this route: a failed parse (or a refused limit) leaves nothing behind
            # (Hanami keeps it); the uploads stay for another attempt.
            services.dataset_discard(dataset=dataset)
            raise
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[_UUID_PARAMS["dataset_id"]])
class DatasetDetailView(ProjectScopedAPIView):
    """One dataset: read it or delete it with its files."""

    queryset = Dataset.objects.all()
    serializer_class = s.DatasetSerializer

    def get(self, request, project_id, dataset_id):
        dataset = selectors.dataset_get(access=self.access, dataset_id=dataset_id)
        return Response(s.DatasetSerializer(dataset).data)

    @extend_schema(responses={204: None})
    def delete(self, request, project_id, dataset_id):
        dataset = selectors.dataset_get(
            access=self.access, dataset_id=dataset_id, for_edit=True, denied=DATASET_DENIED
        )
        services.dataset_delete(dataset=dataset)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- upload sessions --------------------------------------------------------------------------


class UploadCreateView(ProjectScopedAPIView):
    """Open a chunked upload of a declared size."""

    queryset = UploadSession.objects.all()
    parser_classes = [JSONParser]

    @extend_schema(request=s.UploadCreateSerializer, responses={201: s.UploadSerializer})
    def post(self, request, project_id):
        data = _validated(s.UploadCreateSerializer, request.data)
        session = dataset_uploads.upload_session_create(
            project=self.access.project,
            actor=request.user,
            size=data["size"],
            filename=data["filename"],
        )
        return Response(s.UploadSerializer(session).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[_UUID_PARAMS["upload_id"]])
class UploadDetailView(ProjectScopedAPIView):
    """Progress of an upload (GET), one chunk written at `?position=N` (PUT, raw body), or the
    upload and its file deleted (DELETE; it then no longer counts in UPLOAD_SESSIONS_MAX_OPEN)."""

    queryset = UploadSession.objects.all()
    parser_classes = [OctetStreamParser]
    accepts_uploads = True  # bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)
    serializer_class = s.UploadSerializer

    def get(self, request, project_id, upload_id):
        session = UploadSession.objects.get_visible(self.access, pk=upload_id)
        return Response(s.UploadSerializer(session).data)

    @extend_schema(
        parameters=[OpenApiParameter("position", OpenApiTypes.INT, required=True)],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses=s.UploadSerializer,
    )
    def put(self, request, project_id, upload_id):
        session = UploadSession.objects.get_visible(
            self.access, for_edit=True, denied=DATASET_DENIED, pk=upload_id
        )
        try:
            position = int(request.query_params.get("position", ""))
        except ValueError:
            raise ValidationFailed.for_field("position", "must be a non-negative integer.")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        session = dataset_uploads.upload_session_write_stream(
            session=session, position=position, stream=request.stream, length=length
        )
        return Response(s.UploadSerializer(session).data)

    @extend_schema(responses={204: None})
    def delete(self, request, project_id, upload_id):
        session = UploadSession.objects.get_visible(
            self.access, for_edit=True, denied=DATASET_DENIED, pk=upload_id
        )
        dataset_uploads.upload_session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- studio: the project's image dataset --------------------------------------------------------


def _plan_info(access, dataset: Dataset | None, source_format: str | None = None) -> dict:
    """The plan's dataset.json view (without its `images`: see /images), then Orchard's stats
    (`classes` of the plan are names; Orchard's per-class counts are `class_counts`)."""
    stats = selectors.dataset_stats(dataset)
    stats["class_counts"] = stats.pop("classes")
    info = {
        "version": "1.0",
        "id": str(dataset.pk) if dataset else None,
        "task": access.project.task,
        "source_format": None,
        "source_path": None,
        "imported_at": None,
        "classes": list(dataset.class_names) if dataset else [],
        "split_names": stats["split_names"],
        "image_stats": None,
    }
    if dataset is not None:
        meta = dataset.metadata or {}
        agg = dataset.items.aggregate(
            min_width=Min("width"),
            max_width=Max("width"),
            min_height=Min("height"),
            max_height=Max("height"),
        )
        types = dataset.items.values_list("content_type", flat=True).distinct()
        formats = sorted({t.split("/")[-1].replace("jpeg", "jpg") for t in types if t})
        info.update(
            source_format=source_format or meta.get("source_format") or "folder",
            source_path=meta.get("source_path"),
            imported_at=dataset.updated_at.isoformat().replace("+00:00", "Z"),
            image_stats={"num_images": stats["num_images"], **agg, "formats": formats},
        )
    return {**info, **stats}


class StudioDatasetView(ProjectScopedAPIView):
    """The project's image dataset: stats and class list (GET), clear it (DELETE)."""

    queryset = Dataset.objects.all()

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, project_id):
        return Response(_plan_info(self.access, selectors.studio_dataset(access=self.access)))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, project_id):
        dataset = _studio_dataset_to_change(self.access)
        if dataset is not None:
            services.dataset_delete(dataset=dataset)
        return Response({"deleted": dataset is not None})


class StudioImportLocalView(ProjectScopedAPIView):
    """Import a server folder of class folders (only below DATASET_IMPORT_ROOTS)."""

    queryset = Dataset.objects.all()
    parser_classes = [JSONParser]

    @extend_schema(request=s.LocalImportSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request, project_id):
        data = _validated(s.LocalImportSerializer, request.data)
        dataset = _studio_dataset_to_change(self.access)
        dataset = images.dataset_import_images_local(
            project=self.access.project,
            actor=request.user,
            path=data.get("source_path") or data["path"],
            dataset=dataset,
        )
        return Response(_plan_info(self.access, dataset, data.get("format") or "folder"))


class StudioImportUploadView(ProjectScopedAPIView):
    """Import a ZIP of class folders (multipart `file`) into the project's image dataset."""

    queryset = Dataset.objects.all()
    parser_classes = [MultiPartParser]
    accepts_uploads = True  # bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)

    @extend_schema(
        request=s.ZipImportSerializer,
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, description="folder (default)")],
        responses=OpenApiTypes.OBJECT,
    )
    def post(self, request, project_id):
        body = request.data.copy() if hasattr(request.data, "copy") else dict(request.data)
        if "format" in request.query_params and "format" not in body:
            body["format"] = request.query_params["format"]
        data = _validated(s.ZipImportSerializer, body)
        dataset = _studio_dataset_to_change(self.access)
        dataset = images.dataset_import_images_zip(
            project=self.access.project, actor=request.user, file=data["file"], dataset=dataset
        )
        return Response(_plan_info(self.access, dataset, data.get("format") or "folder"))


class ImageListView(ProjectScopedAPIView):
    """Images of the project's dataset, paginated, sorted and filtered."""

    queryset = DatasetItem.objects.all()
    serializer_class = s.ImageItemSerializer

    @extend_schema(operation_id="datasets_images_list", parameters=[s.ImageListQuerySerializer])
    def get(self, request, project_id):
        query = _validated(s.ImageListQuerySerializer, request.query_params)
        dataset = selectors.studio_dataset_get(access=self.access)
        qs = selectors.image_list(
            dataset=dataset,
            sort_by=query["sort_by"],
            sort_order=query["sort_order"],
            filter_class=query.get("filter_class") or None,
            search=query.get("search") or None,
        )
        page = self.paginate_queryset(qs)
        context = {
            "class_names": list(dataset.class_names or []),
            "plan_filenames": s.plan_filenames(dataset.pk, [item.filename for item in page]),
        }
        return self.get_paginated_response(
            s.ImageItemSerializer(page, many=True, context=context).data
        )


def _studio_image(access, filename: str) -> DatasetItem:
    """An image by its path (class folder and name) or by the plan's bare file name."""
    dataset = selectors.studio_dataset(access=access)
    if dataset is None:
        raise NotFound("Image not found.")
    filename = str(filename)
    if "/" not in filename:
        candidates = [f"{c}/{filename}" for c in dataset.class_names or []]
        matches = list(
            DatasetItem.objects.filter(dataset=dataset, filename__in=candidates)
            .order_by("filename")
            .values_list("filename", flat=True)[:5]
        )
        if len(matches) > 1:
            raise Conflict(
                f"Several images are named {filename!r}; give the class folder too: "
                + ", ".join(matches[:5]),
                details={"filename": matches},
            )
        if matches:
            filename = matches[0]
    return selectors.image_get(dataset=dataset, filename=filename)


@extend_schema(parameters=[_FILENAME])
class ImageFileView(ProjectScopedAPIView):
    """The image file itself, with its content type."""

    queryset = DatasetItem.objects.all()

    @extend_schema(
        operation_id="datasets_image_file", responses={(200, "image/*"): OpenApiTypes.BINARY}
    )
    def get(self, request, project_id, filename):
        item = _studio_image(self.access, filename)
        return FileResponse(open(item.path, "rb"), content_type=item.content_type)


@extend_schema(parameters=[_FILENAME])
class ThumbnailView(ProjectScopedAPIView):
    """A thumbnail of an image (at most 128 px a side), cached on disk."""

    queryset = DatasetItem.objects.all()

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, project_id, filename):
        item = _studio_image(self.access, filename)
        path, content_type = selectors.image_thumbnail(item)
        return FileResponse(open(path, "rb"), content_type=content_type)


@extend_schema(parameters=[_FILENAME])
class ImageInfoView(ProjectScopedAPIView):
    """Filename, class, size, dimensions and split values of one image."""

    queryset = DatasetItem.objects.all()
    serializer_class = s.ImageItemSerializer

    def get(self, request, project_id, filename):
        return Response(s.ImageItemSerializer(_studio_image(self.access, filename)).data)


# -- studio: splits -------------------------------------------------------------------------


class SplitListView(ProjectScopedAPIView):
    """The splits of the project's dataset (GET) and a new stratified split (POST)."""

    queryset = Split.objects.all()
    parser_classes = [JSONParser]

    @extend_schema(operation_id="splits_list", responses=s.SplitListSerializer)
    def get(self, request, project_id):
        dataset = selectors.studio_dataset(access=self.access)
        if dataset is None:
            return Response({"split_names": [], "splits": []})
        splits = list(selectors.split_list(access=self.access, dataset=dataset))
        stats = selectors.split_stats(dataset=dataset, splits=splits)
        return Response({"split_names": [sp.name for sp in splits], "splits": stats})

    @extend_schema(request=s.SplitCreateSerializer, responses=s.SplitCreatedSerializer)
    def post(self, request, project_id):
        data = _validated(s.SplitCreateSerializer, request.data)
        dataset = _studio_dataset_to_change(self.access)
        if dataset is None:
            raise DatasetNotImported(f"Project {project_id} has no imported dataset.")
        split = services.split_create(
            dataset=dataset, name=data["name"], ratios=dict(data["ratios"]), seed=data["seed"]
        )
        detail = selectors.split_stats(dataset=dataset, splits=[split])[0]
        return Response({"split_index": split.index, "name": split.name, "stats": detail["stats"]})


class SplitPreviewView(ProjectScopedAPIView):
    """What a split with these ratios and seed would look like; writes nothing."""

    queryset = Split.objects.all()

    @extend_schema(parameters=[s.SplitPreviewQuerySerializer], responses=s.SplitPreviewSerializer)
    def get(self, request, project_id):
        query = _validated(s.SplitPreviewQuerySerializer, request.query_params)
        dataset = selectors.studio_dataset_get(access=self.access)
        preview = selectors.split_preview(
            dataset=dataset,
            ratios={k: query[k] for k in ("train", "val", "test")},
            seed=query["seed"],
        )
        return Response({"name": query.get("name", ""), **preview})


@extend_schema(parameters=[_SPLIT_INDEX])
class SplitDetailView(ProjectScopedAPIView):
    """One split: stats and per-class distribution (GET), or delete it (DELETE)."""

    queryset = Split.objects.all()

    def _split(self, split_index: int) -> tuple[Dataset, Split]:
        dataset = selectors.studio_dataset(access=self.access)
        if dataset is None:
            raise SplitNotFound(f"Split {split_index} not found.")
        try:
            split = selectors.split_get(
                access=self.access, dataset=dataset, split_index=split_index
            )
        except NotFound:
            raise SplitNotFound(f"Split {split_index} not found.") from None
        return dataset, split

    @extend_schema(responses=s.SplitDetailSerializer)
    def get(self, request, project_id, split_index):
        dataset, split = self._split(split_index)
        return Response(selectors.split_stats(dataset=dataset, splits=[split])[0])

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, project_id, split_index):
        _, split = self._split(split_index)
        # Fetched again to change it: a split not found answers 404 before a refusal (403).
        _studio_dataset_to_change(self.access)
        services.split_delete(split=split)
        return Response({"split_index": split_index, "deleted": True})
