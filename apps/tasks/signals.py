"""Signals of the job engine, so that domain apps can hook into it without the engine importing
them."""

from django.dispatch import Signal

# Sent by `orchard_worker` before it starts consuming its queue (no arguments besides `sender`):
# the clusters app refreshes its Host rows from this machine's devices then. A receiver that
# raises is logged and does not stop the worker.
worker_starting = Signal()
