"""The run's SSE stream over the real ASGI app: named events with `type`, ids from the stored
events, replay after Last-Event-ID, live relay from the task's group, and the end of the stream."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.accounts.services import token_pair_for
from apps.core.events import group_name
from apps.tasks import registry
from apps.tasks.context import TaskContext
from apps.tasks.models import Task
from apps.training import services
from apps.training.models import Run
from tests.conftest import client_for
from tests.training.conftest import create_experiment, start_run
from tests.training.sse import SSEClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

FAST = {"architecture": "mlp", "input_size": [64], "batch_size": 64}


def _setup_run(world, dataset, epochs=2):
    client = client_for(world.owner)
    exp = create_experiment(
        client, world.project, dataset_id=str(dataset.pk), epochs=epochs, **FAST
    )
    run = start_run(client, world.project, exp["id"])
    return (
        run["run_id"],
        token_pair_for(user=world.viewer)["access"],
        token_pair_for(user=world.outsider)["access"],
    )


def _context(run_id) -> TaskContext:
    task = Task.objects.get(pk=Run.objects.get(pk=run_id).task_id)
    return TaskContext(task, registry.get(services.TRAIN_KIND))


def _end_task(task_id, state: str) -> None:
    """What the job engine does when a handler returns: the task's end, then its state event."""
    from apps.tasks.services import _publish_state

    Task.objects.filter(pk=task_id).update(state=state)
    _publish_state(Task.objects.get(pk=task_id))


def _path(world, run_id, project=None):
    return f"/api/training/{(project or world.project).pk}/runs/{run_id}/stream"


async def test_replay_then_live_then_end_and_last_event_id(world, small_digits, stub_broker):
    train, _ = small_digits
    run_id, token, _ = await sync_to_async(_setup_run)(world, train)
    ctx = await sync_to_async(_context)(run_id)
    record = sync_to_async(ctx.record)
    await record("status", {"status": "running", "run_id": run_id, "epoch": 0})
    await record("epoch_end", {"run_id": run_id, "epoch": 1, "loss": 2.0, "accuracy": 0.4})

    sse = await SSEClient.open(_path(world, run_id), token=token)
    assert sse.status == 200 and sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers["cache-control"] == "no-cache"
    first = await sse.next_event()
    assert sse.retry == 2000
    assert (first.event, first.id) == ("status", None)
    assert first.data == {"type": "status", "run_id": run_id, "status": "pending", "progress": 0.0}
    replayed = [await sse.next_event(), await sse.next_event()]
    assert [(e.event, e.id) for e in replayed] == [("status", 1), ("epoch_end", 2)]
    assert replayed[1].data == {
        "type": "epoch_end",
        "seq": 2,
        "run_id": run_id,
        "epoch": 1,
        "loss": 2.0,
        "accuracy": 0.4,
    }

    # Live: recorded events (with ids), progress (a status without id), then the end.
    await record("epoch_end", {"run_id": run_id, "epoch": 2, "loss": 1.0, "accuracy": 0.7})
    live = await sse.next_event()
    assert (live.event, live.id, live.data["epoch"]) == ("epoch_end", 3, 2)
    await get_channel_layer().group_send(
        group_name("task", ctx.task.pk),
        {"type": "orchard.event", "event": {"type": "progress", "progress": 0.5, "epoch": 3}},
    )
    progress = await sse.next_event()
    assert (progress.event, progress.id) == ("status", None)
    assert progress.data == {
        "type": "status",
        "run_id": run_id,
        "status": "running",
        "progress": 0.5,
        "epoch": 3,
    }
    await record("complete", {"status": "completed", "run_id": run_id, "best_epoch": 2})
    end = await sse.next_event()
    assert (end.event, end.id, end.data["type"]) == ("complete", 4, "complete")
    # The handler records its final event just before the engine ends the task: the stream stays
    # open until then, so a client reading the run when it closes finds it completed.
    await get_channel_layer().group_send(
        group_name("task", ctx.task.pk),
        {"type": "orchard.event", "event": {"type": "progress", "progress": 1.0}},
    )
    assert (await sse.next_event()).data["progress"] == 1.0 and not sse.finished
    await sync_to_async(_end_task)(ctx.task.pk, "finished")
    assert await sse.next_event() is None and sse.finished
    await sse.close()

    # A client that saw id 2 gets 3 and 4, then the end.
    again = await SSEClient.open(_path(world, run_id), token=token, last_event_id=2)
    events = await again.events_until_end()
    assert [(e.event, e.id) for e in events] == [("epoch_end", 3), ("complete", 4)]
    await again.close()
    # One that saw everything learns the final status and the stream ends.
    done = await SSEClient.open(_path(world, run_id), token=token, last_event_id=4)
    events = await done.events_until_end()
    assert [(e.event, e.id, e.data["status"]) for e in events] == [("complete", None, "completed")]
    await done.close()


async def test_stopping_a_pending_run_ends_the_stream(world, small_digits, stub_broker):
    train, _ = small_digits
    run_id, token, _ = await sync_to_async(_setup_run)(world, train)
    sse = await SSEClient.open(_path(world, run_id), token=token, query=f"token={token}")
    assert (await sse.next_event()).data["status"] == "pending"
    run = await sync_to_async(Run.objects.select_related("task").get)(pk=run_id)
    await sync_to_async(services.run_stop)(run=run)
    events = await sse.events_until_end()
    assert [(e.event, e.data["status"]) for e in events] == [("status", "cancelled")]
    await sse.close()


async def test_a_failed_run_answers_its_error(world, small_digits, stub_broker):
    train, _ = small_digits
    run_id, token, _ = await sync_to_async(_setup_run)(world, train)
    await sync_to_async(Task.objects.filter(run_task_filter(run_id)).update)(
        state="failed", error="Worker lost 3 times."
    )
    sse = await SSEClient.open(_path(world, run_id), token=token)
    events = await sse.events_until_end()
    assert [(e.event, e.data["status"]) for e in events] == [
        ("status", "failed"),
        ("error", "failed"),
    ]
    assert events[1].data["message"] == "Worker lost 3 times."
    await sse.close()


def run_task_filter(run_id):
    from django.db.models import Q

    return Q(studio_run__id=run_id)


async def test_auth_tenancy_and_bad_last_event_id(world, small_digits, stub_broker):
    train, _ = small_digits
    run_id, token, foreign = await sync_to_async(_setup_run)(world, train)
    for kwargs, status in (
        ({}, 401),
        ({"token": foreign}, 404),
        ({"token": token, "last_event_id": "abc"}, 422),
        ({"token": token, "last_event_id": -1}, 422),
    ):
        sse = await SSEClient.open(_path(world, run_id), **kwargs)
        assert sse.status == status, (kwargs, await sse.body())
        body = await sse.body()
        assert '"status":"error"' in body.replace(" ", "")
        await sse.close()
    # The foreign user's own project in the URL does not help either.
    sse = await SSEClient.open(_path(world, run_id, world.other_project), token=foreign)
    assert sse.status == 404
    await sse.body()
    await sse.close()
    # ?token= works for EventSource clients.
    sse = await SSEClient.open(_path(world, run_id), query=f"token={token}")
    assert sse.status == 200
    await sse.next_event()
    await sse.close()


async def test_a_real_run_streams_to_its_end(world, small_digits, stub_worker, settings):
    settings.TASK_EVENT_INTERVAL_S = 0.05
    train, _ = small_digits
    run_id, token, _ = await sync_to_async(_setup_run)(world, train, 3)
    sse = await SSEClient.open(_path(world, run_id), token=token)
    events = await sse.events_until_end(timeout=60)
    await sse.close()
    named = [e for e in events if e.id is not None]
    assert [e.event for e in named] == ["status", "epoch_end", "epoch_end", "epoch_end", "complete"]
    assert [e.id for e in named] == [1, 2, 3, 4, 5]
    assert [e.data["epoch"] for e in named[1:4]] == [1, 2, 3]
    assert all(e.data["type"] == e.event for e in events)
    assert named[-1].data["status"] == "completed" and named[-1].data["epochs_completed"] == 3


async def test_an_id_from_the_future_does_not_hide_new_events(world, small_digits, stub_broker):
    train, _ = small_digits
    run_id, token, _ = await sync_to_async(_setup_run)(world, train)
    ctx = await sync_to_async(_context)(run_id)
    record = sync_to_async(ctx.record)
    await record("status", {"status": "running", "run_id": run_id, "epoch": 0})
    sse = await SSEClient.open(_path(world, run_id), token=token, last_event_id=99)
    await sse.wait_live()
    await record("epoch_end", {"run_id": run_id, "epoch": 1, "loss": 1.0, "accuracy": 0.5})
    event = await sse.next_event()
    assert (event.event, event.id) == ("epoch_end", 2)
    await record("error", {"status": "failed", "run_id": run_id, "message": "boom"})
    await sync_to_async(_end_task)(ctx.task.pk, "failed")
    events = await sse.events_until_end()
    assert [(e.event, e.id, e.data["message"]) for e in events] == [("error", 3, "boom")]
    await sse.close()
