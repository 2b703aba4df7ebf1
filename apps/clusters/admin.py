from django.contrib import admin

from apps.clusters import services
from apps.clusters.models import Checkpoint, Cluster, Host, RequestResult


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "project", "source", "mode", "host", "version", "created_at"]
    list_filter = ["mode", "source", "host"]
    search_fields = ["id", "name", "project__id"]
    readonly_fields = ["id", "shape", "version", "created_at", "updated_at"]


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "project", "cluster", "size_bytes", "created_at"]
    search_fields = ["id", "name", "project__id"]
    readonly_fields = [f.name for f in Checkpoint._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "name", "memory_bytes", "state", "updated_at"]
    list_filter = ["kind", "state"]
    actions = ["refresh_hosts"]

    @admin.action(description="Refresh hosts from this machine's devices")
    def refresh_hosts(self, request, queryset):
        hosts = services.host_refresh()
        self.message_user(request, f"{len(hosts)} host(s) known.")


@admin.register(RequestResult)
class RequestResultAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "project", "num_samples", "has_logits", "created_at"]
    list_filter = ["has_logits", "created_at"]
    search_fields = ["id", "name", "project__id"]
    readonly_fields = [f.name for f in RequestResult._meta.fields]

    def has_add_permission(self, request):
        return False
