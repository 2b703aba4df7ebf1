from rest_framework import serializers

from apps.accounts.models import Membership, Project, User
from apps.core.api.serializers import StrictModelSerializer, StrictSerializer
from apps.core.tenancy import Role

# The task types of the studio plan (plan/02-data-layer/00-storage-layout.md, project.json).
PLAN_TASKS = (
    "classification",
    "anomaly_detection",
    "object_detection",
    "oriented_object_detection",
    "segmentation",
    "instance_segmentation",
    "regression",
)
# The ones a project may be created with: the studio trains and evaluates classification only.
TRAINABLE_TASKS = ("classification",)


def validate_task(value: str) -> str:
    """The plan's VALIDATION_ERROR (422) for a task the plan does not know, and for one this
    server cannot train (every plan task but classification), with a message saying which."""
    if value in TRAINABLE_TASKS:
        return value
    if value in PLAN_TASKS or value in Project.Task.values:
        raise serializers.ValidationError(
            f"Task '{value}' cannot be trained on this server: the training studio trains and "
            f"evaluates {', '.join(TRAINABLE_TASKS)} only."
        )
    raise serializers.ValidationError(f"'{value}' is not a task (tasks: {', '.join(PLAN_TASKS)}).")


class ProjectSerializer(StrictModelSerializer):
    task = serializers.CharField(
        max_length=32,
        required=False,
        default="classification",
        validators=[validate_task],
        help_text="classification (the plan's other tasks are refused: they cannot be trained).",
    )

    class Meta:
        model = Project
        fields = ["id", "name", "task", "created_at"]
        read_only_fields = ["id", "created_at"]
        # The length as sent is checked (the schema's maxLength), then blanks around it go.
        extra_kwargs = {"name": {"max_length": 200, "trim_whitespace": False}}

    def validate_name(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value


class ProjectUpdateSerializer(StrictModelSerializer):
    task = serializers.CharField(max_length=32, required=False, validators=[validate_task])

    class Meta:
        model = Project
        fields = ["name", "task"]
        extra_kwargs = {"name": {"required": False}}


class UserSerializer(StrictModelSerializer):
    is_admin = serializers.BooleanField(source="is_superuser", read_only=True)
    # Not an EmailField: the address may be empty, which is no valid `format: email`.
    email = serializers.CharField(read_only=True, help_text="Email address, or empty.")

    class Meta:
        model = User
        fields = [
            "username",
            "name",
            "email",
            "is_admin",
            "is_service_account",
            "is_active",
            "date_joined",
            "last_login",
        ]
        read_only_fields = fields


class UserCreateSerializer(StrictSerializer):
    username = serializers.RegexField(r"^[a-zA-Z][a-zA-Z0-9_.@+-]{0,149}$")
    password = serializers.CharField(write_only=True, max_length=128)
    name = serializers.CharField(required=False, allow_blank=True, max_length=150, default="")
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    is_admin = serializers.BooleanField(required=False, default=False)
    is_service_account = serializers.BooleanField(required=False, default=False)


class UserUpdateSerializer(StrictSerializer):
    password = serializers.CharField(write_only=True, required=False, max_length=128)
    name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True)
    is_admin = serializers.BooleanField(required=False)
    is_active = serializers.BooleanField(required=False)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    name = serializers.CharField(source="user.name", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "name", "role", "is_project_admin", "created_at"]
        read_only_fields = fields


class MembershipWriteSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    is_project_admin = serializers.BooleanField(default=False)


class MembershipUpdateSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_project_admin = serializers.BooleanField(required=False)


class TokenObtainSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True)
    project_id = serializers.CharField(max_length=64, required=False)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    project_id = serializers.CharField(allow_null=True)
    user = UserSerializer(required=False)


class RefreshSerializer(StrictSerializer):
    refresh = serializers.CharField()


class ProjectSwitchSerializer(StrictSerializer):
    project_id = serializers.CharField(max_length=64)
