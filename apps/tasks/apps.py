from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    label = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        # Declare the actors on the broker now: the in-process worker of the embedded mode and
        # `orchard_worker` both need them registered (django_dramatiq only autodiscovers
        # `actors` modules in its own `rundramatiq` command).
        from apps.tasks import actors  # noqa: F401
