"""Admin pages for datasets, their items and splits, and upload sessions."""

from django.contrib import admin

from apps.core.adminlinks import console_link
from apps.datasets.models import Dataset, DatasetItem, Split, UploadSession


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "status",
        "project",
        "owner",
        "num_samples",
        "num_classes",
        "size_bytes",
        "created_at",
        "console_link",
    ]

    @admin.display(description="console")
    def console_link(self, obj):
        return console_link("admin:console-dataset", obj.pk)

    list_filter = ["kind", "status", "visibility", "created_at"]
    search_fields = ["name", "project__name", "project__id", "owner__username"]
    list_select_related = ["project", "owner"]
    readonly_fields = ["id", "created_at", "updated_at", "content_version"]
    raw_id_fields = ["project", "owner"]


@admin.register(DatasetItem)
class DatasetItemAdmin(admin.ModelAdmin):
    list_display = ["filename", "class_name", "dataset", "size", "width", "height", "splits"]
    list_filter = ["class_name", "content_type"]
    search_fields = ["filename", "class_name", "dataset__name"]
    list_select_related = ["dataset"]
    raw_id_fields = ["project", "dataset"]


@admin.register(Split)
class SplitAdmin(admin.ModelAdmin):
    list_display = ["name", "index", "dataset", "seed", "ratios", "created_at"]
    list_filter = ["created_at"]
    search_fields = ["name", "dataset__name"]
    list_select_related = ["dataset"]
    raw_id_fields = ["project", "dataset"]


@admin.register(UploadSession)
class UploadSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "filename", "project", "owner", "size", "received_bytes", "dataset"]
    list_filter = ["created_at"]
    search_fields = ["id", "filename", "project__id", "owner__username"]
    list_select_related = ["project", "owner", "dataset"]
    raw_id_fields = ["project", "owner", "dataset"]
