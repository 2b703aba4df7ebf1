"""Serializers of the datasets API: request bodies are strict (unknown fields refused) and never
carry a project or an owner; answers are plain data."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.api.serializers import StrictModelSerializer, StrictSerializer
from apps.datasets.models import Dataset, UploadSession
from apps.datasets.selectors import IMAGE_SORTS


class DatasetSerializer(StrictModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "kind",
            "status",
            "error",
            "num_samples",
            "input_shape",
            "num_classes",
            "class_names",
            "label_shape",
            "size_bytes",
            "metadata",
            "owner",
            "visibility",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class MnistImportSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    images = serializers.FileField(help_text="idx images file (magic 0x0803), raw or gzip.")
    labels = serializers.FileField(help_text="idx labels file (magic 0x0801), raw or gzip.")


class CommaListField(serializers.CharField):
    """A comma-separated list in a form field (`a,b,c`), given to services as a list."""

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        return [part.strip() for part in text.split(",") if part.strip()] or None


class CsvImportSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    file = serializers.FileField(help_text="CSV with a header row (UTF-8, raw or gzip).")
    label_column = serializers.CharField(required=False, allow_blank=True, default="")
    input_columns = CommaListField(
        required=False, allow_blank=True, default="", help_text="Comma-separated column names."
    )


class VolumeImportSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    file = serializers.FileField(help_text=".npy, .npz (image/volume, label/labels) or NIfTI.")
    labels = serializers.FileField(required=False, help_text="Optional label volume.")


class UploadCreateSerializer(StrictSerializer):
    filename = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    size = serializers.IntegerField(min_value=1)


class UploadSerializer(serializers.ModelSerializer):
    complete = serializers.BooleanField(read_only=True)

    class Meta:
        model = UploadSession
        fields = ["id", "filename", "size", "received_bytes", "complete", "dataset", "created_at"]
        read_only_fields = fields


class FromUploadsSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    # A CharField, not a ChoiceField: the shared `kind` enum would collide in the OpenAPI schema.
    kind = serializers.CharField(help_text="One of " + ", ".join(Dataset.Kind.values) + ".")
    uploads = serializers.DictField(
        child=serializers.UUIDField(),
        help_text='Upload ids per role: {"images", "labels"} (mnist), {"file"} (csv, images), '
        '{"file", "labels"?} (volume).',
    )
    label_column = serializers.CharField(required=False, allow_blank=True)
    input_columns = serializers.ListField(child=serializers.CharField(), required=False)

    def validate_kind(self, value):
        if value not in Dataset.Kind.values:
            raise serializers.ValidationError(f"Must be one of {', '.join(Dataset.Kind.values)}.")
        return value


# The plan's annotation formats (plan/02-data-layer/02-dataset-formats.md); Orchard imports image
# folders ("folder", one subfolder per class) and refuses the others with a message naming them.
PLAN_FORMATS = ("folder", "coco", "yolo", "csv")
SUPPORTED_FORMATS = ("folder",)


def check_format(value: str | None) -> str:
    if value in (None, ""):
        return "folder"
    if value not in PLAN_FORMATS:
        raise serializers.ValidationError(f"Must be one of {', '.join(PLAN_FORMATS)}.")
    if value not in SUPPORTED_FORMATS:
        raise serializers.ValidationError(
            f"'{value}' is not supported by Orchard's studio import: only 'folder' (one subfolder "
            "of images per class) is."
        )
    return value


class LocalImportSerializer(StrictSerializer):
    """The plan's `{source_path, format}`; Orchard's earlier `{path}` still works."""

    source_path = serializers.CharField(max_length=4096, required=False)
    path = serializers.CharField(max_length=4096, required=False)
    format = serializers.CharField(required=False, allow_blank=True, max_length=16)

    def validate_format(self, value):
        return check_format(value)

    def validate(self, attrs):
        if not (attrs.get("source_path") or attrs.get("path")):
            raise serializers.ValidationError({"source_path": ["This field is required."]})
        return attrs


class ZipImportSerializer(StrictSerializer):
    file = serializers.FileField(help_text="ZIP of class folders: class/image.png.")
    format = serializers.CharField(
        required=False, allow_blank=True, max_length=16, help_text="folder (default)."
    )

    def validate_format(self, value):
        return check_format(value)


def plan_filenames(dataset_id, paths) -> dict[str, str]:
    """The plan's `filename` of each image path (class folder and name): the bare name, unless
    another class folder of the dataset holds the same name (then the path, which the image
    routes take as well). Indexed lookups of the candidate paths (every class x every name)."""
    paths = [str(p) for p in paths]
    names = {p.split("/", 1)[1] for p in paths if p.count("/") == 1}
    holders = paths_named(dataset_id, names)
    return {
        p: p.split("/", 1)[1] if p.count("/") == 1 and holders.get(p.split("/", 1)[1]) == 1 else p
        for p in paths
    }


def paths_named(dataset_id, names, *, chunk: int = 500) -> dict[str, int]:
    """How many class folders of the dataset hold each bare image name."""
    from apps.datasets.models import Dataset, DatasetItem

    names = sorted(set(names))
    if not names:
        return {}
    classes = Dataset.objects.filter(pk=dataset_id).values_list("class_names", flat=True).first()
    candidates = [f"{c}/{n}" for c in classes or [] for n in names]
    counts: dict[str, int] = {}
    for start in range(0, len(candidates), chunk):
        found = DatasetItem.objects.filter(
            dataset_id=dataset_id, filename__in=candidates[start : start + chunk]
        ).values_list("filename", flat=True)
        for filename in found:
            name = filename.split("/", 1)[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


class ImageItemSerializer(serializers.Serializer):
    """An image of the studio dataset as the plan's dataset.json lists it (`filename`: the
    image's name without its class folder, unless several class folders hold that name; `width`,
    `height`, `split`: one value per split, `annotations`), then Orchard's extras: `path` (class
    folder and name, unique in the dataset), `class` (a Python keyword, hence declared in
    get_fields) and `size` in bytes. The image routes take either name; a bare name several
    class folders hold answers 409 naming the paths."""

    def get_fields(self):
        return {
            "filename": serializers.SerializerMethodField(),
            "width": serializers.IntegerField(read_only=True),
            "height": serializers.IntegerField(read_only=True),
            "split": serializers.ListField(
                source="splits", child=serializers.CharField(), read_only=True
            ),
            "annotations": serializers.SerializerMethodField(),
            "path": serializers.CharField(source="filename", read_only=True),
            "class": serializers.CharField(source="class_name", read_only=True),
            "size": serializers.IntegerField(read_only=True),
        }

    def get_filename(self, obj) -> str:
        names = self.context.get("plan_filenames")
        if names is None:
            names = plan_filenames(obj.dataset_id, [obj.filename])
        return names.get(obj.filename) or obj.filename

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_annotations(self, obj) -> list[dict]:
        """[{type: "label", class_id, class_name}] (classification: one label per image)."""
        names = self.context.get("class_names")
        if names is None:
            names = list(obj.dataset.class_names or [])
        class_id = names.index(obj.class_name) if obj.class_name in names else None
        return [{"type": "label", "class_id": class_id, "class_name": obj.class_name}]


class ImageListQuerySerializer(serializers.Serializer):
    """Query parameters of the image list (page and page_size belong to the paginator)."""

    sort_by = serializers.ChoiceField(choices=list(IMAGE_SORTS), default="filename")
    sort_order = serializers.ChoiceField(choices=["asc", "desc"], default="asc")
    filter_class = serializers.CharField(required=False, allow_blank=True)
    search = serializers.CharField(required=False, allow_blank=True)


class RatiosSerializer(StrictSerializer):
    train = serializers.FloatField(min_value=0, max_value=1)
    val = serializers.FloatField(min_value=0, max_value=1)
    test = serializers.FloatField(min_value=0, max_value=1)


class SplitCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    ratios = RatiosSerializer()
    seed = serializers.IntegerField(min_value=0, default=0)


class SplitPreviewQuerySerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True)
    train = serializers.FloatField(min_value=0, max_value=1)
    val = serializers.FloatField(min_value=0, max_value=1)
    test = serializers.FloatField(min_value=0, max_value=1)
    seed = serializers.IntegerField(min_value=0, default=0)


class SplitCreatedSerializer(serializers.Serializer):
    split_index = serializers.IntegerField()
    name = serializers.CharField()
    stats = serializers.DictField(child=serializers.IntegerField())


class SplitDetailSerializer(SplitCreatedSerializer):
    ratios = serializers.DictField(child=serializers.FloatField())
    seed = serializers.IntegerField()
    per_class = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))


class SplitListSerializer(serializers.Serializer):
    split_names = serializers.ListField(child=serializers.CharField())
    splits = SplitDetailSerializer(many=True)


class SplitPreviewSerializer(serializers.Serializer):
    name = serializers.CharField(allow_blank=True)
    ratios = serializers.DictField(child=serializers.FloatField())
    seed = serializers.IntegerField()
    stats = serializers.DictField(child=serializers.IntegerField())
    per_class = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))
