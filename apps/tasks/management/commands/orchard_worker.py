"""Run a task worker for one host queue.

    python manage.py orchard_worker --queue cpu [--threads 1] [--stale-after 60] [--reap-every 15]

One process per device: `--queue cpu` for the CPU, `--queue gpu-0` for the first GPU, and so on
(the queue names are the host ids of `GET /api/hosts`). GPU queues take one message at a time.
The worker re-queues tasks whose worker died (stale heartbeat) when it starts and every
`--reap-every` seconds, polls the broker every 100 ms (Dramatiq's default is 1 s), and stops
gracefully on SIGTERM/SIGINT (running tasks finish; a SIGKILLed worker's task is resumed from its
last checkpoint by the next reaper run).
"""

import logging
import signal
import threading

import dramatiq
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from apps.tasks import services

logger = logging.getLogger("apps.tasks.worker")
QUEUE_RE = r"^[a-z][a-z0-9-]{0,31}$"


class Command(BaseCommand):
    help = "Run a Dramatiq worker for one host queue (cpu, gpu-0, ...) with the stale-task reaper."

    def add_arguments(self, parser):
        parser.add_argument("--queue", default="cpu", help="host queue to serve (default: cpu)")
        parser.add_argument(
            "--threads", type=int, default=1, help="worker threads (default 1; GPU queues: 1)"
        )
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="seconds without heartbeat before a task counts as lost "
            "(default: TASK_HEARTBEAT_STALE_S, 60)",
        )
        parser.add_argument(
            "--reap-every", type=float, default=15.0, help="seconds between reaper runs"
        )
        parser.add_argument(
            "--worker-timeout", type=int, default=100, help="broker poll interval in ms"
        )

    def handle(self, *args, queue, threads, stale_after, reap_every, worker_timeout, **options):
        import re

        from apps.tasks import actors  # noqa: F401  (declares the actors on the broker)

        if not re.match(QUEUE_RE, queue):
            raise CommandError(f"bad queue name {queue!r}")
        is_gpu = queue != "cpu"
        if is_gpu:
            threads = 1
        broker = dramatiq.get_broker()
        # What the dramatiq CLI does at boot: starts the TimeLimit middleware's watchdog.
        broker.emit_after("process_boot")
        stop = threading.Event()

        def on_signal(signum, frame):
            logger.info("signal %s: stopping the worker", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        try:
            from apps.clusters.services import host_refresh

            host_refresh()
        except Exception:
            logger.warning("could not refresh hosts", exc_info=True)
        self._reap(stale_after)
        from apps.tasks.handlers import warm_up

        warm_up()
        broker.declare_queue(queue)
        worker = dramatiq.Worker(
            broker, queues={queue}, worker_threads=max(1, threads), worker_timeout=worker_timeout
        )
        if is_gpu or threads == 1:
            worker.queue_prefetch = 1
        worker.start()
        self.stdout.write(f"orchard worker: queue={queue} threads={threads}", ending="\n")
        self.stdout.flush()
        try:
            while not stop.wait(reap_every):
                self._reap(stale_after)
        finally:
            worker.stop()
            broker.close()

    def _reap(self, stale_after):
        close_old_connections()
        try:
            requeued = services.task_requeue_stale(older_than_s=stale_after)
            if requeued:
                logger.warning("re-queued %d stale task(s): %s", len(requeued), requeued)
        except Exception:
            logger.exception("stale-task reaper failed")
        finally:
            close_old_connections()
