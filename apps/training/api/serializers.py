from rest_framework import serializers

from apps.core.api.serializers import ProjectRelatedField, StrictSerializer
from apps.core.tenancy import Visibility
from apps.datasets.models import Dataset
from apps.training.models import Evaluation, Experiment, Run
from apps.training.services import CONFIG_FIELDS

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "step")


# --- experiments ---------------------------------------------------------------------------------


class ExperimentWriteSerializer(StrictSerializer):
    """An experiment's name and configuration; omitted options take their defaults on create."""

    name = serializers.CharField(max_length=200)
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

    def changes(self) -> dict:
        """Validated values keyed by the services' names (`dataset`, `val_dataset`, ...)."""
        data = dict(self.validated_data)
        for api, model in (("dataset_id", "dataset"), ("val_dataset_id", "val_dataset")):
            if api in data:
                data[model] = data.pop(api)
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

    class Meta:
        model = Experiment
        fields = [
            "id",
            "name",
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
    epochs = serializers.SerializerMethodField()
    started_at = serializers.SerializerMethodField()
    finished_at = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Run
        fields = [
            "id",
            "run_id",
            "experiment_id",
            "number",
            "status",
            "progress",
            "stop_requested",
            "error",
            "epochs",
            "epochs_completed",
            "best_epoch",
            "best_metric",
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
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_progress(self, obj) -> float:
        return float(obj.task.progress) if obj.task else 0.0

    def get_stop_requested(self, obj) -> bool:
        return bool(obj.task and obj.task.stop_requested)

    def get_error(self, obj) -> str:
        return obj.task.error if obj.task else "The run's task was deleted."

    def get_epochs(self, obj) -> int:
        return int((obj.config or {}).get("epochs") or 0)

    def get_started_at(self, obj) -> str | None:
        value = obj.task.started_at if obj.task else None
        return value.isoformat() if value else None

    def get_finished_at(self, obj) -> str | None:
        value = obj.task.finished_at if obj.task else None
        return value.isoformat() if value else None


class EpochMetricsSerializer(serializers.Serializer):
    epoch = serializers.IntegerField()
    loss = serializers.FloatField()
    accuracy = serializers.FloatField()
    val_loss = serializers.FloatField(allow_null=True)
    val_accuracy = serializers.FloatField(allow_null=True)
    learning_rate = serializers.FloatField(allow_null=True)
    seconds = serializers.FloatField()


class RunMetricsSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    status = serializers.CharField()
    epochs = serializers.IntegerField()
    epochs_completed = serializers.IntegerField()
    best_epoch = serializers.IntegerField(allow_null=True)
    best_metric = serializers.CharField(allow_null=True)
    best_value = serializers.FloatField(allow_null=True)
    history = EpochMetricsSerializer(many=True)


class RunDetailSerializer(RunSerializer):
    metrics = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "metrics"]
        read_only_fields = fields

    def get_metrics(self, obj) -> list[dict]:
        """Per-epoch metrics (as GET .../metrics `history`)."""
        from apps.training.selectors import run_metrics

        return run_metrics(run=obj)["history"]


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

    def get_progress(self, obj) -> float:
        return float(obj.task.progress) if obj.task else 0.0

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
    filename = serializers.CharField()
    true_class = serializers.IntegerField()
    true_label = serializers.CharField()
    predicted_class = serializers.IntegerField()
    predicted_label = serializers.CharField()
    confidence = serializers.FloatField()
    error = serializers.FloatField(help_text="1 - probability of the true class.")
    correct = serializers.BooleanField()
