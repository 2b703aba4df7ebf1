"""The direct-io runtime: a cluster in DIRECT mode, loaded once, answering messages from memory.

Surfaces (the Hanami socket, the main API's io socket) call `runtime_open(cluster)` once per
connection (database reads happen there, off the hot path), then `runtime.request(...)` and
`runtime.train(...)` per message: a forward pass or one optimisation step on the in-memory
module, with no database and no channel layer. Weights go back to the cluster's file
(`cluster_store_weights`, which bumps its version) when the last connection closes, when the
cluster leaves DIRECT mode, and at most every `DIRECTIO_FLUSH_INTERVAL_S` while training.

The interface is deliberately small (open / request / train / flush / close) so the runtime can
move out of the ASGI process into a GPU worker behind the same calls.

One runtime per cluster per process; a lock serialises the steps of all its connections. Request
messages of several sockets to one runtime are stacked into shared forward passes
(`RequestBatcher`), run off the event loop for big models and GPUs.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.core.conf import number_setting, setting
from apps.core.exceptions import Conflict, ValidationFailed

if TYPE_CHECKING:
    import torch

    from apps.clusters.models import Cluster

logger = logging.getLogger(__name__)

# Models up to this many parameters run on the event loop (a forward pass of the seed 784-400-10
# network takes ~50 us; a thread hop would cost more than the work). Bigger ones use a thread.
INLINE_MAX_PARAMETERS = 2_000_000


class RuntimeClosed(Conflict):
    """The cluster left DIRECT mode (or was deleted) while a connection was open."""


@dataclass
class DirectRuntime:
    cluster_id: str
    project_id: str
    model: Any
    device: Any
    inputs: dict[str, int]
    outputs: dict[str, int]
    input_scale: float
    learning_rate: float
    parameters: int
    connections: int = 0
    closed: bool = False
    dirty: bool = False
    steps: int = 0
    last_flush: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _optimizer: Any = None
    _batchers: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    @property
    def inline(self) -> bool:
        return self.parameters <= INLINE_MAX_PARAMETERS and self.device.type == "cpu"

    # -- validation ---------------------------------------------------------------------------
    def check_values(self, kind: str, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """(batch, size) float32 arrays per brick, or ValidationFailed naming the problem."""
        sizes = self.inputs if kind == "input" else self.outputs
        if values.keys() != sizes.keys():
            unknown = sorted(set(values) - set(sizes))
            if unknown:
                raise ValidationFailed(
                    f"Unknown {kind} brick(s): {', '.join(unknown)} (expected {', '.join(sizes)})."
                )
            missing = sorted(set(sizes) - set(values))
            raise ValidationFailed(f"Missing values for {kind} brick(s): {', '.join(missing)}.")
        arrays: dict[str, np.ndarray] = {}
        batch = None
        limit = max_batch()
        for name, raw in values.items():
            try:
                array = np.asarray(raw, dtype=np.float32)
            except (ValueError, TypeError, OverflowError):  # OverflowError: an int past float
                raise ValidationFailed(
                    f"Brick {name!r}: values must be a list of numbers."
                ) from None
            size = sizes[name]
            if array.ndim == 1:
                if array.size == 0 or array.size % size:
                    raise ValidationFailed(
                        f"Brick {name!r} takes {size} values per sample, got {array.size}."
                    )
                array = array.reshape(-1, size)
            if array.ndim != 2 or array.shape[1] != size:
                raise ValidationFailed(f"Brick {name!r} takes {size} values per sample.")
            if not _all_finite(array):
                raise ValidationFailed(f"Brick {name!r}: values must be finite numbers.")
            if array.shape[0] > limit:
                raise ValidationFailed(f"At most {limit} samples per message.")
            if batch is not None and array.shape[0] != batch:
                raise ValidationFailed("Every brick must carry the same number of samples.")
            batch = array.shape[0]
            arrays[name] = array
        return arrays

    # -- work ---------------------------------------------------------------------------------
    def _tensors(self, arrays: Mapping[str, np.ndarray], scale: float) -> dict[str, torch.Tensor]:
        import torch

        out = {}
        for name, array in arrays.items():
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array, dtype=np.float32, order="C")  # frames are read-only
            tensor = torch.from_numpy(array)
            if scale != 1.0:
                tensor = tensor * scale
            out[name] = tensor.to(self.device, non_blocking=True)
        return out

    def _forward_input(self, x: dict[str, torch.Tensor]):
        """One input brick: a plain tensor (and a plain tensor back); several: the dict."""
        return next(iter(x.values())) if len(self.inputs) == 1 else x

    def request(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the network on one message; softmax scores per output brick, (batch, size)."""
        return self._scores(self.check_values("input", inputs))

    def _scores(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The softmax scores of one forward pass over checked (batch, size) arrays."""
        import torch

        with self.lock:
            self._ensure_open()
            if self.model.training:  # after a train step; eval() walks every module
                self.model.eval()
            with torch.inference_mode():
                out = self.model(self._forward_input(self._tensors(arrays, self.input_scale)))
            if not isinstance(out, Mapping):
                out = {next(iter(self.outputs)): out}
            return {
                name: torch.softmax(value.float(), dim=1).cpu().numpy()
                for name, value in out.items()
            }

    def forward(self, messages: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One forward pass over the samples of several checked messages, stacked: the only copy
        of their values (frames are read-only, so one copy is needed anyway). The softmax scores
        come back split per message, as row slices of one array."""
        if len(messages) == 1:  # nothing to stack or split
            return [self._scores(messages[0])]
        stacked = {name: np.concatenate([m[name] for m in messages]) for name in messages[0]}
        scores = self._scores(stacked)
        answers, start = [], 0
        for message in messages:
            end = start + len(next(iter(message.values())))
            answers.append({name: value[start:end] for name, value in scores.items()})
            start = end
        return answers

    def batcher(self) -> RequestBatcher:
        """The request batcher of the running event loop (one per loop and runtime)."""
        import asyncio

        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = RequestBatcher(self, loop)
        return batcher

    def train(self, inputs: Mapping[str, Any], expected: Mapping[str, Any]) -> float:
        """One optimisation step towards the expected output values; returns the loss. A step
        whose loss or gradients overflow is refused (ValidationFailed) and changes nothing."""
        from ml.evaluation import NonFiniteStep
        from ml.training import train_step

        x_arrays = self.check_values("input", inputs)
        y_arrays = self.check_values("output", expected)
        if next(iter(x_arrays.values())).shape[0] != next(iter(y_arrays.values())).shape[0]:
            raise ValidationFailed("Inputs and expected outputs carry different sample counts.")
        with self.lock:
            self._ensure_open()
            x = self._forward_input(self._tensors(x_arrays, self.input_scale))
            y = self._tensors(y_arrays, 1.0)
            if len(y) == 1 and not isinstance(x, Mapping):
                y = next(iter(y.values()))  # tensor in, tensor out
            try:
                loss = train_step(self.model, self.optimizer, x, y)
            except NonFiniteStep as exc:
                raise ValidationFailed(f"Refused: {exc}") from None
            self.dirty = True
            self.steps += 1
            return loss

    @property
    def optimizer(self):
        if self._optimizer is None:
            import torch

            self._optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate)
        return self._optimizer

    def flush_due(self) -> bool:
        interval = number_setting("DIRECTIO_FLUSH_INTERVAL_S")
        return self.dirty and time.monotonic() - self.last_flush >= interval

    def flush(self) -> bool:
        """Write the weights back to the cluster (a new version) if they changed."""
        from apps.clusters.models import Cluster
        from apps.clusters.runtime import cluster_store_weights

        with self.lock:
            if not self.dirty:
                return False
            cluster = Cluster.objects.filter(pk=self.cluster_id).first()
            if cluster is None:  # deleted meanwhile: nothing to write back to
                self.dirty = False
                return False
            cluster_store_weights(cluster, self.model)
            self.dirty = False
            self.last_flush = time.monotonic()
            return True

    def _ensure_open(self) -> None:
        if self.closed:
            raise RuntimeClosed("The cluster is no longer in DIRECT mode.")


class RequestBatcher:
    """Request messages to one runtime from every socket of an event loop: the messages that
    arrive while a forward pass runs (or within the loop iteration that starts one) are stacked
    into the next pass, so several sockets share forward passes instead of queueing for one
    each. Big models and GPUs run their passes in a thread, so the loop keeps reading frames
    (and answering other clusters) meanwhile; small CPU models run on the loop (`_forward`).

    A forward pass that fails is run again message by message, so an error answers only the
    messages it comes from; each message gets its own rows back, so answers keep their order
    per socket (a socket's consumer awaits one message's answer before it reads the next)."""

    def __init__(self, runtime: DirectRuntime, loop) -> None:
        self.runtime, self.loop = runtime, loop
        self.pending: deque[tuple[dict[str, np.ndarray], Any]] = deque()
        self.draining = False
        self._task = None  # the running drain (the loop itself keeps only a weak reference)

    async def submit(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        future = self.loop.create_future()
        self.pending.append((arrays, future))
        if not self.draining:
            self.draining = True
            self._task = self.loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[dict[str, np.ndarray], Any]]:
        """The waiting messages, up to DIRECTIO_MAX_BATCH samples (at least one message)."""
        limit = max_batch()
        taken, samples = [], 0
        while self.pending:
            arrays, future = self.pending[0]
            rows = len(next(iter(arrays.values())))
            if taken and samples + rows > limit:
                break
            self.pending.popleft()
            if not future.done():  # a socket that went away cancelled its wait
                taken.append((arrays, future))
                samples += rows
        return taken

    async def _forward(self, messages: list[dict[str, np.ndarray]]):
        """Small CPU models run on the loop: a thread would compete with it for the GIL (and, on
        a small machine, the cores) for longer than the pass takes. Others run in a thread."""
        import asyncio

        if self.runtime.inline:
            return self.runtime.forward(messages)
        return await asyncio.to_thread(self.runtime.forward, messages)

    async def _drain(self) -> None:
        import asyncio

        try:
            while self.pending:
                if self.runtime.inline:
                    await asyncio.sleep(0)  # the frames read in this loop iteration join the pass
                batch = self._take()
                if not batch:
                    continue
                try:
                    answers = await self._forward([a for a, _ in batch])
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0][1], error=exc)
                        continue
                    for arrays, future in batch:  # find the message(s) the error comes from
                        try:
                            (answer,) = await self._forward([arrays])
                        except Exception as one_exc:
                            _settle(future, error=one_exc)
                        else:
                            _settle(future, answer)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    _settle(future, answer)
        finally:
            self.draining = False


def max_batch() -> int:
    """DIRECTIO_MAX_BATCH: the most samples of one message (and of one stacked pass)."""
    return int(setting("DIRECTIO_MAX_BATCH"))


def _all_finite(array: np.ndarray) -> bool:
    """No NaN and no infinity in `array`: a finite sum proves it with one reduction and no
    temporary (NaN and infinities propagate into the sum); a sum that overflows is checked
    value by value."""
    return bool(np.isfinite(array.sum())) or bool(np.isfinite(array).all())


def _settle(future, answer=None, *, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)


# -- the per-process registry -----------------------------------------------------------------

_runtimes: dict[str, DirectRuntime] = {}
DIRECTIO_WARM_MAX = 64  # clusters warmed at server start (the rest load on first connection)
_registry_lock = threading.Lock()


def _load(cluster: Cluster) -> DirectRuntime:
    import torch

    from apps.clusters.runtime import cluster_load_model
    from apps.clusters.selectors import stored_input_scale
    from ml.training import resolve_device

    shape = cluster.shape or {}
    inputs = {str(k): int(v) for k, v in (shape.get("inputs") or {}).items()}
    outputs = {str(k): int(v) for k, v in (shape.get("outputs") or {}).items()}
    if not inputs or not outputs:
        raise ValidationFailed("Direct io needs a cluster built from a template with named bricks.")
    host = cluster.host_id or "cpu"
    try:
        device = resolve_device("cpu" if host == "cpu" else host.replace("-", ":", 1))
    except ValueError:
        device = torch.device("cpu")
    model = cluster_load_model(cluster).to(device)
    config = cluster.config or {}
    return DirectRuntime(
        cluster_id=str(cluster.pk),
        project_id=str(cluster.project_id),
        model=model,
        device=device,
        inputs=inputs,
        outputs=outputs,
        input_scale=stored_input_scale(cluster=cluster) or 1.0,
        learning_rate=float(config.get("direct_learning_rate") or 2e-3),
        parameters=sum(p.numel() for p in model.parameters()),
    )


def runtime_open(cluster: Cluster) -> DirectRuntime:
    """Attach a connection to the cluster's runtime, loading it on first use.

    The caller has checked tenancy; the cluster must be in DIRECT mode.
    """
    from apps.clusters.models import ClusterMode

    if cluster.mode != ClusterMode.DIRECT:
        raise Conflict("The cluster is not in DIRECT mode; switch it with set_mode first.")
    key = str(cluster.pk)
    with _registry_lock:
        runtime = _runtimes.get(key)
        if runtime is None or runtime.closed:
            runtime = _load(cluster)
            _runtimes[key] = runtime
        runtime.connections += 1
        return runtime


def runtime_warm(cluster_id: str) -> bool:
    """Load the runtime of a DIRECT cluster before anyone connects (when it enters DIRECT mode,
    and at server start), so that no websocket handshake waits for a model load: daphne gives
    a handshake 5 s, and a first load (torch, weights, a GPU) can take longer. The runtime then
    stays loaded while the cluster is in DIRECT mode (`runtime_close` unloads it). Returns
    whether a runtime is loaded now; never raises (a load that fails is retried, with its
    error, by the first connection)."""
    from apps.clusters.models import Cluster, ClusterMode

    try:
        cluster = Cluster.objects.filter(pk=cluster_id).first()
        if cluster is None or cluster.mode != ClusterMode.DIRECT:
            return False
        with _registry_lock:
            runtime = _runtimes.get(str(cluster.pk))
            if runtime is None or runtime.closed:
                _runtimes[str(cluster.pk)] = _load(cluster)
        return True
    except Exception:
        logger.warning("direct io: could not warm cluster %s", cluster_id, exc_info=True)
        return False


def warm_in_background(cluster_ids: list[str] | None = None) -> threading.Thread:
    """`runtime_warm` each cluster (None: every cluster in DIRECT mode, at most DIRECTIO_WARM_MAX)
    in a daemon thread with its own database connection."""

    def run():
        from django.db import connection

        from apps.clusters.models import Cluster, ClusterMode

        try:
            ids = cluster_ids
            if ids is None:
                direct = Cluster.objects.filter(mode=ClusterMode.DIRECT).order_by("-updated_at")
                ids = list(direct.values_list("pk", flat=True)[:DIRECTIO_WARM_MAX])
            for cluster_id in ids:
                runtime_warm(str(cluster_id))
        except Exception:  # no table yet (before migrate), no database: nothing to warm
            logger.info("direct io: clusters not warmed", exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="directio-warm", daemon=True)
    thread.start()
    return thread


def runtime_release(runtime: DirectRuntime) -> None:
    """Detach a connection; the last one writes the weights back (the model stays loaded while
    the cluster is in DIRECT mode, so the next connection attaches at once)."""
    with _registry_lock:
        runtime.connections = max(0, runtime.connections - 1)
        last = runtime.connections == 0
    if last:
        try:
            runtime.flush()
        except Exception:
            logger.exception("direct io: could not write back cluster %s", runtime.cluster_id)


def runtime_close(cluster_id: str, *, write_back: bool = True) -> bool:
    """The cluster leaves DIRECT mode (or is deleted): refuse further messages, write back.

    Returns True when a runtime was loaded in this process. Connections of other processes
    learn it from the `directio.closed` event `cluster_set_mode` publishes.
    """
    with _registry_lock:
        runtime = _runtimes.pop(str(cluster_id), None)
    if runtime is None:
        return False
    with runtime.lock:
        runtime.closed = True
    if write_back:
        runtime.flush()
    return True


def runtime_get(cluster_id: str) -> DirectRuntime | None:
    return _runtimes.get(str(cluster_id))


# -- one connection ---------------------------------------------------------------------------


class DirectIoSession:
    """What a direct-io socket holds: the runtime, the caller's rights, and their expiry.

    `request`/`train` are coroutines for consumers: they check the token's expiry in memory,
    run the step on the event loop (small CPU models) or in a thread (big models, GPUs); requests
    of a runtime with several sockets go through its batcher (shared forward passes), and
    schedule a background write-back when one is due. Every `DIRECTIO_RECHECK_S` the caller's
    membership and the cluster's mode are re-read (off the per-message path: at most once per
    interval) so a socket does not outlive the caller's rights.
    """

    def __init__(self, runtime: DirectRuntime, *, user, can_train: bool, expires_at=None):
        self.runtime = runtime
        self.user_id = user.pk
        self.can_train = can_train
        self.expires_at = float(expires_at) if expires_at else None
        self.recheck_s = number_setting("DIRECTIO_RECHECK_S")
        self.next_check = time.monotonic() + self.recheck_s
        self._flushing = False
        self.released = False

    @classmethod
    def open(cls, *, access, cluster, expires_at=None) -> DirectIoSession:
        """Sync (call through database_sync_to_async): load or attach the runtime."""
        runtime = runtime_open(cluster)
        return cls(
            runtime, user=access.user, can_train=access.can_edit(cluster), expires_at=expires_at
        )

    async def _guard(self) -> None:
        from apps.core.exceptions import Unauthorized

        if self.expires_at is not None and time.time() >= self.expires_at:
            raise Unauthorized("Token is invalid or expired.")
        if self.runtime.closed:
            raise RuntimeClosed("The cluster is no longer in DIRECT mode.")
        if time.monotonic() >= self.next_check:
            from channels.db import database_sync_to_async

            await database_sync_to_async(self._recheck)()
            self.next_check = time.monotonic() + self.recheck_s

    def _recheck(self) -> None:
        from apps.accounts.models import User
        from apps.clusters.models import Cluster, ClusterMode
        from apps.core.exceptions import NotFound
        from apps.core.tenancy import project_access

        user = User.objects.filter(pk=self.user_id, is_active=True).first()
        if user is None:
            raise NotFound("Cluster not found.")
        access = project_access(user=user, project_id=self.runtime.project_id)
        cluster = Cluster.objects.get_visible(access, pk=self.runtime.cluster_id)
        if cluster.mode != ClusterMode.DIRECT:
            raise RuntimeClosed("The cluster is no longer in DIRECT mode.")
        self.can_train = access.can_edit(cluster)

    async def _run(self, fn, *args):
        import asyncio

        if self.runtime.inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def request(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A small model with this socket alone on it answers on the loop (nothing to batch
        with: a thread hop would cost more than the forward pass); otherwise the message is
        checked here (a bad one is refused alone) and goes to the runtime's batcher."""
        await self._guard()
        runtime = self.runtime
        if runtime.inline and runtime.connections <= 1:
            return runtime.request(inputs)
        return await runtime.batcher().submit(runtime.check_values("input", inputs))

    async def train(self, inputs: Mapping[str, Any], expected: Mapping[str, Any]) -> float:
        from apps.core.exceptions import Forbidden

        await self._guard()
        if not self.can_train:
            raise Forbidden("Only the owner or a project admin may train this cluster.")
        loss = await self._run(self.runtime.train, inputs, expected)
        if self.runtime.flush_due() and not self._flushing:
            self._schedule_flush()
        return loss

    def _schedule_flush(self) -> None:
        import asyncio

        from channels.db import database_sync_to_async

        self._flushing = True

        async def flush():
            try:
                await database_sync_to_async(self.runtime.flush)()
            except Exception:
                logger.exception("direct io: periodic write-back failed")
            finally:
                self._flushing = False

        asyncio.get_running_loop().create_task(flush())

    def release(self) -> None:
        """Sync (call through database_sync_to_async): detach; the last one writes back."""
        if not self.released:
            self.released = True
            runtime_release(self.runtime)
