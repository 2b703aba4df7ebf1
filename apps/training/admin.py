"""Admin pages of the training studio. Configurations are written through the API (which checks
them against the data); here operators browse them, stop runs and see their metric curves."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.core.adminlinks import console_link
from apps.core.exceptions import OrchardError
from apps.training import selectors, services
from apps.training.models import Evaluation, Experiment, Run

_CONFIG_FIELDS = [
    "dataset",
    "split",
    "val_dataset",
    "architecture",
    "template",
    "input_size",
    "optimizer",
    "learning_rate",
    "scheduler",
    "weight_decay",
    "epochs",
    "batch_size",
    "augmentation",
    "seed",
    "devices",
]

# Curves drawn in the run's change view: (metric, colour, label).
_CURVES = [
    ("loss", "#d62728", "train loss"),
    ("val_loss", "#ff9896", "val loss"),
    ("accuracy", "#1f77b4", "train accuracy"),
    ("val_accuracy", "#2ca02c", "val accuracy"),
]


def metric_curves_svg(history: list[dict], *, width: int = 640, height: int = 240) -> str:
    """An inline SVG with one polyline per metric (each scaled to its own range); no JS, no CDN.

    Only numbers from the history reach the markup (labels are constants)."""
    if not history:
        return '<p class="help">No epoch has completed yet.</p>'
    pad = 30
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    first, last = min(epochs), max(epochs)
    span = max(1, last - first)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
        f'role="img" aria-label="metric curves" style="background:#fff;border:1px solid #ccc">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
        f'<text x="{pad}" y="{height - pad + 14}" font-size="11">epoch {first}</text>',
        f'<text x="{width - pad - 50}" y="{height - pad + 14}" font-size="11">epoch {last}</text>',
    ]
    legend_x = pad
    for key, colour, label in _CURVES:
        points = [(e, h.get(key)) for e, h in zip(epochs, history, strict=True)]
        points = [(e, float(v)) for e, v in points if isinstance(v, int | float)]
        if not points:
            continue
        values = [v for _, v in points]
        low, high = min(values), max(values)
        scale = (high - low) or 1.0
        coords = " ".join(
            f"{pad + (e - first) / span * (width - 2 * pad):.1f},"
            f"{height - pad - (v - low) / scale * (height - 2 * pad):.1f}"
            for e, v in points
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
        )
        parts.append(
            f'<text x="{legend_x}" y="{height + 25}" font-size="11" fill="{colour}">'
            f"{label} ({low:.3g}..{high:.3g})</text>"
        )
        legend_x += 150
    parts.append("</svg>")
    return "".join(parts)


def _delete(request, model_admin, service, **kwargs) -> None:
    """Delete through the service; a refusal (a run in progress) becomes an error message."""
    try:
        service(**kwargs)
    except OrchardError as exc:
        model_admin.message_user(request, exc.message, messages.ERROR)


class RunInline(admin.TabularInline):
    model = Run
    extra = 0
    fields = ["id", "number", "status", "epochs_completed", "best_epoch", "best_value"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True
    max_num = 0

    @admin.display(description="status")
    def status(self, obj):
        return obj.status


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "id",
        "project",
        "architecture",
        "dataset",
        "epochs",
        "owner",
        "created_at",
    ]
    list_filter = ["architecture", "optimizer", "created_at"]
    search_fields = ["id", "name", "project__id", "owner__username"]
    list_select_related = ["project", "owner", "dataset"]
    fields = ["id", "project", "owner", "name", "description", "visibility", *_CONFIG_FIELDS]
    readonly_fields = ["id", "project", "owner", *_CONFIG_FIELDS]
    inlines = [RunInline]

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        _delete(request, self, services.experiment_delete, experiment=obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            _delete(request, self, services.experiment_delete, experiment=obj)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "experiment",
        "number",
        "run_status",
        "epochs_completed",
        "best_epoch",
        "best_value",
        "project",
        "owner",
        "created_at",
        "console_link",
    ]

    @admin.display(description="console")
    def console_link(self, obj):
        return console_link("admin:console-run", obj.pk)

    list_filter = ["task__state", "created_at"]
    search_fields = ["id", "experiment__name", "experiment__id", "project__id"]
    list_select_related = ["experiment", "project", "owner", "task"]
    readonly_fields = [
        "metric_curves",
        *[f.name for f in Run._meta.fields],
    ]
    actions = ["stop_runs"]

    @admin.display(description="status")
    def run_status(self, obj):
        return obj.status

    @admin.display(description="metric curves")
    def metric_curves(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        history = selectors.run_metrics(run=obj)["history"]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    h.get("epoch"),
                    _fmt(h.get("loss")),
                    _fmt(h.get("accuracy")),
                    _fmt(h.get("val_loss")),
                    _fmt(h.get("val_accuracy")),
                )
                for h in history[-50:]
            ),
        )
        table = format_html(
            "<table><tr><th>epoch</th><th>loss</th><th>accuracy</th><th>val loss</th>"
            "<th>val accuracy</th></tr>{}</table>",
            rows,
        )
        return mark_safe(metric_curves_svg(history)) + table

    @admin.action(description="Stop selected runs")
    def stop_runs(self, request, queryset):
        count = 0
        for run in queryset.select_related("task"):
            if run.status in ("pending", "running"):
                services.run_stop(run=run)
                count += 1
        self.message_user(request, f"Stop requested for {count} run(s).", messages.SUCCESS)

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        _delete(request, self, services.run_delete, run=obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            _delete(request, self, services.run_delete, run=obj)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "run",
        "checkpoint_name",
        "split_subset",
        "eval_status",
        "accuracy",
        "num_samples",
        "created_at",
        "console_link",
    ]

    @admin.display(description="console")
    def console_link(self, obj):
        return console_link("admin:console-evaluation", obj.pk)

    list_filter = ["checkpoint_name", "split_subset", "created_at"]
    search_fields = ["id", "name", "run__id", "project__id"]
    list_select_related = ["run", "task", "project"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    @admin.display(description="status")
    def eval_status(self, obj):
        return obj.status

    @admin.display(description="accuracy")
    def accuracy(self, obj):
        value = (obj.results or {}).get("accuracy")
        return f"{value * 100:.2f} %" if isinstance(value, int | float) else "-"

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        services.evaluation_delete(evaluation=obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.evaluation_delete(evaluation=obj)
