"""RequestResult moves here from the tasks app (#15) without moving data: the model enters this
app's state on its old table (`tasks_requestresult`), which tasks 0005 left in place."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("clusters", "0001_initial"),
        ("datasets", "0001_initial"),
        ("tasks", "0005_requestresult_to_clusters"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="RequestResult",
                    fields=[
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "visibility",
                            models.CharField(
                                choices=[
                                    ("private", "Private (owner and project admins)"),
                                    ("shared", "Shared (every member)"),
                                ],
                                default="shared",
                                max_length=16,
                            ),
                        ),
                        (
                            "id",
                            models.UUIDField(editable=False, primary_key=True, serialize=False),
                        ),
                        ("name", models.CharField(max_length=200)),
                        ("num_samples", models.PositiveIntegerField(default=0)),
                        ("shape", models.JSONField(blank=True, default=list)),
                        ("has_logits", models.BooleanField(default=False)),
                        ("summary", models.JSONField(blank=True, default=dict)),
                        (
                            "cluster",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="clusters.cluster",
                            ),
                        ),
                        (
                            "dataset",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="datasets.dataset",
                            ),
                        ),
                        (
                            "owner",
                            models.ForeignKey(
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "project",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="accounts.project",
                            ),
                        ),
                        (
                            "task",
                            models.OneToOneField(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="request_result",
                                to="tasks.task",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "tasks_requestresult",
                        "ordering": ["-created_at"],
                    },
                ),
            ],
        ),
    ]
