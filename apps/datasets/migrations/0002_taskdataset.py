"""The dataset a task reads moves from the engine's `Task.dataset` to datasets' TaskDataset (#15):
one row per task that had a dataset, copied before tasks 0004 drops the column."""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 1000


def copy_links(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    TaskDataset = apps.get_model("datasets", "TaskDataset")
    rows = Task.objects.filter(dataset__isnull=False).values_list("pk", "dataset_id")
    batch = []
    for task_id, dataset_id in rows.iterator(chunk_size=BATCH):
        batch.append(TaskDataset(task_id=task_id, dataset_id=dataset_id))
        if len(batch) >= BATCH:
            TaskDataset.objects.bulk_create(batch)
            batch = []
    TaskDataset.objects.bulk_create(batch)


def copy_links_back(apps, schema_editor):
    Task = apps.get_model("tasks", "Task")
    TaskDataset = apps.get_model("datasets", "TaskDataset")
    links = TaskDataset.objects.filter(dataset__isnull=False).values_list("task_id", "dataset_id")
    for task_id, dataset_id in links.iterator(chunk_size=BATCH):
        Task.objects.filter(pk=task_id).update(dataset_id=dataset_id)


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0001_initial"),
        ("tasks", "0003_task_target"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskDataset",
            fields=[
                (
                    "task",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="dataset_link",
                        serialize=False,
                        to="tasks.task",
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
            ],
        ),
        migrations.RunPython(copy_links, copy_links_back),
    ]
