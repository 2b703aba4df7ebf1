"""The embedded mode's in-process Dramatiq worker (a thread pool in the ASGI process)."""

import logging
import threading

import dramatiq

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_worker: dramatiq.Worker | None = None


def start_inprocess_worker(*, threads: int = 2) -> dramatiq.Worker:
    """Start (once) a worker consuming every declared queue of the in-memory broker."""
    global _worker
    with _lock:
        if _worker is None:
            broker = dramatiq.get_broker()
            _worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
            _worker.start()
            threading.Thread(target=_warm_up, name="worker-warm-up", daemon=True).start()
            logger.info(
                "in-process worker started on queues %s", sorted(broker.get_declared_queues())
            )
        return _worker


def _warm_up() -> None:
    try:
        from apps.tasks.handlers import warm_up

        warm_up()
    except Exception:
        logger.warning("worker warm-up failed", exc_info=True)


def stop_inprocess_worker() -> None:
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None
