from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import ValidationError

from apps.accounts.models import Membership, Project, User
from apps.core.throttling import CredentialsThrottled, account_key, credential_attempt

# --- the admin login: throttled like every credential check ---------------------------------


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login form, its password check throttled per client address and per account
    name (AUTH_FAILURE_RATE) before the password hasher runs: past it, a form error and (through
    `admin_login`) status 429."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()
        try:
            with credential_attempt(self.request, account=account_key(username)) as attempt:
                try:
                    return super().clean()
                finally:
                    if self.user_cache is not None:  # the password was right
                        attempt.succeeded()
        except CredentialsThrottled as exc:
            if self.request is not None:
                self.request.orchard_auth_throttled = exc
            raise ValidationError(str(exc.detail), code="throttled") from None

    def confirm_login_allowed(self, user):
        """Who may log in is the admin site's policy when it has one (`may_log_in`: the console
        site lets project admins in, scoped to their projects); else Django's (staff only)."""
        may_log_in = getattr(admin.site, "may_log_in", None)
        if may_log_in is None:
            return super().confirm_login_allowed(user)
        if not user.is_active or not may_log_in(user):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


admin.site.login_form = ThrottledAdminAuthenticationForm


def admin_login(request, extra_context=None):
    """`/admin/login/`: the admin site's login page, answering 429 (with `Retry-After`) when the
    credential check was throttled."""
    response = admin.site.login(request, extra_context)
    throttled = getattr(request, "orchard_auth_throttled", None)
    if throttled is not None:
        response.status_code = 429
        if throttled.wait:
            response["Retry-After"] = str(int(throttled.wait))
    return response


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
