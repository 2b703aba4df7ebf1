"""The embedded mode's in-process Dramatiq worker (a thread pool in the ASGI process), part of the
job engine.

Its broker lives in memory, so a restart forgets every message: when the worker starts, a sweeper
thread at once re-queues the active tasks whose heartbeat is stale and re-sends every queued task,
then runs the task sweeper every TASK_SWEEP_INTERVAL_S (`apps.tasks.runner.task_sweep`). torch
uses one thread here (TORCH_THREADS when set) so that the web server stays responsive.
"""

import logging
import threading

import dramatiq

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_worker: dramatiq.Worker | None = None
_sweeper: threading.Thread | None = None
_stop_sweeper = threading.Event()


def start_inprocess_worker(*, threads: int = 2) -> dramatiq.Worker:
    """Start (once) a worker consuming every declared queue of the in-memory broker."""
    global _worker, _sweeper
    with _lock:
        if _worker is None:
            _configure_torch()
            broker = dramatiq.get_broker()
            _worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
            _worker.start()
            _stop_sweeper.clear()
            _sweeper = threading.Thread(target=_sweep_loop, name="task-sweeper", daemon=True)
            _sweeper.start()
            threading.Thread(target=_warm_up, name="worker-warm-up", daemon=True).start()
            logger.info(
                "in-process worker started on queues %s", sorted(broker.get_declared_queues())
            )
        return _worker


def _configure_torch() -> None:
    try:
        from apps.tasks.threads import configure_torch_threads, torch_threads

        configure_torch_threads(torch_threads(1, default=1))
    except Exception:
        logger.warning("could not set torch's thread counts", exc_info=True)


def _sweep_loop() -> None:
    """Recover at once (the broker forgot its messages), then sweep on an interval."""
    from django.db import close_old_connections, connection

    from apps.tasks import runner, services

    recovered = False
    try:
        while True:
            close_old_connections()
            try:
                if recovered:
                    runner.task_sweep()
                else:
                    runner.task_sweep(resend_after_s=0)
                    recovered = True
            except Exception:
                logger.warning("task sweeper failed", exc_info=True)
            finally:
                close_old_connections()
            if _stop_sweeper.wait(services.setting("TASK_SWEEP_INTERVAL_S")):
                return
    finally:
        connection.close()


def _warm_up() -> None:
    try:
        from apps.tasks.threads import warm_up

        warm_up()
    except Exception:
        logger.warning("worker warm-up failed", exc_info=True)


def stop_inprocess_worker() -> None:
    global _worker, _sweeper
    with _lock:
        _stop_sweeper.set()
        if _sweeper is not None:
            _sweeper.join(timeout=30)
            _sweeper = None
        if _worker is not None:
            _worker.stop()
            _worker = None
