"""Which features the entropy is measured on, and the forward hook that collects them.

Targets: ``final`` (default; the final hidden state after the model's last norm), ``logits``
(the output head), or ``layer:N`` (the output of decoder layer N).

Lifecycle: :class:`TargetHook` registers one forward hook on the target module when entered
and removes it on exit. While it is registered, every call of that module hands its output at
the current batch's read positions, (K, F), with the batch, to the ``observe`` method of the
current ``sink`` (a criterion's statistic, see :mod:`nose.search.criteria`); with no sink it
collects nothing. A (B, T, F) output is cut to the positions here; the logits head is run on
the positions only (:mod:`nose.search.prefix`), so its (K, V) output passes as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from nose.errors import NoseError
from nose.model.adapters import FamilyAdapter, first_output

_LAYER = re.compile(r"^layer:(\d+)$")


@dataclass(frozen=True)
class Target:
    kind: str  # "final" | "logits" | "layer"
    layer: int | None = None

    @classmethod
    def parse(cls, text: str, num_layers: int) -> "Target":
        if text in ("final", "logits"):
            return cls(text)
        m = _LAYER.match(text)
        if not m:
            raise NoseError(f"unknown target {text!r}; use final, logits or layer:N")
        n = int(m.group(1))
        if n >= num_layers:
            raise NoseError(f"target layer {n} is out of range: the model has {num_layers} layers (0..{num_layers - 1})")
        return cls("layer", n)

    def __str__(self) -> str:
        return f"layer:{self.layer}" if self.kind == "layer" else self.kind

    def last_layer(self, num_layers: int) -> int:
        """Index of the last decoder layer that can change the target."""
        return self.layer if self.kind == "layer" else num_layers - 1

    def module(self, model: nn.Module, adapter: FamilyAdapter) -> nn.Module:
        if self.kind == "final":
            return adapter.final_norm_of(model)
        if self.kind == "logits":
            return adapter.head_of(model)
        return adapter.layers_of(model)[self.layer]


class TargetHook:
    """Collects the target module's outputs into ``sink`` (see module docstring)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.sink = None
        self.batch = None
        self._handle = None

    def _hook(self, module, args, output):
        if self.sink is None:
            return
        out = first_output(output)
        if out.dim() == 3:
            out = out[self.batch.positions.to(out.device)]
        self.sink.observe(out, self.batch)

    def collect(self, sink, batch=None) -> None:
        self.sink, self.batch = sink, batch

    def __enter__(self) -> "TargetHook":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None
        self.sink = self.batch = None
