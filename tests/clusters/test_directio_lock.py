"""Leaving DIRECT mode while a write-back is in flight: the write-back holds the runtime's lock
while it bumps the cluster row's version, so `cluster_set_mode` must not wait for that lock while
it holds the row (it did: a deadlock, a 20 s stall and "database is locked" on SQLite, a hang on
PostgreSQL). The interleaving is forced with events, not timing."""

import threading

import pytest
from django.db import connection

from apps.clusters import directio, runtime, services
from apps.clusters.models import ClusterMode
from tests.clusters.helpers import make_cluster

pytestmark = pytest.mark.django_db(transaction=True)


def test_leaving_direct_mode_while_a_write_back_holds_the_runtime(world, monkeypatch):
    cluster = make_cluster(world.project, world.member)
    cluster = services.cluster_set_mode(cluster=cluster, mode=ClusterMode.DIRECT)
    rt = directio.runtime_open(cluster)
    rt.dirty = True
    in_store, close_called, go = threading.Event(), threading.Event(), threading.Event()
    real_store, real_close = runtime.cluster_store_weights, directio.runtime_close

    def store(*args, **kwargs):  # the write-back, inside the runtime's lock
        in_store.set()
        go.wait(30)
        return real_store(*args, **kwargs)

    def close(*args, **kwargs):
        close_called.set()  # before: the row was already locked here
        return real_close(*args, **kwargs)

    monkeypatch.setattr(runtime, "cluster_store_weights", store)
    monkeypatch.setattr(directio, "runtime_close", close)
    errors = []

    def run(fn):
        try:
            fn()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    flusher = threading.Thread(target=run, args=(rt.flush,))
    flusher.start()
    assert in_store.wait(30)
    switcher = threading.Thread(
        target=run,
        args=(lambda: services.cluster_set_mode(cluster=cluster, mode=ClusterMode.TASK),),
    )
    switcher.start()
    assert close_called.wait(30)
    go.set()
    flusher.join(60)
    switcher.join(60)
    assert not flusher.is_alive() and not switcher.is_alive(), "deadlocked"
    assert errors == []
    cluster.refresh_from_db()
    assert cluster.mode == ClusterMode.TASK and cluster.version >= 1
    assert directio.runtime_get(str(cluster.pk)) is None
