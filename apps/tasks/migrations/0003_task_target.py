"""The engine's generic target (#15): a task names the row it works on by `target_type` (an
"app_label.model" string) and `target_id`, instead of a foreign key to clusters.

Existing tasks of a cluster get the cluster as their target; `cluster_id` is dropped in 0004, once
the datasets app has taken over the dataset links (datasets 0002).
"""

from django.db import migrations, models
from django.db.models import F

CLUSTER_TARGET = "clusters.cluster"


def cluster_to_target(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    Task.objects.filter(cluster__isnull=False).update(
        target_type=CLUSTER_TARGET, target_id=F("cluster_id")
    )


def target_to_cluster(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    Cluster = apps.get_model("clusters", "Cluster")
    targeted = Task.objects.filter(target_type=CLUSTER_TARGET)
    # Only ids of clusters that still exist (a cluster's tasks go with it, but be safe).
    targeted.filter(target_id__in=Cluster.objects.values("pk")).update(cluster_id=F("target_id"))


class Migration(migrations.Migration):
    dependencies = [
        ("clusters", "0001_initial"),
        ("tasks", "0002_task_sent_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="target_type",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AddField(
            model_name="task",
            name="target_id",
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.RunPython(cluster_to_target, target_to_cluster),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                fields=["target_type", "target_id", "sequence"],
                name="tasks_task_target__8a8365_idx",
            ),
        ),
    ]
