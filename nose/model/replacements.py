"""What stands in for a removed attention sublayer, per layer (DESIGN.md, "Replacements").

A decoder layer computes ``h = x + Attn(LN1(x))``. A removed attention becomes
``h = x + R(x)`` with one of:

| replacement | R(x) | exported as (DeciLM block) |
|---|---|---|
| :class:`Skip` | 0 | ``no_op``; no input norm, no tensors |
| :class:`Double` | x | as skip, after folding (``nose.shrink.export``) |
| :class:`Thesis` | 2·LN1(x) | linear with W = 2I (what the thesis code ran; reproduction only) |
| :class:`Linear` | W·LN1(x) | ``replace_with_linear``; input norm kept; ``self_attn.linear_attn.weight`` = W |
| :class:`Folded` | W·a, a the previous layer's MLP hidden activation | ``no_op``; W folded: previous ``down_proj`` ← ``down_proj`` + W |

Every part reads these objects: the switches (:mod:`nose.model.switches`) call them, healing
trains a Linear's W, efficiency counts their parameters (a linear map's multiply-accumulates per
token equal its parameter count), export writes their block, and the evaluation digest hashes
:meth:`Replacement.describe`. None stores K/V.

``R`` receives ``LN1(x)`` (what the attention would have received), the layer input ``x`` (when
it ``uses_input``) and the previous layer's MLP hidden activation, the input of its down-projection (when it
``uses_previous_mlp``).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn

from nose.errors import NoseError


class Replacement(nn.Module):
    kind = ""
    uses_input = False  # needs the layer input x (not only LN1(x))
    uses_previous_mlp = False  # needs the previous layer's MLP output (the last write before this layer)
    exported_as_linear = False  # exported as a DeciLM linear block (else as a no-op block)
    folds_into_previous_mlp = False  # exported by changing the previous layer's MLP down-projection

    def forward(self, normed: torch.Tensor, x: torch.Tensor | None,
                previous_mlp: torch.Tensor | None = None) -> torch.Tensor | None:
        """R(x), the tensor added to the residual at M = 0; None stands for zero."""
        raise NotImplementedError

    def export_weight(self, hidden: int) -> torch.Tensor | None:
        """The (hidden, hidden) matrix of a linear export; None for a no-op block."""
        return None

    def describe(self) -> dict:
        """What identifies it in digests and ``nose.json``."""
        return {"kind": self.kind}

    def extra_repr(self) -> str:
        return self.kind


class Skip(Replacement):
    kind = "skip"

    def forward(self, normed, x, previous_mlp=None):
        return None


class Double(Replacement):
    kind = "double"
    uses_input = True

    def forward(self, normed, x, previous_mlp=None):
        if x is None:
            raise RuntimeError("double needs the layer input; the switch's pre-hook did not run")
        return x


class Thesis(Replacement):
    """``2·LN1(x)``: the linear replacement with W = 2I, computed without the matrix."""

    kind = "thesis"
    exported_as_linear = True

    def forward(self, normed, x, previous_mlp=None):
        return 2 * normed

    def export_weight(self, hidden: int) -> torch.Tensor:
        return 2 * torch.eye(hidden)


class FeatureLinear(Replacement):
    """``W·φ(LN1(x))``: linear, without bias, in features φ of LN1(x) (:meth:`features`; W is
    (hidden, features)), what :func:`nose.replace.ridge.fit_linear` fits. Subclasses choose φ;
    only :class:`Linear` (φ = identity, W square) is exported."""

    kind = "feature-linear"

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        if weight.dim() != 2:
            raise NoseError(f"a linear replacement needs a (hidden, features) matrix, got {tuple(weight.shape)}")
        self.linear_attn = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device,
                                     dtype=weight.dtype)
        with torch.no_grad():
            self.linear_attn.weight.copy_(weight)

    @staticmethod
    def features(normed: torch.Tensor, previous_mlp: torch.Tensor | None = None) -> torch.Tensor:
        """What W multiplies (what the fit regresses on)."""
        return normed

    @staticmethod
    def feature_size(config) -> int:
        """The length of :meth:`features` for a model of this (transformers) config."""
        return config.hidden_size

    def forward(self, normed, x, previous_mlp=None):
        return self.linear_attn(self.features(normed, previous_mlp))

    def describe(self) -> dict:
        w = self.linear_attn.weight.detach().to("cpu", torch.float32).contiguous()
        return {"kind": self.kind, "weight_sha256": hashlib.sha256(w.numpy().tobytes()).hexdigest()}


class Linear(FeatureLinear):
    """``W·LN1(x)``, W (hidden, hidden) without bias; ``linear_attn`` is NVIDIA's tensor name."""

    kind = "linear"
    exported_as_linear = True

    def __init__(self, weight: torch.Tensor):
        if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
            raise NoseError(f"a linear replacement needs a square (hidden, hidden) matrix, got {tuple(weight.shape)}")
        super().__init__(weight)

    def export_weight(self, hidden: int) -> torch.Tensor:
        return self.linear_attn.weight.detach()


class Folded(FeatureLinear):
    """``W·a`` with a the previous layer's MLP hidden activation (what its down-projection D
    multiplies), W (hidden, intermediate). The residual stream after the previous layer is
    ``h + D·a``; adding ``W·a`` equals running that MLP with ``D + W`` as its down-projection, so
    the export folds W there and writes this layer as a plain ``no_op`` block: an ordinary
    checkpoint every DeciLM engine serves, with no extra parameters or matmul. ReplaceMe
    (mts-ai/ReplaceMe) folds a map ``T`` on the MLP's output (``D ← (I + T)·D``), for whole blocks;
    that is the special case ``W = T·D``, and regressing on a (intermediate-sized) rather than
    on ``D·a`` (hidden-sized) fits the attention better (reports/fold.md)."""

    kind = "folded"
    uses_previous_mlp = True
    folds_into_previous_mlp = True

    @staticmethod
    def features(normed: torch.Tensor, previous_mlp: torch.Tensor | None = None) -> torch.Tensor:
        if previous_mlp is None:
            raise RuntimeError("folded needs the previous layer's MLP activation; the switch's hook did not run")
        return previous_mlp

    @staticmethod
    def feature_size(config) -> int:
        return config.intermediate_size

    def fold_into(self, down_proj: torch.Tensor) -> torch.Tensor:
        """The previous layer's down-projection (hidden, intermediate) with W added."""
        w = self.linear_attn.weight.detach().to(down_proj.device, down_proj.dtype)
        if w.shape != down_proj.shape:
            raise NoseError(f"a folded map of shape {tuple(w.shape)} does not fit a down-projection of shape "
                            f"{tuple(down_proj.shape)}; fit it on this model")
        return down_proj + w


FIXED = {"skip": Skip, "double": Double, "thesis": Thesis}  # replacements without learned weights (``--mode``)


def make(kind: str) -> Replacement:
    """A parameter-free replacement by name (``skip``, ``double``, ``thesis``)."""
    try:
        return FIXED[kind]()
    except KeyError:
        raise NoseError(f"unknown switch mode {kind!r}; choose one of {', '.join(FIXED)}") from None


def uniform(layers, kind: str) -> dict[int, Replacement]:
    """The same parameter-free replacement for every layer in ``layers``."""
    return {int(i): make(kind) for i in layers}


def describe_all(replacements: dict[int, Replacement]) -> dict[str, dict]:
    return {str(i): replacements[i].describe() for i in sorted(replacements)}
