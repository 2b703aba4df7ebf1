"""glibc malloc settings of processes that train (`ml.memory`), checked in fresh interpreters:
malloc's thresholds are process state that the test process has already moved."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Where glibc puts a fresh 16 MiB block: below the heap's break (its heap) or in a mapping of its
# own (above the default 128 KiB mmap threshold).
PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    from ml.memory import keep_freed_memory
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_ssize_t]
    libc.free.argtypes = [ctypes.c_void_p]
    kept = keep_freed_memory() if sys.argv[1] == "tune" else None
    block = libc.malloc(16 << 20)
    from_heap = block < libc.sbrk(0)
    libc.free(block)
    print(json.dumps({"kept": kept, "from_heap": from_heap}))
    """
)


def _probe(mode: str, **env) -> dict:
    import json

    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) is what is tuned"
)


def test_blocks_up_to_32_mib_come_from_the_heap_once_tuned():
    assert _probe("default") == {"kept": None, "from_heap": False}  # glibc's own: a mapping
    assert _probe("tune") == {"kept": True, "from_heap": True}


def test_malloc_tunables_given_in_the_environment_win():
    clean = {"MALLOC_MMAP_THRESHOLD_": "", "MALLOC_TRIM_THRESHOLD_": "", "GLIBC_TUNABLES": ""}
    assert _probe("tune", **{**clean, "MALLOC_MMAP_THRESHOLD_": "131072"}) == {
        "kept": False,
        "from_heap": False,
    }
    assert (
        _probe("tune", **{**clean, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})["kept"]
        is False
    )


def test_a_worker_process_tunes_malloc_unless_the_setting_is_off(settings, monkeypatch):
    """Both worker paths (`orchard_worker` and the embedded in-process worker) configure torch
    through `configure_torch_threads`, which applies MALLOC_TUNING first."""
    from apps.tasks import threads

    calls = []
    monkeypatch.setattr("ml.memory.keep_freed_memory", lambda: calls.append(1) or True)
    threads.configure_torch_threads(1)
    assert calls == [1]
    settings.MALLOC_TUNING = False
    threads.configure_torch_threads(1)
    assert calls == [1]
