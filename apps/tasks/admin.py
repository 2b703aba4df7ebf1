from django.contrib import admin, messages

from apps.core.adminlinks import console_link
from apps.tasks import services
from apps.tasks.models import Task, TaskEvent, TaskState


class TaskEventInline(admin.TabularInline):
    model = TaskEvent
    extra = 0
    fields = ["seq", "kind", "data", "created_at"]
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "state",
        "progress_percent",
        "attempts",
        "queue",
        "project",
        "owner",
        "queued_at",
        "finished_at",
        "console_link",
    ]

    @admin.display(description="console")
    def console_link(self, obj):
        return console_link("admin:console-task", obj.pk)

    list_filter = ["state", "kind", "queue", "created_at"]
    search_fields = ["id", "name", "project__id", "owner__username"]
    list_select_related = ["project", "owner"]
    readonly_fields = [f.name for f in Task._meta.fields]
    inlines = [TaskEventInline]
    actions = ["abort_tasks"]

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj):
        return f"{obj.progress * 100:.0f} %"

    @admin.action(description="Abort selected tasks")
    def abort_tasks(self, request, queryset):
        count = 0
        for task in queryset.filter(state__in=[TaskState.QUEUED, TaskState.ACTIVE]):
            services.task_abort(task=task)
            count += 1
        self.message_user(request, f"Abort requested for {count} task(s).", messages.SUCCESS)

    def has_add_permission(self, request):
        return False
