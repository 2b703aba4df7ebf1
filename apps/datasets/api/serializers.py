"""Serializers of the datasets API: request bodies are strict (unknown fields refused) and never
carry a project or an owner; answers are plain data."""

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


class LocalImportSerializer(StrictSerializer):
    path = serializers.CharField(max_length=4096)


class ZipImportSerializer(StrictSerializer):
    file = serializers.FileField(help_text="ZIP of class folders: class/image.png.")


class ClassCountSerializer(serializers.Serializer):
    name = serializers.CharField()
    count = serializers.IntegerField()
    size = serializers.IntegerField()


class DatasetStatsSerializer(serializers.Serializer):
    dataset_id = serializers.UUIDField(allow_null=True)
    name = serializers.CharField()
    num_images = serializers.IntegerField()
    num_classes = serializers.IntegerField()
    classes = ClassCountSerializer(many=True)
    total_size = serializers.IntegerField()
    split_names = serializers.ListField(child=serializers.CharField())


class ImageItemSerializer(serializers.Serializer):
    """An image of the studio dataset; `class` is its class folder (a Python keyword, hence
    declared in get_fields)."""

    def get_fields(self):
        return {
            "filename": serializers.CharField(read_only=True),
            "class": serializers.CharField(source="class_name", read_only=True),
            "size": serializers.IntegerField(read_only=True),
            "width": serializers.IntegerField(read_only=True),
            "height": serializers.IntegerField(read_only=True),
            "splits": serializers.ListField(child=serializers.CharField(), read_only=True),
        }


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
