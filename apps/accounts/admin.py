from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from apps.accounts.models import Membership, Project, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "name", "email", "is_superuser", "is_service_account", "is_active"]
    list_filter = ["is_superuser", "is_service_account", "is_active"]
    search_fields = ["username", "name", "email"]
    fieldsets = BaseUserAdmin.fieldsets + (("Orchard", {"fields": ("name", "is_service_account")}),)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "task", "created_by", "created_at"]
    list_filter = ["task", "created_at"]
    search_fields = ["id", "name"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "is_project_admin", "created_at"]
    list_filter = ["role", "is_project_admin"]
    search_fields = ["user__username", "project__id", "project__name"]
    autocomplete_fields = ["user", "project"]
