"""Run a task worker for one host queue.

    python manage.py orchard_worker --queue cpu [--threads 1] [--stale-after 60] [--reap-every 15]

One process per device: `--queue cpu` for the CPU, `--queue gpu-0` for the first GPU, and so on
(the queue names are the host ids of `GET /api/hosts`). GPU queues take one message at a time.
The worker runs the task sweeper (`runner.task_sweep`: re-queues tasks whose worker died, re-sends
queued tasks whose message was lost) when it starts and every `--reap-every` seconds
(TASK_SWEEP_INTERVAL_S, 15), and polls the broker every 100 ms (Dramatiq's default is 1 s).
torch uses TORCH_THREADS threads (default: the cores this process may use / worker threads).
On SIGTERM/SIGINT it stops: running tasks stop at their next step, keep their resume checkpoint
and are re-queued at once without counting the attempt; a SIGKILLed worker's task is resumed
from its last checkpoint by the next sweeper run (stale heartbeat).
"""

import logging
import signal
import threading

import dramatiq
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from apps.tasks import context, runner, services

logger = logging.getLogger("apps.tasks.worker")
QUEUE_RE = r"^[a-z][a-z0-9-]{0,31}$"
_booted = False


class Command(BaseCommand):
    help = "Run a Dramatiq worker for one host queue (cpu, gpu-0, ...) with the task sweeper."

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
            "--reap-every",
            type=float,
            default=None,
            help="seconds between sweeper runs (default: TASK_SWEEP_INTERVAL_S, 15)",
        )
        parser.add_argument(
            "--worker-timeout", type=int, default=100, help="broker poll interval in ms"
        )

    def handle(self, *args, queue, threads, stale_after, reap_every, worker_timeout, **options):
        import re

        from apps.tasks import actors  # noqa: F401  (declares the actors on the broker)
        from apps.tasks.threads import configure_torch_threads, torch_threads

        global _booted
        if not re.match(QUEUE_RE, queue):
            raise CommandError(f"bad queue name {queue!r}")
        is_gpu = queue != "cpu"
        if is_gpu:
            threads = 1
        threads = max(1, threads)
        if reap_every is None:
            reap_every = services.setting("TASK_SWEEP_INTERVAL_S")
        torch_count = configure_torch_threads(torch_threads(threads))
        broker = dramatiq.get_broker()
        if not _booted:
            # What the dramatiq CLI does at boot: starts the TimeLimit middleware's watchdog.
            broker.emit_after("process_boot")
            _booted = True
        stop = threading.Event()

        def on_signal(signum, frame):
            logger.info("signal %s: stopping the worker; running tasks are re-queued", signum)
            context.worker_shutdown()
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        worker = None
        try:
            from apps.tasks.signals import worker_starting

            for receiver, answer in worker_starting.send_robust(sender=self.__class__):
                if isinstance(answer, Exception):
                    logger.warning("worker start hook %r failed", receiver, exc_info=answer)
            self._sweep(stale_after)
            from apps.tasks.threads import warm_up

            warm_up()
            broker.declare_queue(queue)
            worker = dramatiq.Worker(
                broker, queues={queue}, worker_threads=threads, worker_timeout=worker_timeout
            )
            if is_gpu or threads == 1:
                worker.queue_prefetch = 1
            worker.start()
            self.stdout.write(
                f"orchard worker: queue={queue} threads={threads} torch_threads={torch_count}",
                ending="\n",
            )
            self.stdout.flush()
            while not stop.wait(reap_every):
                self._sweep(stale_after)
        finally:
            context.worker_shutdown()
            if worker is not None:
                worker.stop()  # waits for the running tasks (they stop at their next step)
            broker.close()
            context.worker_shutdown(False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _sweep(self, stale_after):
        close_old_connections()
        try:
            runner.task_sweep(stale_after_s=stale_after)
        except Exception:
            logger.exception("task sweeper failed")
        finally:
            close_old_connections()
