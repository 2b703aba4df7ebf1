"""How many threads torch uses in a worker process.

A worker process runs `worker_threads` tasks at once; each gets its share of the cores this
process may use (`os.sched_getaffinity`), at least one, unless TORCH_THREADS (else OpenMP's own
OMP_NUM_THREADS) fixes the number. The worker set torch's count over an OMP_NUM_THREADS=1 given to
it: two worker processes on two cores ran two torch threads each, whose idle spinning cost a
request task 10-30 ms of CPU.
The embedded mode's in-process worker uses one thread so that the web server stays responsive.

A process that runs tasks also keeps the memory its training steps free (`ml.memory`, setting
MALLOC_TUNING): with glibc's defaults, an epoch took 1.4 s or 2.7-3.6 s depending on the state of
malloc's thresholds when it started.
"""

import logging
import os

from apps.core.conf import setting

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads(worker_threads: int, *, default: int | None = None) -> int:
    """TORCH_THREADS when set, else `default`, else OMP_NUM_THREADS when set, else the usable
    cores / worker threads (>= 1)."""
    configured = setting("TORCH_THREADS")
    if configured is not None:
        return max(1, int(configured))
    if default is not None:
        return max(1, default)
    openmp = setting("OMP_NUM_THREADS")
    if openmp is not None:
        return max(1, int(openmp))
    return max(1, usable_cores() // max(1, worker_threads))


def configure_torch_threads(threads: int) -> int:
    """Set torch's intra-op and inter-op thread counts for this process; returns `threads`.

    The inter-op count can only be set before torch's first parallel work: later it stays.
    """
    import torch

    configure_malloc()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        logger.debug("torch inter-op threads already fixed at %s", torch.get_num_interop_threads())
    return threads


def configure_malloc() -> bool:
    """MALLOC_TUNING: glibc keeps the blocks a training step frees (`ml.memory`); returns
    whether it took the settings."""
    if not setting("MALLOC_TUNING"):
        return False
    from ml.memory import keep_freed_memory

    return keep_freed_memory()


def warm_up() -> None:
    """Pay torch's lazy imports (the first optimizer pulls in torch._dynamo, seconds) when a
    worker starts, not in its first task."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)]).step()
