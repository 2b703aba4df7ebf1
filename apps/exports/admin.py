from django.contrib import admin, messages

from apps.exports import services
from apps.exports.models import Export
from apps.exports.selectors import export_state


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    """Exports are made through the API (a task writes and checks the file); here operators
    look at them and delete them with their files."""

    list_display = [
        "name",
        "id",
        "format",
        "current_status",
        "parity_passed",
        "max_abs_diff",
        "size_bytes",
        "project",
        "owner",
        "created_at",
    ]
    list_filter = ["format", "status", "source_kind", "created_at"]
    search_fields = ["id", "name", "project__id", "owner__username", "run_id"]
    list_select_related = ["project", "owner", "task"]
    readonly_fields = [f.name for f in Export._meta.fields]
    actions = ["delete_with_files"]

    @admin.display(description="status")
    def current_status(self, obj):
        return export_state(obj).status

    @admin.display(description="parity", boolean=True)
    def parity_passed(self, obj):
        return None if not obj.parity else bool(obj.parity.get("passed"))

    @admin.display(description="max abs diff")
    def max_abs_diff(self, obj):
        value = (obj.parity or {}).get("max_abs_diff")
        return "-" if value is None else f"{value:.3g}"

    def has_add_permission(self, request):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would leave the files behind
        return actions

    def delete_model(self, request, obj):
        services.export_delete(export=obj)

    @admin.action(description="Delete selected exports and their files")
    def delete_with_files(self, request, queryset):
        count = 0
        for export in queryset.select_related("task"):
            services.export_delete(export=export)
            count += 1
        self.message_user(request, f"Deleted {count} export(s).", messages.SUCCESS)
