"""The engine forgets clusters and datasets (#15): their data moved to the target fields (0003)
and to datasets' TaskDataset (datasets 0002)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0002_taskdataset"),
        ("tasks", "0003_task_target"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="tasks_task_cluster_bb5778_idx",
        ),
        migrations.RemoveField(
            model_name="task",
            name="cluster",
        ),
        migrations.RemoveField(
            model_name="task",
            name="dataset",
        ),
    ]
