"""Datasets: the two-step upload (create, send the files over the socket, finalize), progress,
get, delete and list."""

from __future__ import annotations

from typing import ClassVar

from rest_framework.response import Response

from apps.datasets import selectors as datasets_selectors
from apps.datasets import services as datasets
from apps.datasets import uploads as dataset_uploads
from apps.datasets.models import Dataset
from apps.hanami import selectors
from apps.hanami.answers import dataset_answer, table
from apps.hanami.serializers import (
    CsvFinishInput,
    CsvUploadInput,
    HanamiSerializer,
    MnistFinishInput,
    MnistUploadInput,
    UuidQuery,
    validated,
)
from apps.hanami.views.base import HanamiView


class DatasetBase(HanamiView):
    def dataset(self, dataset_id: str, *, edit: bool = False) -> Dataset:
        """A dataset of the token's project that the caller sees (and may change, with `edit`)."""
        return datasets_selectors.dataset_get(
            access=self.access, dataset_id=dataset_id, for_edit=edit
        )


class _UploadDatasetView(DatasetBase):
    """POST announces the files' sizes and answers the upload ids; PUT finalizes."""

    kind: ClassVar[str]
    # role -> (size field of POST, uuid field of POST answer / PUT body)
    files: ClassVar[dict[str, tuple[str, str]]]
    begin_input: ClassVar[type[HanamiSerializer]]
    finish_input: ClassVar[type[HanamiSerializer]]

    def post(self, request):
        data = validated(self.begin_input, request.data)
        sizes = {role: data[size_field] for role, (size_field, _) in self.files.items()}
        dataset, uploads = dataset_uploads.dataset_upload_begin(
            project=self.access.project,
            actor=self.access.user,
            name=data["name"],
            kind=self.kind,
            sizes=sizes,
        )
        answer = {"uuid": str(dataset.pk), "name": dataset.name}
        for role, (_, uuid_field) in self.files.items():
            answer[uuid_field] = str(uploads[role].pk)
        return Response(answer)

    def put(self, request):
        data = validated(self.finish_input, request.data, access=self.access)
        dataset = dataset_uploads.dataset_finalize_upload(dataset=data["uuid"])
        return Response(dataset_answer(dataset))


class MnistDatasetView(_UploadDatasetView):
    kind = Dataset.Kind.MNIST
    files: ClassVar = {
        "images": ("input_data_size", "uuid_input_file"),
        "labels": ("label_data_size", "uuid_label_file"),
    }
    begin_input = MnistUploadInput
    finish_input = MnistFinishInput


class CsvDatasetView(_UploadDatasetView):
    kind = Dataset.Kind.CSV
    files: ClassVar = {"file": ("input_data_size", "uuid_input_file")}
    begin_input = CsvUploadInput
    finish_input = CsvFinishInput


class DatasetProgressView(DatasetBase):
    def get(self, request):
        dataset = self.dataset(validated(UuidQuery, request.query_params)["uuid"])
        progress = datasets_selectors.dataset_upload_progress(dataset)
        return Response(
            {
                "uuid": str(dataset.pk),
                "complete": progress["complete"],
                "state": dataset.status,
                "temp_files": progress["files"],
            }
        )


class DatasetView(DatasetBase):
    def get(self, request):
        return Response(
            dataset_answer(self.dataset(validated(UuidQuery, request.query_params)["uuid"]))
        )

    def delete(self, request):
        dataset_id = validated(UuidQuery, request.query_params)["uuid"]
        datasets.dataset_delete(dataset=self.dataset(dataset_id, edit=True))
        return Response({})


class DatasetListView(DatasetBase):
    def get(self, request):
        rows = [
            (
                str(d.pk),
                d.project_id,
                d.owner.username if d.owner else "",
                d.visibility,
                d.name,
                d.kind,
            )
            for d in selectors.dataset_rows(access=self.access)
        ]
        return Response(
            table(["uuid", "project_id", "owner_id", "visibility", "name", "type"], rows)
        )
