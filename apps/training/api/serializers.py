from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.api.serializers import ProjectRelatedField, StrictSerializer
from apps.core.tenancy import Visibility
from apps.datasets.models import Dataset
from apps.training import plan
from apps.training.models import Evaluation, Experiment, Run
from apps.training.services import CONFIG_FIELDS


def nullable_object(description: str) -> dict:
    """The schema of an object or null (a run not finished has no best metric, error or final
    metrics yet)."""
    return {
        "type": "object",
        "additionalProperties": {},
        "nullable": True,
        "description": description,
    }


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "step", "multistep", "poly")
LOSSES = ("cross_entropy", "focal", "label_smoothing")
PRECISIONS = ("32", "16-mixed", "bf16-mixed", "16", "bf16")


# --- the plan's experiment groups ------------------------------------------------------------------


class PlanModelSerializer(StrictSerializer):
    backbone = serializers.CharField(
        max_length=32,
        required=False,
        help_text="resnet18, resnet34, resnet50, efficientnet_b0, efficientnet_b3, "
        "mobilenet_v3_small, mobilenet_v3_large, or Orchard's mlp, cnn_small, lenet, resnet_tiny.",
    )
    head = serializers.ChoiceField(choices=("classification", "fc_classifier"), required=False)
    pretrained = serializers.BooleanField(
        required=False, help_text="Must be false: no weights can be downloaded."
    )
    freeze_backbone = serializers.BooleanField(required=False)
    dropout = serializers.FloatField(required=False, min_value=0.0, max_value=0.9)


class PlanHyperparametersSerializer(StrictSerializer):
    optimizer = serializers.ChoiceField(choices=OPTIMIZERS, required=False)
    learning_rate = serializers.FloatField(required=False, min_value=0.0)
    weight_decay = serializers.FloatField(required=False, min_value=0.0)
    momentum = serializers.FloatField(required=False, min_value=0.0)
    scheduler = serializers.ChoiceField(choices=(*SCHEDULERS, "none"), required=False)
    warmup_epochs = serializers.IntegerField(required=False, min_value=0, max_value=100_000)
    step_size = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    gamma = serializers.FloatField(required=False, min_value=0.0)
    poly_power = serializers.FloatField(required=False, min_value=0.0)
    milestones = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, allow_null=True, max_length=100
    )
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    max_epochs = serializers.IntegerField(required=False, min_value=1, max_value=100_000)
    early_stopping_patience = serializers.IntegerField(
        required=False, min_value=0, max_value=100_000, help_text="0: off."
    )
    loss = serializers.ChoiceField(choices=LOSSES, required=False)
    dropout = serializers.FloatField(required=False, min_value=0.0, max_value=0.9)


class PlanAugmentationsSerializer(StrictSerializer):
    train = serializers.ListField(child=serializers.DictField(), required=False, max_length=64)
    val = serializers.ListField(child=serializers.DictField(), required=False, max_length=64)


class PlanHardwareSerializer(StrictSerializer):
    selected_devices = serializers.ListField(
        child=serializers.CharField(max_length=16), required=False, allow_empty=False, max_length=64
    )
    precision = serializers.ChoiceField(choices=PRECISIONS, required=False)


# --- experiments ---------------------------------------------------------------------------------


class ExperimentWriteSerializer(StrictSerializer):
    """An experiment's name and configuration, in the plan's groups (`model`, `hyperparameters`,
    `augmentations`, `hardware`) and/or Orchard's flat fields; omitted options take their
    defaults on create (the plan's for a plan-shaped or empty body, see apps.training.plan)."""

    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    model = PlanModelSerializer(required=False)
    hyperparameters = PlanHyperparametersSerializer(required=False)
    augmentations = PlanAugmentationsSerializer(required=False)
    hardware = PlanHardwareSerializer(required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    dataset_id = ProjectRelatedField(
        model=Dataset,
        slug_field="id",
        required=False,
        allow_null=True,
        help_text="Training data; default: the project's studio (image) dataset.",
    )
    split_index = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="Split of an image dataset (train on 'train', validate on 'val'); "
        "null: the whole dataset.",
    )
    val_dataset_id = ProjectRelatedField(
        model=Dataset,
        slug_field="id",
        required=False,
        allow_null=True,
        help_text="Validation data for a dataset without splits (same classes).",
    )
    architecture = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=32,
        help_text="mlp, cnn_small, lenet, resnet_tiny, or 'template' (default cnn_small; "
        "'template' when a template is given).",
    )
    template = serializers.CharField(
        required=False, allow_blank=True, max_length=100_000, trim_whitespace=False
    )
    input_size = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_null=True,
        max_length=3,
        help_text="Per-sample shape the network takes ([C, H, W], [H, W] or [N]); "
        "default: the dataset's.",
    )
    optimizer = serializers.ChoiceField(choices=OPTIMIZERS, required=False)
    learning_rate = serializers.FloatField(required=False, min_value=0.0)
    scheduler = serializers.ChoiceField(
        choices=SCHEDULERS, required=False, allow_null=True, allow_blank=True
    )
    weight_decay = serializers.FloatField(required=False, min_value=0.0)
    epochs = serializers.IntegerField(required=False, min_value=1, max_value=100_000)
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    augmentation = serializers.DictField(
        required=False,
        help_text="Image augmentation: hflip, vflip (bool); shift, scale (0..0.5), rotate "
        "(degrees, 0..180), brightness, contrast, noise (0..1).",
    )
    seed = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=2**31 - 1
    )
    devices = serializers.ListField(
        child=serializers.CharField(max_length=16),
        required=False,
        allow_empty=False,
        max_length=64,
        help_text='["cpu"] or ["gpu:0", ...] (several GPUs: data parallel).',
    )

    def validate_name(self, value: str) -> str:
        if self.partial and not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value

    def changes(self, *, defaults: bool = False) -> dict:
        """Validated values keyed by the services' names (`dataset`, `val_dataset`, ...,
        `options`); with `defaults`, the plan's defaults fill what the body leaves out."""
        data = dict(self.validated_data)
        for api, model in (("dataset_id", "dataset"), ("val_dataset_id", "val_dataset")):
            if api in data:
                data[model] = data.pop(api)
        columns, options = plan.flatten(data)
        for group in plan.PLAN_GROUPS:
            data.pop(group, None)
        if defaults:
            data = {**plan.PLAN_DEFAULT_COLUMNS, **data}
            options = {**plan.PLAN_DEFAULT_OPTIONS, **options}
        data.update(columns)
        if options:
            data["options"] = options
        return data

    @staticmethod
    def split(changes: dict) -> tuple[dict, dict]:
        """(configuration, other fields) of `changes()`."""
        config = {k: v for k, v in changes.items() if k in CONFIG_FIELDS}
        return config, {k: v for k, v in changes.items() if k not in CONFIG_FIELDS}


class ExperimentSerializer(serializers.ModelSerializer):
    dataset_id = serializers.UUIDField(read_only=True, allow_null=True)
    val_dataset_id = serializers.UUIDField(read_only=True, allow_null=True)
    split_index = serializers.SerializerMethodField()
    scheduler = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)
    runs_count = serializers.SerializerMethodField()
    run_count = serializers.SerializerMethodField()
    latest_run_status = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = [
            "id",
            "name",
            "run_count",
            "latest_run_status",
            "description",
            "dataset_id",
            "split_index",
            "val_dataset_id",
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
            "owner",
            "visibility",
            "runs_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_split_index(self, obj) -> int | None:
        return obj.split.index if obj.split_id and obj.split else None

    def get_scheduler(self, obj) -> str | None:
        return obj.scheduler or None

    def get_runs_count(self, obj) -> int:
        count = getattr(obj, "runs_count", None)
        return int(count) if count is not None else obj.runs.count()

    def get_run_count(self, obj) -> int:
        return self.get_runs_count(obj)

    def get_latest_run_status(self, obj) -> str | None:
        if hasattr(obj, "latest_task_state"):
            from apps.training.models import TASK_STATE_TO_STATUS

            state = obj.latest_task_state
            return None if state is None else str(TASK_STATE_TO_STATUS.get(state, "failed"))
        run = obj.runs.select_related("task").order_by("-created_at").first()
        return run.status if run is not None else None

    def to_representation(self, obj):
        """The plan's experiment.json (model, hyperparameters, augmentations, hardware), then
        Orchard's flat fields as additions."""
        data = super().to_representation(obj)
        view = plan.plan_view(obj, data["split_index"])
        return {**view, **{k: v for k, v in data.items() if k not in view}}


# --- runs ----------------------------------------------------------------------------------------


class RunSerializer(serializers.ModelSerializer):
    run_id = serializers.CharField(source="id", read_only=True)
    experiment_id = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)
    progress = serializers.SerializerMethodField()
    stop_requested = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    task_id = serializers.UUIDField(read_only=True, allow_null=True)
    cluster_id = serializers.UUIDField(read_only=True, allow_null=True)
    best_checkpoint_id = serializers.UUIDField(read_only=True, allow_null=True)
    last_checkpoint_id = serializers.UUIDField(read_only=True, allow_null=True)
    max_epochs = serializers.SerializerMethodField()
    started_at = serializers.SerializerMethodField()
    finished_at = serializers.SerializerMethodField()
    completed_at = serializers.SerializerMethodField()
    best_metric = serializers.SerializerMethodField()
    best_metric_name = serializers.CharField(source="best_metric", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Run
        fields = [
            "id",
            "run_id",
            "experiment_id",
            "status",
            "started_at",
            "completed_at",
            "best_epoch",
            "best_metric",
            "error",
            "number",
            "progress",
            "stop_requested",
            "max_epochs",
            "epochs_completed",
            "best_metric_name",
            "best_value",
            "best_checkpoint_id",
            "last_checkpoint_id",
            "task_id",
            "cluster_id",
            "resumes",
            "config",
            "owner",
            "visibility",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_progress(self, obj) -> float:
        return float(obj.task.progress) if obj.task else 0.0

    def get_stop_requested(self, obj) -> bool:
        return bool(obj.task and obj.task.stop_requested)

    @extend_schema_field(nullable_object("null, or the plan's {type, message} of a failed run."))
    def get_error(self, obj) -> dict | None:
        message = obj.task.error if obj.task else "The run's task was deleted."
        if not message:
            return None
        kind, sep, rest = message.partition(": ")
        if sep and kind.isidentifier() and kind[:1].isupper():
            return {"type": kind, "message": rest}
        return {"type": "Error", "message": message}

    @extend_schema_field(
        nullable_object('{name: value} of the best epoch (plan: {"val_accuracy": 0.956}).')
    )
    def get_best_metric(self, obj) -> dict | None:
        if not obj.best_metric or obj.best_value is None:
            return None
        return {obj.best_metric: obj.best_value}

    def get_max_epochs(self, obj) -> int:
        return int((obj.config or {}).get("epochs") or 0)

    def get_completed_at(self, obj) -> str | None:
        if obj.status not in ("completed", "failed", "cancelled"):
            return None
        return self.get_finished_at(obj)

    def get_started_at(self, obj) -> str | None:
        value = obj.task.started_at if obj.task else None
        return value.isoformat() if value else None

    def get_finished_at(self, obj) -> str | None:
        value = obj.task.finished_at if obj.task else None
        return value.isoformat() if value else None


class EpochMetricsSerializer(serializers.Serializer):
    epoch = serializers.IntegerField(help_text="From 1.")
    train_loss = serializers.FloatField()
    train_accuracy = serializers.FloatField()
    val_loss = serializers.FloatField(required=False)
    val_accuracy = serializers.FloatField(required=False)
    val_f1 = serializers.FloatField(required=False)
    val_precision = serializers.FloatField(required=False)
    val_recall = serializers.FloatField(required=False)
    lr = serializers.FloatField()
    duration_s = serializers.FloatField()


class RunMetricsSerializer(serializers.Serializer):
    epochs = EpochMetricsSerializer(many=True)
    run_id = serializers.CharField()
    status = serializers.CharField()
    max_epochs = serializers.IntegerField()
    epochs_completed = serializers.IntegerField()
    best_epoch = serializers.IntegerField(allow_null=True)
    best_metric = serializers.DictField(allow_null=True)


class RunDetailSerializer(RunSerializer):
    """The plan's run.json (with `final_metrics`, `checkpoints`) and the metrics document."""

    final_metrics = serializers.SerializerMethodField()
    checkpoints = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "final_metrics", "checkpoints", "metrics"]
        read_only_fields = fields

    def _metrics(self, obj) -> dict:
        if not hasattr(obj, "_plan_metrics"):
            from apps.training.selectors import run_metrics

            obj._plan_metrics = run_metrics(run=obj)
        return obj._plan_metrics

    @extend_schema_field(nullable_object("The last epoch's metrics; null before the first."))
    def get_final_metrics(self, obj) -> dict | None:
        epochs = self._metrics(obj)["epochs"]
        if not epochs:
            return None
        return {k: v for k, v in epochs[-1].items() if k != "epoch"}

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_checkpoints(self, obj) -> dict:
        """{best, last: {id, size_mb, epoch}} of the checkpoints written so far."""
        from apps.clusters.models import Checkpoint

        ids = {"best": obj.best_checkpoint_id, "last": obj.last_checkpoint_id}
        rows = {c.pk: c for c in Checkpoint.objects.filter(pk__in=[i for i in ids.values() if i])}
        out = {}
        for which, pk in ids.items():
            row = rows.get(pk)
            if row is not None:
                out[which] = {
                    "id": str(row.pk),
                    "size_mb": round(row.size_bytes / 1e6, 3),
                    "epoch": (row.metadata or {}).get("epoch"),
                }
        return out

    @extend_schema_field(RunMetricsSerializer)
    def get_metrics(self, obj) -> dict:
        """The metrics document (as GET .../metrics)."""
        return self._metrics(obj)


# --- evaluations ---------------------------------------------------------------------------------


class EvaluationCreateSerializer(StrictSerializer):
    experiment_id = serializers.CharField(max_length=32)
    run_id = serializers.CharField(max_length=32)
    checkpoint = serializers.ChoiceField(choices=("best", "last"), default="best")
    dataset_id = ProjectRelatedField(
        model=Dataset,
        slug_field="id",
        required=False,
        allow_null=True,
        help_text="Data to evaluate on; default: the run's dataset (and split).",
    )
    split_index = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    split_subset = serializers.ChoiceField(
        choices=Evaluation.Subset.choices,
        required=False,
        allow_null=True,
        help_text="Default: test with a split, all without.",
    )
    batch_size = serializers.IntegerField(default=256, min_value=1, max_value=65_536)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)


class EvaluationSerializer(serializers.ModelSerializer):
    eval_id = serializers.CharField(source="id", read_only=True)
    evaluation_id = serializers.CharField(source="id", read_only=True)
    experiment_id = serializers.CharField(read_only=True)
    run_id = serializers.CharField(read_only=True)
    checkpoint = serializers.CharField(source="checkpoint_name", read_only=True)
    checkpoint_id = serializers.UUIDField(read_only=True, allow_null=True)
    dataset_id = serializers.UUIDField(read_only=True, allow_null=True)
    task_id = serializers.UUIDField(read_only=True, allow_null=True)
    status = serializers.CharField(read_only=True)
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    accuracy = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "evaluation_id",
            "eval_id",
            "name",
            "experiment_id",
            "run_id",
            "checkpoint",
            "checkpoint_id",
            "dataset_id",
            "split_index",
            "split_subset",
            "batch_size",
            "task_id",
            "status",
            "progress",
            "error",
            "num_samples",
            "accuracy",
            "owner",
            "visibility",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_progress(self, obj) -> dict:
        """The plan's {processed, total} samples (total: 0 until the worker counted them)."""
        total = int(obj.num_samples or 0)
        if obj.status == "completed":
            return {"processed": total, "total": total}
        fraction = float(obj.task.progress) if obj.task else 0.0
        return {"processed": min(total, int(fraction * total)), "total": total}

    def get_error(self, obj) -> str:
        return obj.task.error if obj.task else ""

    def get_accuracy(self, obj) -> float | None:
        value = (obj.results or {}).get("accuracy")
        return float(value) if value is not None else None


class EvaluationDetailSerializer(EvaluationSerializer):
    results = serializers.JSONField(
        read_only=True,
        help_text="accuracy, num_samples, per_class [{class, name, precision, recall, f1, "
        "support}], macro_avg, weighted_avg, confusion_matrix (rows: true classes), loss.",
    )

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "results"]
        read_only_fields = fields


class EvaluationItemSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Row of the sample in the dataset.")
    filename = serializers.CharField(help_text="The image's name (without its class folder).")
    path = serializers.CharField(help_text="Class folder and name (unique in the dataset).")
    true_class = serializers.IntegerField()
    true_label = serializers.CharField()
    predicted_class = serializers.IntegerField()
    predicted_label = serializers.CharField()
    confidence = serializers.FloatField()
    error = serializers.FloatField(help_text="1 - probability of the true class.")
    correct = serializers.BooleanField()
