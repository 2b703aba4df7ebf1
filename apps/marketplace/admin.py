"""Admin pages of the marketplace: browse every collection; uplets are read-only (their status
changes only through the status machine), with an action to fail stuck pending uplets and their
claim -> done time; projects' compute APIs; pushes (the outbox), with an action to retry failed
ones."""

from django.contrib import admin, messages

from apps.core.exceptions import OrchardError
from apps.marketplace import push, services
from apps.marketplace.api.serializers import claim_to_done_s
from apps.marketplace.models import (
    Algo,
    ComputeEndpoint,
    ComputePush,
    Data,
    Learnuplet,
    Preduplet,
    Problem,
    PushState,
    UpletStatus,
)


@admin.register(Problem)
class ProblemAdmin(admin.ModelAdmin):
    list_display = ["uuid", "project", "size_train_dataset", "owner", "created_at"]
    search_fields = ["uuid", "project__id"]
    list_select_related = ["project", "owner"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Algo)
class AlgoAdmin(admin.ModelAdmin):
    list_display = ["name", "uuid", "project", "problem", "cluster", "architecture", "created_at"]
    list_filter = ["architecture"]
    search_fields = ["uuid", "name", "project__id"]
    list_select_related = ["project", "problem", "cluster"]
    raw_id_fields = ["problem", "cluster"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Data)
class DataAdmin(admin.ModelAdmin):
    list_display = ["uuid", "project", "dataset", "owner", "created_at"]
    search_fields = ["uuid", "project__id"]
    list_select_related = ["project", "dataset", "owner"]
    raw_id_fields = ["dataset"]
    filter_horizontal = ["problems"]
    readonly_fields = ["created_at", "updated_at"]


class _UpletAdmin(admin.ModelAdmin):
    list_filter = ["status", "created_at"]
    search_fields = ["uuid", "project__id"]
    actions = ["mark_failed"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.action(description="Mark selected pending uplets failed")
    def mark_failed(self, request, queryset):
        report = (
            services.learnuplet_report if self.model is Learnuplet else services.preduplet_report
        )
        done = 0
        for uplet in queryset.filter(status=UpletStatus.PENDING):
            try:
                report(uplet=uplet, account=None, status=UpletStatus.FAILED, as_admin=True)
                done += 1
            except OrchardError as exc:
                self.message_user(request, f"{uplet}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{done} uplet(s) marked failed.")

    @admin.display(description="claim -> done (s)")
    def claim_to_done(self, obj):
        seconds = claim_to_done_s(obj)
        return "-" if seconds is None else f"{seconds:.1f}"


@admin.register(Learnuplet)
class LearnupletAdmin(_UpletAdmin):
    list_display = [
        "uuid",
        "project",
        "algo",
        "rank",
        "status",
        "perf",
        "claim_to_done",
        "created_at",
    ]
    list_select_related = ["project", "algo"]


@admin.register(Preduplet)
class PredupletAdmin(_UpletAdmin):
    list_display = ["uuid", "project", "problem", "model", "status", "claim_to_done", "created_at"]
    list_select_related = ["project", "problem"]


@admin.register(ComputeEndpoint)
class ComputeEndpointAdmin(admin.ModelAdmin):
    list_display = ["project", "url", "enabled", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["project__id", "url"]
    list_select_related = ["project"]
    readonly_fields = ["created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        # The same URL rules as the API (http(s), no credentials, no private IP literal).
        obj.url = push.normalize_url(obj.url)
        super().save_model(request, obj, form, change)


@admin.register(ComputePush)
class ComputePushAdmin(admin.ModelAdmin):
    list_display = [
        "uplet_uuid",
        "kind",
        "project",
        "state",
        "attempts",
        "last_status",
        "last_attempt_at",
        "delivered_at",
    ]
    list_filter = ["state", "kind", "created_at"]
    search_fields = ["uplet_uuid", "project__id", "url"]
    list_select_related = ["project"]
    actions = ["retry"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.action(description="Retry selected failed pushes")
    def retry(self, request, queryset):
        done = 0
        for item in queryset.filter(state=PushState.FAILED):
            try:
                push.push_retry(push=item)
                done += 1
            except OrchardError as exc:
                self.message_user(request, f"{item}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{done} push(es) queued again.")
