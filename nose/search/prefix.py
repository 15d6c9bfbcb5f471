"""Run a model once per calibration batch and re-run only the tail for each candidate.

Switching layer i cannot change the layers before it, so within one greedy step the input of
every decoder layer is computed once (the *base* pass, in state S) and a candidate i re-runs
only layers i..last. The logits head runs only when it is the target, and then only at the
batch's read positions (for answer-only statistics, a fraction of the tokens).

Memory bound of the cache: one batch's inputs of the layers up to the last one that matters,
``(last + 1) · batch · seq_len · hidden`` values in the model's dtype, on the layers' devices,
plus the keyword arguments transformers passes to each layer (mask, rotary tables), which are
shared. It is dropped when the next batch starts.

Lifecycle: ``base()`` registers forward pre-hooks on every layer for the duration of one
backbone forward and removes them before returning.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nose.model.adapters import FamilyAdapter, first_output, on_layer_input
from nose.search.target import Target


class PrefixRunner:
    def __init__(self, model: nn.Module, adapter: FamilyAdapter, target: Target):
        self.model = model
        self.adapter = adapter
        self.target = target
        self.layers = adapter.layers_of(model)
        self.final_norm = adapter.final_norm_of(model)
        self.head = adapter.head_of(model)
        self.last = target.last_layer(len(self.layers))
        self._inputs: list[tuple[torch.Tensor, dict]] = []
        self._mlp_hidden: list[torch.Tensor] = []
        self.record_mlp_hidden = False  # for candidates that read the previous MLP's hidden activation (folded)
        self._positions: torch.Tensor | None = None
        self._reference_hidden: dict[int, torch.Tensor] = {}  # per batch index: see reference()
        self.layer_calls = 0  # decoder-layer forwards run, for the benchmark's accounting
        self.head_calls = 0

    def _backbone(self, batch) -> torch.Tensor:
        self.layer_calls += len(self.layers)
        return self.adapter.last_hidden(self.model, batch.input_ids, batch.attention_mask)

    def _head_at_positions(self, normed: torch.Tensor) -> torch.Tensor:
        self.head_calls += 1
        return self.head(normed[self._positions.to(normed.device)])

    @torch.no_grad()
    def reference(self, batch, key: int) -> torch.Tensor:
        """The intact model's next-token log-probs at ``batch.positions`` (K, V) float32.

        The first call for a ``key`` (the batch's index) runs the model as it is now, before any
        switch is applied (the intact model), and keeps its normed final hidden states at the
        positions (K × hidden values, not K × vocabulary); later steps run only the head on them,
        the same operation on the same values, instead of a whole intact forward."""
        if key not in self._reference_hidden:
            hidden = self._backbone(batch)
            self._reference_hidden[key] = hidden[batch.positions.to(hidden.device)]
        self.head_calls += 1
        return torch.log_softmax(self.head(self._reference_hidden[key]).float(), dim=-1)

    @torch.no_grad()
    def base(self, batch) -> None:
        """One backbone forward that records every layer's input and keyword arguments."""
        self._inputs = []
        self._positions = batch.positions
        keep = self._inputs

        self._mlp_hidden = []
        handles = [on_layer_input(layer, lambda x, kwargs: keep.append((x, kwargs)))
                   for layer in self.layers[: self.last + 1]]
        if self.record_mlp_hidden:
            handles += [self.adapter.on_mlp_hidden(layer, self._mlp_hidden.append)
                        for layer in self.layers[: self.last + 1]]
        try:
            hidden = self._backbone(batch)
        finally:
            for h in handles:
                h.remove()
        if self.target.kind == "logits":
            self._head_at_positions(hidden)

    @torch.no_grad()
    def tail(self, start: int) -> None:
        """Re-run layers ``start..last`` from the cached input of ``start``, then norm/head."""
        hidden, _ = self._inputs[start]
        first = self.adapter.attention_of(self.layers[start])
        if getattr(getattr(first, "replacement", None), "uses_previous_mlp", False):  # its MLP does not run here
            first.previous_mlp = self._mlp_hidden[start - 1]
        for j in range(start, self.last + 1):
            hidden = first_output(self.layers[j](hidden, **self._inputs[j][1]))
        self.layer_calls += self.last + 1 - start
        if self.target.kind == "layer":
            return
        normed = self.final_norm(hidden)
        if self.target.kind == "logits":
            self._head_at_positions(normed)
