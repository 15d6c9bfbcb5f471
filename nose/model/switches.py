"""Scoped, reversible switches that replace attention sublayers (DESIGN.md, "Attention switches").

A decoder layer computes ``h = x + Attn(LN1(x))``. While a layer is switched, its attention
module is swapped for a :class:`SwitchedAttention` whose output ``a`` makes the residual sum

    h = x + M·Attn(LN1(x)) + (1 − M)·R(x)

with R the layer's :class:`~nose.model.replacements.Replacement` (skip: 0, double: x, thesis:
2·LN1(x), linear: W·LN1(x)). M (the *blend*) is a float in [0, 1] or a tensor broadcast over the
hidden size. At ``M == 0`` (a float) the original attention is not run at all. A switch takes
either a layer list and one parameter-free mode, or a ``{layer: Replacement}`` dict; a
replacement's parameters (a linear W) are a submodule of the switched model while it is applied,
so healing can train them.

Lifecycle: :class:`AttentionSwitch` swaps modules in ``apply()`` and puts the originals back in
``restore()``; as a context manager it restores in ``finally``, so the model is bit-identical
after the scope, also after an exception. A failure half-way through ``apply()`` undoes what
was already swapped.

KV cache: a layer whose attention does not run still appends one placeholder slot per token to
its entry of a dynamic cache (shape ``(B, 1, T, 1)``), so the cache's sequence length, which
transformers reads from layer 0, stays right when layer 0 is switched off. The cache arrives as
``past_key_values`` (transformers up to 5.23) or ``cache`` (5.24 on).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from transformers.cache_utils import DynamicLayer

from nose.errors import NoseError
from nose.model.adapters import FamilyAdapter, adapter_for, on_layer_input
from nose.model.replacements import FIXED, Replacement, uniform

MODES = tuple(FIXED)  # the parameter-free replacements a layer list can be switched to

Blend = float | torch.Tensor


class SwitchedAttention(nn.Module):
    """Stands in for one layer's attention module while the layer is switched.

    Its input is ``LN1(x)``; the layer input ``x`` itself (needed by ``double``) is captured by
    a forward pre-hook on the decoder layer that :class:`AttentionSwitch` owns.
    """

    def __init__(self, original: nn.Module, replacement: Replacement, blend: Blend, layer_idx: int):
        super().__init__()
        self.original = original
        self.replacement = replacement
        self.blend = blend
        self.layer_idx = layer_idx
        self.layer_input: torch.Tensor | None = None
        self.previous_mlp: torch.Tensor | None = None

    @property
    def is_noop(self) -> bool:
        """Fully switched off (M == 0 as a float): the original attention does not run."""
        return not isinstance(self.blend, torch.Tensor) and self.blend == 0.0

    @property
    def replacement_module(self) -> nn.Module:
        """The module whose parameters run in place of the attention (efficiency counts them)."""
        return self.replacement

    @property
    def reads_input_norm(self) -> bool:
        """Whether the replacement uses LN1(x) (else an export drops the input norm)."""
        return self.replacement.exported_as_linear

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        m = self.blend
        if self.is_noop:
            _advance_cache(kwargs.get("past_key_values", kwargs.get("cache")), self.original, self.layer_idx,
                           hidden_states, args, kwargs)
            attn = None
        else:
            attn = self.original(hidden_states, *args, **kwargs)[0]
        r = self.replacement(hidden_states, self.layer_input, self.previous_mlp)
        self.layer_input = self.previous_mlp = None
        if attn is None:
            out = torch.zeros_like(hidden_states) if r is None else r
        elif not isinstance(m, torch.Tensor) and m == 1.0:
            out = attn
        else:
            out = m * attn if r is None else m * attn + (1 - m) * r
        return out, None


def _advance_cache(cache, original: nn.Module, layer_idx: int, hidden: torch.Tensor, args, kwargs):
    """Keep a skipped layer's cache entry as long as the sequence (see module docstring)."""
    if cache is None:
        return
    layers = getattr(cache, "layers", None)
    if layers is not None and layer_idx < len(layers) and not isinstance(layers[layer_idx], DynamicLayer):
        # A pre-allocated cache (static, offloaded, ...): let the real attention fill it.
        original(hidden, *args, **kwargs)
        return
    batch, seq = hidden.shape[:2]
    slot = hidden.new_zeros(batch, 1, seq, 1)
    cache.update(slot, slot, layer_idx)


def check_blend(blend: Blend) -> None:
    if isinstance(blend, torch.Tensor):
        if not torch.isfinite(blend).all() or blend.min() < 0 or blend.max() > 1:
            raise NoseError("blend M must lie in [0, 1]")
    elif not 0.0 <= float(blend) <= 1.0:
        raise NoseError(f"blend M must lie in [0, 1], got {blend}")


def check_layer_indices(layers: Iterable[int], num_layers: int, what: str = "layer") -> list[int]:
    """Sorted unique layer indices, or a clear error for duplicates and out-of-range values."""
    layers = list(layers)
    bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < num_layers]
    if bad:
        raise NoseError(
            f"{what} index {bad[0]} is out of range: the model has {num_layers} layers (0..{num_layers - 1})"
        )
    if len(set(layers)) != len(layers):
        dup = sorted({i for i in layers if layers.count(i) > 1})
        raise NoseError(f"{what} indices repeat: {dup}")
    return sorted(layers)


class AttentionSwitch:
    """Switch attention sublayers to their replacements with blend M, reversibly.

    ``layers``: a ``{layer: Replacement}`` dict, or layer indices that all get ``mode``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[int] | dict[int, Replacement],
        mode: str = "skip",
        blend: Blend = 0.0,
        adapter: FamilyAdapter | None = None,
    ):
        check_blend(blend)
        self.adapter = adapter or adapter_for(model.config.model_type)
        self.model = model
        decoder_layers = self.adapter.layers_of(model)
        replacements = layers if isinstance(layers, dict) else uniform(check_layer_indices(layers, len(decoder_layers)),
                                                                       mode)
        self.layers = check_layer_indices(list(replacements), len(decoder_layers))
        self.replacements = replacements
        self.blend = blend
        self._installed: list[tuple[nn.Module, str, nn.Module, object]] = []
        self._decoder_layers = decoder_layers

    def apply(self) -> "AttentionSwitch":
        if self._installed:
            raise RuntimeError("switch is already applied")
        try:
            for i in self.layers:
                layer = self._decoder_layers[i]
                parent_path, _, name = self.adapter.attention.rpartition(".")
                parent = layer.get_submodule(parent_path) if parent_path else layer
                original = getattr(parent, name)
                if isinstance(original, SwitchedAttention):
                    raise NoseError(f"layer {i} is already switched; restore it before switching again")
                switched = SwitchedAttention(original, self.replacements[i], self.blend, i)
                handles = []
                if self.replacements[i].uses_input:
                    handles.append(on_layer_input(layer, lambda x, kwargs, s=switched: setattr(s, "layer_input", x)))
                if self.replacements[i].uses_previous_mlp:
                    if i == 0:
                        raise NoseError("layer 0 has no previous MLP to fold a replacement into; protect it")
                    handles.append(self.adapter.on_mlp_hidden(
                        self._decoder_layers[i - 1], lambda a, s=switched: setattr(s, "previous_mlp", a)))
                setattr(parent, name, switched)
                self._installed.append((parent, name, original, handles))
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self) -> None:
        while self._installed:
            parent, name, original, handles = self._installed.pop()
            setattr(parent, name, original)
            for handle in handles:
                handle.remove()

    def set_blend(self, blend: Blend) -> None:
        """Change M for every switched layer (used by annealed healing)."""
        check_blend(blend)
        self.blend = blend
        for parent, name, _, _ in self._installed:
            getattr(parent, name).blend = blend

    def __enter__(self) -> "AttentionSwitch":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.restore()


def attention_switched(model: nn.Module, layers: Iterable[int] | dict[int, Replacement], mode: str = "skip",
                       blend: Blend = 0.0, adapter: FamilyAdapter | None = None) -> AttentionSwitch:
    """Context manager: ``with attention_switched(model, [3, 5], "skip"): ...`` or
    ``with attention_switched(model, {3: Linear(W3), 5: Skip()}): ...``."""
    return AttentionSwitch(model, layers, mode, blend, adapter)
