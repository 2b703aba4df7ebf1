"""RequestResult moves to the clusters app (#15) without moving data: the model leaves this app's
state only; clusters 0002 takes it over with the same table (`tasks_requestresult`)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0004_task_drop_cluster_dataset"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="RequestResult")],
            database_operations=[],
        ),
    ]
