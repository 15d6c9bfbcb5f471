"""Closed-form linear replacements: ``h = x + W·LN1(x)`` fitted to each removed attention.

For each removed layer l, W_l minimizes ``Σ_t ‖Attn_l(LN1(x_t)) − W_l·LN1(x_t)‖² + λ‖W_l‖²`` over
calibration tokens t (ridge least squares, no bias: the exported block has none). The normal
equations ``A = Σ n nᵀ`` and ``B = Σ n aᵀ`` (n = LN1(x), a = the attention output) are
accumulated in float64, streamed batch by batch, so memory is two hidden² matrices per layer
and split, whatever the number of tokens.

Sequential, in depth order: the residual stream of every calibration batch is carried from
layer to layer, and a removed layer's replacement is fitted on the inputs it will see at
inference, with every earlier replacement already in place (the attention of layer l itself
is the target, run on those inputs). Carrying the stream costs one pass through the layers,
plus one intact pass to record each layer's keyword arguments (mask, rotary tables), whatever
the number of removed layers.

Target: with ``target="attention"`` (the default) W imitates layer l's own attention on the
inputs it sees. With ``target="stream"`` W is fitted to put the residual stream back where the
intact model has it: the target is ``x*_l + Attn_l(LN1(x*_l)) − x_l``, with x* the intact model's
stream and x the repaired one (the inputs are still LN1(x)). That also corrects the drift the
earlier replacements left, at the price of a second carried stream (one more intact pass).

Ridge strength: the calibration rows are split (every ``heldout_every``-th row held out); for
each λ = α·tr(A)/hidden on the grid the W fitted on the other rows is scored by its held-out
squared error, computed from the held-out moments alone; the best α is refitted on all rows.
The fit report gives, per layer, α and the held-out error relative to the attention output's
energy (0: the attention was linear in LN1(x); 1: W explains nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from nose.errors import NoseError
from nose.model.adapters import first_output, on_layer_input
from nose.model.loading import LoadedModel
from nose.model.replacements import FeatureLinear, Linear, Replacement
from nose.model.switches import attention_switched, check_layer_indices
from nose.data.calibration import CalibrationSet

TARGETS = ("attention", "stream")
ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class FitConfig:
    samples: int | None = None  # rows the fit reads; None: every conversation of chat data (all the
    # training transcripts), 64 packed rows of other data (reports/repair.md: 198 transcripts
    # instead of 64 cut the held-out KL by 15-17 %)
    seq_len: int = 512  # tokens per row at most
    batch_size: int = 4
    heldout_every: int = 4  # every 4th row scores the ridge strengths
    alphas: tuple[float, ...] = ALPHAS  # λ = α · tr(A) / hidden
    target: str = "attention"  # or "stream" (see the module docstring)

    def validate(self) -> None:
        if (self.samples is not None and self.samples < 2) or self.heldout_every < 2 or self.batch_size < 1:
            raise NoseError("the linear fit needs --fit-samples >= 2 (some rows are held out)")
        if self.target not in TARGETS:
            raise NoseError(f"unknown --fit-target {self.target!r}; choose {' or '.join(TARGETS)}")


class _Moments:
    """A = Σ n nᵀ, B = Σ n aᵀ, c = Σ ‖a‖², float64, for the fit rows and the held-out rows (n: the
    ``inputs`` features of a token, a: its ``outputs`` target)."""

    def __init__(self, inputs: int, outputs: int, device):
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.a, self.b, self.ha, self.hb = z(inputs, inputs), z(inputs, outputs), z(inputs, inputs), z(inputs, outputs)
        self.hc = 0.0
        self.tokens = 0

    def add(self, normed: torch.Tensor, out: torch.Tensor, counted: torch.Tensor, heldout: torch.Tensor) -> None:
        for rows, a, b in ((counted & ~heldout[:, None], self.a, self.b), (counted & heldout[:, None], self.ha, self.hb)):
            n, y = normed[rows].double(), out[rows].double()
            a += n.T @ n
            b += n.T @ y
            if a is self.ha:
                self.hc += float((y * y).sum())
        self.tokens += int(counted.sum())

    def solve(self, alphas) -> tuple[torch.Tensor, float, float]:
        """(W (outputs, inputs) refitted on all rows, chosen α, relative held-out error)."""
        inputs = self.a.shape[0]
        eye = torch.eye(inputs, dtype=torch.float64, device=self.a.device)
        scale = float(torch.trace(self.a)) / inputs
        best = None
        for alpha in alphas:
            m = torch.linalg.solve(self.a + alpha * scale * eye, self.b)  # Wᵀ: prediction is n @ m
            err = self.hc - 2 * float((m * self.hb).sum()) + float((m * (self.ha @ m)).sum())
            if best is None or err < best[1]:
                best = (alpha, err)
        alpha, err = best
        scale_all = float(torch.trace(self.a + self.ha)) / inputs
        m = torch.linalg.solve(self.a + self.ha + alpha * scale_all * eye, self.b + self.hb)
        return m.T.contiguous(), alpha, err / max(self.hc, 1e-300)


def _layer_inputs(lm: LoadedModel, batch, keep, mlp_keep=()) -> tuple[dict[int, torch.Tensor], list[dict],
                                                                        dict[int, torch.Tensor]]:
    """The inputs of the layers in ``keep``, every layer's keyword arguments and the MLP hidden activations
    of the layers in ``mlp_keep`` for one batch, from one forward of the model as it is switched now."""
    layers = lm.adapter.layers_of(lm.model)
    kwargs: list[dict] = [{} for _ in layers]
    inputs: dict[int, torch.Tensor] = {}
    mlp_hidden: dict[int, torch.Tensor] = {}

    def record(i):
        def receive(x, kw):
            if i in keep:
                inputs[i] = x
            kwargs[i] = kw
        return receive

    handles = [on_layer_input(layer, record(i)) for i, layer in enumerate(layers)]
    handles += [lm.adapter.on_mlp_hidden(layers[i], lambda a, i=i: mlp_hidden.__setitem__(i, a)) for i in mlp_keep]
    try:
        lm.adapter.last_hidden(lm.model, batch.input_ids, batch.attention_mask)
    finally:
        for h in handles:
            h.remove()
    return inputs, kwargs, mlp_hidden


def _reads_previous_mlp(attention) -> bool:
    """Whether a (switched) attention module's replacement reads the previous layer's MLP activation."""
    return getattr(getattr(attention, "replacement", None), "uses_previous_mlp", False)


def _check_foldable(kind, layers: list[int]) -> None:
    if kind.uses_previous_mlp and 0 in layers:
        raise NoseError(f"layer 0 has no previous MLP to fold a {kind.kind} replacement into; protect layer 0")


def _heldout_rows(start: int, size: int, every: int, device) -> torch.Tensor:
    """(size,) bool: which rows of the batch starting at row ``start`` score the ridge strengths."""
    return (torch.arange(start, start + size) % every == every - 1).to(device)


@torch.no_grad()
def fit_linear(lm: LoadedModel, layers: list[int], calib: CalibrationSet, config: FitConfig = FitConfig(),
               progress=None, kind: type[FeatureLinear] = Linear) -> tuple[dict[int, FeatureLinear], dict]:
    """Fitted linear replacements for ``layers`` and the fit report (see module docstring).

    ``kind``: the replacement class, linear in ``kind.features(LN1(x), a)`` (a: the previous
    layer's MLP hidden activation on the repaired stream, for a kind that ``uses_previous_mlp``), built as
    ``kind(W)``: :class:`Linear`'s features are LN1(x), :class:`Folded`'s are a. Richer features
    were probed with it (experiments/mixing-replacement)."""
    config.validate()
    layers = check_layer_indices(layers, lm.num_layers, what="--layers")
    if not layers:
        raise NoseError("no layers to fit a linear replacement for")
    _check_foldable(kind, layers)
    decoder = lm.adapter.layers_of(lm.model)
    hidden = lm.model.config.hidden_size
    batches, streams = [], []
    for start, batch in zip(range(0, calib.samples, config.batch_size), calib.batches(config.batch_size, "token")):
        inputs, kwargs, _ = _layer_inputs(lm, batch, keep={0})
        x = inputs[0]
        heldout = _heldout_rows(start, batch.size, config.heldout_every, x.device)
        batches.append((kwargs, batch.count_mask.bool().to(x.device), heldout))
        streams.append(x)
    intact = list(streams) if config.target == "stream" else None
    mlp_hidden: list[torch.Tensor | None] = [None] * len(streams)  # the previous layer's MLP activation, per batch
    fitted: dict[int, Linear] = {}
    report = {"config": asdict(config), "rows": calib.samples, "tokens": calib.counted_tokens, "layers": {}}
    task = progress.add_task(f"{kind.kind} fit", total=max(layers) + 1) if progress else None
    for j in range(max(layers) + 1):
        layer = decoder[j]
        if j in layers:
            moments = None
            norm, attention = lm.adapter.attn_norm_of(layer), lm.adapter.attention_of(layer)
            for k, (kwargs, counted, heldout) in enumerate(batches):
                normed = norm(streams[k])
                if intact is None:
                    target = attention(normed, **kwargs[j])[0]
                else:
                    target = intact[k] + attention(norm(intact[k]), **kwargs[j])[0] - streams[k]
                features = kind.features(normed, mlp_hidden[k])
                moments = moments or _Moments(features.shape[-1], hidden, features.device)
                moments.add(features, target, counted, heldout)
            w, alpha, err = moments.solve(config.alphas)
            fitted[j] = kind(w.to(streams[0].dtype))
            report["layers"][str(j)] = {"alpha": alpha, "heldout_relative_error": err}
        if progress:
            progress.advance(task)
        if j == max(layers):  # nothing deeper is fitted: the streams need not go on
            break
        # the layers run one at a time over all batches, so a replacement that reads the previous
        # MLP's activation (this fit's, or one a caller switched on) is handed it per batch
        capture = (kind.uses_previous_mlp and j + 1 in layers) or _reads_previous_mlp(lm.adapter.attention_of(decoder[j + 1]))
        captured: list[torch.Tensor] = []
        hook = lm.adapter.on_mlp_hidden(layer, captured.append) if capture else None
        try:
            with attention_switched(lm.model, {j: fitted[j]} if j in fitted else {}, adapter=lm.adapter):
                switched = lm.adapter.attention_of(layer)
                for k, (kwargs, _, _) in enumerate(batches):
                    if _reads_previous_mlp(switched):
                        switched.previous_mlp = mlp_hidden[k]
                    streams[k] = first_output(layer(streams[k], **kwargs[j]))
        finally:
            if hook is not None:
                hook.remove()
        mlp_hidden = captured if capture else [None] * len(streams)
        if intact is not None:
            for k, (kwargs, _, _) in enumerate(batches):
                intact[k] = first_output(layer(intact[k], **kwargs[j]))
    return fitted, report


MOMENT_BYTES = 4 << 30  # fit_each's bound on the moments held at once


def candidates_per_pass(model_config, kind: type[FeatureLinear], moment_bytes: int | None = None) -> int:
    """How many candidates :func:`fit_each` fits from one forward per batch: as many as have their
    four float64 moment matrices (features², features × hidden) within ``moment_bytes``
    (default :data:`MOMENT_BYTES`)."""
    moment_bytes = MOMENT_BYTES if moment_bytes is None else moment_bytes
    features = kind.feature_size(model_config)
    return max(1, moment_bytes // (16 * features * (features + model_config.hidden_size)))


@torch.no_grad()
def fit_each(lm: LoadedModel, layers: list[int], calib: CalibrationSet, state: dict[int, Replacement] | None = None,
             config: FitConfig = FitConfig(), kind: type[FeatureLinear] = Linear,
             moment_bytes: int | None = None) -> tuple[dict[int, FeatureLinear], dict[int, float]]:
    """A replacement for each of ``layers`` fitted alone, on the inputs it sees with ``state`` (a
    ``{layer: Replacement}`` dict) switched on and no other layer of ``layers`` replaced: what
    a greedy search scores candidate i with (``nose search --replace linear``). Returns the maps
    and each one's relative held-out error.

    Every real token of ``calib`` counts (as in :func:`fit_linear`, whose rows count all tokens),
    whatever tokens the search's statistics count. One forward per batch records every layer's
    input. Memory: four float64 moment matrices (features², features × hidden) per candidate; the
    candidates are fitted in groups whose moments fit in ``moment_bytes``
    (:func:`candidates_per_pass`), one forward per batch and group (a folded map's features are
    the MLP's activation, 5.4× the hidden size for Qwen2.5-Coder-0.5B: 0.45 GB per candidate, so
    nine candidates a group).
    """
    config.validate()
    _check_foldable(kind, layers)
    decoder = lm.adapter.layers_of(lm.model)
    hidden = lm.model.config.hidden_size
    per_group = candidates_per_pass(lm.model.config, kind, moment_bytes)
    fitted, errors = {}, {}
    with attention_switched(lm.model, state or {}, adapter=lm.adapter):
        for g in range(0, len(layers), per_group):
            group = layers[g:g + per_group]
            keep = set(group)
            mlp_keep = {i - 1 for i in group} if kind.uses_previous_mlp else set()
            moments: dict[int, _Moments] = {}
            for start, batch in zip(range(0, calib.samples, config.batch_size),
                                    calib.batches(config.batch_size, "token")):
                inputs, kwargs, mlp_hidden = _layer_inputs(lm, batch, keep, mlp_keep)
                heldout = _heldout_rows(start, batch.size, config.heldout_every, "cpu")
                real = batch.attention_mask.bool()
                for i in group:
                    x = inputs[i]
                    normed = lm.adapter.attn_norm_of(decoder[i])(x)
                    out = lm.adapter.attention_of(decoder[i])(normed, **kwargs[i])[0]
                    phi = kind.features(normed, mlp_hidden.get(i - 1))
                    moments.setdefault(i, _Moments(phi.shape[-1], hidden, x.device)).add(
                        phi, out, real.to(x.device), heldout.to(x.device))
            for i in group:
                w, _, errors[i] = moments.pop(i).solve(config.alphas)
                fitted[i] = kind(w.to(lm.dtype))
    return fitted, errors
