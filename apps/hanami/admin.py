from django.contrib import admin

from apps.hanami.models import AuditEntry, ErrorEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "request_type", "endpoint", "status")
    list_filter = ("request_type", "status")
    search_fields = ("endpoint", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("created_at", "user", "endpoint", "request_type", "status")


@admin.register(ErrorEntry)
class ErrorEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "component", "context")
    search_fields = ("context", "values", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("created_at", "user", "component", "context", "values")
