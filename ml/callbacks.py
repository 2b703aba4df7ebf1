"""The hooks of :func:`ml.training.fit`, importable without torch: task handlers subclass
:class:`FitCallbacks` at module level, and a Django process imports torch only when it trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from ml.training import EpochResult

__all__ = ["FitCallbacks"]


class FitCallbacks:
    """The hooks :func:`ml.training.fit` calls; every default does nothing, so a caller
    overrides only what it needs (one object instead of a handful of loose functions).

    ``on_epoch_end(result)`` is called after each epoch (after validation).
    ``wants_checkpoint(epoch)`` is asked next and a True answer makes :func:`fit` call
    ``on_checkpoint(epoch, model_state, optimizer_state)`` with CPU copies of both state dicts,
    safe to keep; the default answers whether ``on_checkpoint`` is overridden, so callers that
    keep no checkpoints pay for no copies (override it to throttle checkpoints by time).
    ``should_stop()`` is polled every ``config.stop_check_every`` batches and after each epoch.
    """

    def on_epoch_end(self, result: EpochResult) -> None:
        """One epoch is complete."""

    def should_stop(self) -> bool:
        """Whether training must stop now."""
        return False

    def wants_checkpoint(self, epoch: int) -> bool:
        """Whether to copy the states out for ``on_checkpoint`` after epoch ``epoch``."""
        return type(self).on_checkpoint is not FitCallbacks.on_checkpoint

    def on_checkpoint(
        self, epoch: int, model_state: dict[str, Tensor], optimizer_state: dict[str, Any]
    ) -> None:
        """The states after ``epoch`` completed epochs (resume with ``start_epoch=epoch``)."""
