"""Admin pages of Label Studio backends, their trained versions and stored annotations."""

from django.contrib import admin

from apps.core.adminlinks import console_link
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend, LabelStudioModelVersion


class ModelVersionInline(admin.TabularInline):
    model = LabelStudioModelVersion
    extra = 0
    fields = ["number", "checkpoint", "task", "metrics", "created_at"]
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(LabelStudioBackend)
class LabelStudioBackendAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "id",
        "project",
        "cluster",
        "experiment",
        "version",
        "label_studio_url",
        "created_at",
        "console_link",
    ]

    @admin.display(description="console")
    def console_link(self, obj):
        return console_link("admin:console-backend", obj.pk)

    list_filter = ["allow_private_networks", "train_on_annotation", "created_at"]
    search_fields = ["id", "name", "project__id", "label_studio_url"]
    list_select_related = ["project", "cluster", "experiment"]
    raw_id_fields = ["project", "owner", "cluster", "experiment", "checkpoint"]
    # Secrets never show: the password hash and Label Studio's access token.
    exclude = ["basic_auth_password", "access_token"]
    readonly_fields = [
        "id",
        "interface",
        "label_studio_url",
        "ls_project",
        "last_setup_at",
        "version",
        "created_at",
        "updated_at",
    ]
    inlines = [ModelVersionInline]

    def has_add_permission(self, request):
        # Backends are created through the API, which checks the label config and the model.
        return False


@admin.register(LabelStudioAnnotation)
class LabelStudioAnnotationAdmin(admin.ModelAdmin):
    list_display = ["annotation_id", "backend", "task_id", "label", "was_cancelled", "updated_at"]
    list_filter = ["was_cancelled", "updated_at"]
    search_fields = ["backend__id", "backend__name", "label", "ls_project"]
    list_select_related = ["backend"]
    readonly_fields = [f.name for f in LabelStudioAnnotation._meta.fields]

    def has_add_permission(self, request):
        return False
