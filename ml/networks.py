"""Torch networks built from cluster templates (the named architectures are in
:mod:`ml.architectures`).

:class:`TemplateNetwork` turns a :class:`ml.templates.Template` into a feed-forward network: every
non-input brick on an input -> output path computes
``activation(sum(Linear(src) for src in predecessors))``; hidden bricks use ReLU, output bricks
are linear (they return logits). Only the first projection into a brick carries a bias, so a brick
with several predecessors has one bias, not several redundant ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ml.templates import Template

__all__ = [
    "ACTIVATIONS",
    "TemplateNetwork",
    "build_network",
    "seeded",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class TemplateNetwork(nn.Module):
    """A feed-forward network whose layers are the bricks of a cluster template.

    ``forward`` takes ``(batch, size)`` tensors (extra trailing dimensions are flattened). With a
    single input brick a plain tensor may be passed; the result is a plain tensor when the input
    was a plain tensor and there is a single output brick, otherwise a dict keyed by output brick
    name. A dict input is keyed by input brick name.
    """

    def __init__(self, template: Template, *, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
        self.template = template
        bricks = template.bricks
        self.input_names: list[str] = list(template.inputs)
        self.output_names: list[str] = list(template.outputs)
        self.input_sizes: dict[str, int] = dict(template.inputs)
        self.output_sizes: dict[str, int] = dict(template.outputs)
        self._input_indices = [template.brick_index(n) for n in self.input_names]
        self._output_indices = [template.brick_index(n) for n in self.output_names]
        self.activation = ACTIVATIONS[activation]()
        self.projections = nn.ModuleDict()

        incoming: dict[int, list[int]] = {}
        for src, dst in template.live_edges:
            incoming.setdefault(dst, []).append(src)
        # Edges go from x to x + 1, so sorting by x is a topological order.
        order = sorted(incoming, key=lambda i: (bricks[i].position[0], i))
        self._plan: list[tuple[int, list[tuple[int, nn.Linear]], bool]] = []
        for dst in order:
            sources = []
            for k, src in enumerate(incoming[dst]):
                layer = nn.Linear(
                    bricks[src].number_of_neurons, bricks[dst].number_of_neurons, bias=k == 0
                )
                self.projections[f"{src}_{dst}"] = layer
                sources.append((src, layer))
            self._plan.append((dst, sources, bricks[dst].kind == "hidden"))

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
        """Run the network; see the class docstring for the accepted and returned shapes."""
        values: dict[int, Tensor] = {}
        if isinstance(x, Tensor):
            if len(self._input_indices) != 1:
                raise ValueError(
                    f"this network has {len(self.input_names)} input bricks "
                    f"({', '.join(self.input_names)}): pass a dict keyed by brick name"
                )
            values[self._input_indices[0]] = self._check_input(self.input_names[0], x)
        else:
            missing = [name for name in self.input_names if name not in x]
            if missing:
                raise ValueError(f"missing input brick(s): {', '.join(missing)}")
            for name, index in zip(self.input_names, self._input_indices, strict=True):
                values[index] = self._check_input(name, x[name])

        for dst, sources, hidden in self._plan:
            total = None
            for src, layer in sources:
                projected = layer(values[src])
                total = projected if total is None else total + projected
            assert total is not None  # every destination has at least one source
            values[dst] = self.activation(total) if hidden else total

        if isinstance(x, Tensor) and len(self._output_indices) == 1:
            return values[self._output_indices[0]]
        return {
            name: values[index]
            for name, index in zip(self.output_names, self._output_indices, strict=True)
        }

    def _check_input(self, name: str, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        size = self.input_sizes[name]
        if x.dim() != 2 or x.shape[1] != size:
            raise ValueError(
                f"input brick '{name}' expects (batch, {size}) values, got {tuple(x.shape)}"
            )
        return x


def build_network(
    template: Template, *, seed: int | None = None, activation: str = "relu"
) -> TemplateNetwork:
    """Build the torch network of a template; ``seed`` makes the initial weights reproducible."""
    with seeded(seed):
        return TemplateNetwork(template, activation=activation)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's CPU RNG inside the block only (its state is restored after); None: no-op."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
