"""Admin pages of the labelprop half: sessions, stored volumes, checkpoints, directories.

Rows are created by the protocol only (no add forms); deleting goes through the services so the
files go with the rows."""

from django.contrib import admin

from apps.mlbackend.labelprop import services
from apps.mlbackend.models import (
    LabelpropCheckpoint,
    LabelpropSession,
    LabelpropVolume,
    LabelpropWorkspace,
)


class _ReadOnlyRows(admin.ModelAdmin):
    delete_service = None

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def delete_model(self, request, obj):
        type(self).delete_service(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            type(self).delete_service(obj)


@admin.register(LabelpropSession)
class LabelpropSessionAdmin(_ReadOnlyRows):
    list_display = ["id", "kind", "state", "project", "checkpoint", "created_at", "finished_at"]
    list_filter = ["kind", "state", "created_at"]
    search_fields = ["id", "project__id", "error"]
    list_select_related = ["project", "checkpoint"]

    @staticmethod
    def delete_service(obj):
        services.session_delete(session=obj)


@admin.register(LabelpropVolume)
class LabelpropVolumeAdmin(_ReadOnlyRows):
    list_display = ["hash", "shape", "size_bytes", "project", "created_at"]
    search_fields = ["hash", "project__id"]
    list_select_related = ["project"]

    @staticmethod
    def delete_service(obj):
        services.volume_delete(volume=obj)


@admin.register(LabelpropCheckpoint)
class LabelpropCheckpointAdmin(_ReadOnlyRows):
    list_display = ["name", "directory", "project", "size_bytes", "created_at"]
    list_filter = ["directory", "created_at"]
    search_fields = ["name", "directory", "project__id"]
    list_select_related = ["project"]

    @staticmethod
    def delete_service(obj):
        services.checkpoint_delete(checkpoint=obj)


@admin.register(LabelpropWorkspace)
class LabelpropWorkspaceAdmin(admin.ModelAdmin):
    list_display = ["project", "ckpt_dir", "updated_at"]
    search_fields = ["project__id", "ckpt_dir"]
    readonly_fields = ["project"]

    def has_add_permission(self, request):
        return False
