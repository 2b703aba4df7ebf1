"""Dramatiq actors of the job engine: thin wrappers that hand a task id to the task service.

One actor serves every host queue: `services.task_enqueue` sends its messages to the task's queue
("cpu", "gpu-0", ...). Dramatiq retries nothing (`max_retries=0`): lost workers and lost messages
are handled by the task service's sweeper. The time limit set here is a fallback; each message
carries its kind's limit (`registry.register(..., time_limit_s=...)`). `token` identifies the
message (the row's `sent_at`); older messages without one are accepted.
"""

import dramatiq

from apps.tasks import runner

DEFAULT_TIME_LIMIT_MS = 6 * 3600 * 1000


@dramatiq.actor(queue_name="cpu", max_retries=0, time_limit=DEFAULT_TIME_LIMIT_MS)
def run_task(task_id: str, token: str | None = None) -> None:
    runner.task_run(task_id, token=token)
