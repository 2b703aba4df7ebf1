"""Live events of one task: `ws/projects/<project_id>/tasks/<task_id>`.

On connect the socket sends the task's current state, then the stored events (epoch metrics) so a
reconnecting client catches up (the newest REPLAY_LIMIT, in order; `?after=<seq>` replays only the
events after the last one the client saw), then relays every event published to the task's group. Every
WEBSOCKET_RECHECK_S the caller's rights are re-checked (see `apps.core.consumers`): a socket whose
user left the project, or whose task is no longer visible to them, is closed (4404/4401).
"""

from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from apps.core.consumers import ProjectScopedConsumer
from apps.core.events import group_name
from apps.core.tenancy import ProjectAccess
from apps.tasks.models import Task, TaskEvent

REPLAY_LIMIT = 1000


class TaskEventsConsumer(ProjectScopedConsumer):
    """Relays a task's `orchard.event` messages; clients only listen."""

    task: Task

    def authorize(self, access: ProjectAccess) -> None:
        task_id = self.scope["url_route"]["kwargs"].get("task_id")
        self.task = Task.objects.get_visible(access, pk=task_id)
        self.group = group_name("task", self.task.pk)

    def reauthorize(self, access: ProjectAccess) -> None:
        Task.objects.get_visible(access, pk=self.task.pk)

    async def on_open(self) -> None:
        await self.channel_layer.group_add(self.group, self.channel_name)
        state, events = await database_sync_to_async(self._snapshot)()
        await self.send_json(state)
        for event in events:
            await self.send_json(event)

    def _snapshot(self):
        from apps.tasks.services import task_state_event

        task = Task.objects.get(pk=self.task.pk)
        rows = TaskEvent.objects.filter(task=task, seq__gt=self._after()).order_by("-seq")
        events = [
            {"type": e.kind, "task_id": str(task.pk), "seq": e.seq, "replay": True, **e.data}
            for e in reversed(rows[:REPLAY_LIMIT])
        ]
        return task_state_event(task), events

    def _after(self) -> int:
        """`?after=<seq>`: the last stored event the client already has (0: none)."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        value = (query.get("after") or ["0"])[0]
        return int(value) if value.isdigit() and len(value) < 19 else 0

    async def disconnect(self, code) -> None:
        group = getattr(self, "group", None)
        if group and self.channel_layer is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients may send {"type": "ping"}; anything else is ignored."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def orchard_event(self, message) -> None:
        await self.send_json(message["event"])
