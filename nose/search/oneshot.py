"""One-shot criteria: every candidate is scored once, on the intact model.

- ``cosine`` (attention-drop, He et al. 2024, "What Matters in Transformers?"): the importance
  of layer i's attention is ``1 − cos(x, x + Attn(LN(x)))`` with x the layer's input, per token,
  averaged over all counted calibration tokens. One forward pass; the layer input comes from a
  forward pre-hook on the decoder layer and ``Attn(LN(x))`` from a forward hook on its attention
  module. Per-sample sums give bootstrap intervals as for the greedy criteria.
- ``last``: deepest first; the score of layer i is the number of decoder layers after it.
- ``random``: a permutation of the candidates drawn with ``numpy.random.default_rng(seed)``.

Steps are then read off the fixed ranking: step k selects the lowest score among the
candidates not yet selected, so the records have the same shape as a greedy search's.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from nose.errors import NoseError
from nose.model.adapters import first_output, on_layer_input
from nose.model.loading import LoadedModel
from nose.data.calibration import CalibrationSet
from nose.search.loss import ratio_bootstrap
from nose.search.steps import bootstrap_weights, step_record


@torch.no_grad()
def cosine_sums(lm: LoadedModel, calib: CalibrationSet, layers: list[int], batch_size: int,
                advance=lambda: None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per layer, per calibration sample: Σ over counted tokens of ``1 − cos(x, x + Attn(LN(x)))``;
    and the counted tokens per sample."""
    blocks = lm.adapter.layers_of(lm.model)
    sums: dict[int, list[np.ndarray]] = {i: [] for i in layers}
    counts: list[np.ndarray] = []
    state: dict = {}

    def take_attention(i):
        def hook(module, args, output):
            x = state.pop(i)
            h = x + first_output(output)
            one_minus_cos = 1.0 - F.cosine_similarity(x.float(), h.float(), dim=-1)
            mask = state["counted"].to(device=x.device, dtype=torch.float64)
            sums[i].append((one_minus_cos.double() * mask).sum(1).cpu().numpy())
        return hook

    handles = []
    try:
        for i in layers:
            handles.append(on_layer_input(blocks[i], lambda x, kwargs, i=i: state.__setitem__(i, x)))
            handles.append(lm.adapter.attention_of(blocks[i]).register_forward_hook(take_attention(i)))
        backbone = lm.adapter.backbone_of(lm.model)
        device = backbone.get_input_embeddings().weight.device
        for batch in calib.batches(batch_size, "token"):
            state["counted"] = batch.positions
            backbone(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                     use_cache=False)
            counts.append(batch.positions.to(torch.float64).sum(1).numpy())
            advance()
    finally:
        for h in handles:
            h.remove()
    n = np.concatenate(counts)
    if n.sum() <= 0:
        raise NoseError("no counted tokens in the calibration set: it is empty or fully masked")
    return {i: np.concatenate(sums[i]) for i in layers}, n


def cosine_rank(lm: LoadedModel, calib: CalibrationSet, config, candidates: list[int],
                advance=lambda: None, work: dict | None = None) -> tuple[dict[int, float], dict[int, np.ndarray] | None]:
    sums, n = cosine_sums(lm, calib, candidates, config.batch_size, advance)
    if work is not None:  # one backbone pass per batch
        work["layer_forwards"] = lm.num_layers * calib.batch_count(config.batch_size)
    scores = {i: float(sums[i].sum() / n.sum()) for i in candidates}
    boot = None
    if config.bootstrap > 0 and len(n) > 1:
        w = bootstrap_weights(len(n), config.bootstrap, config.seed, 0)
        boot = {i: ratio_bootstrap(sums[i], n, w) for i in candidates}
    return scores, boot


def last_rank(lm: LoadedModel, calib: CalibrationSet, config, candidates: list[int], advance=lambda: None,
              work: dict | None = None):
    return {i: float(lm.num_layers - 1 - i) for i in candidates}, None


def random_rank(lm: LoadedModel, calib: CalibrationSet, config, candidates: list[int], advance=lambda: None,
                work: dict | None = None):
    order = np.random.default_rng(config.seed).permutation(candidates)
    return {int(i): float(k) for k, i in enumerate(order)}, None


def oneshot_steps(lm: LoadedModel, calib: CalibrationSet, config, candidates: list[int], rank,
                  advance=lambda: None, work: dict | None = None) -> list[dict]:
    """All ``config.steps`` step records of a one-shot criterion ranked by ``rank``; the scoring
    time is on step 1. ``work`` receives the forwards run, as for greedy criteria."""
    t0 = time.perf_counter()
    scores, boot = rank(lm, calib, config, candidates, advance, work)
    seconds = round(time.perf_counter() - t0, 3)
    steps, removed = [], []
    for step in range(config.steps):
        left = [i for i in candidates if i not in removed]
        entry = step_record(step, {i: scores[i] for i in left}, {i: boot[i] for i in left} if boot else None)
        entry["removed_before"] = sorted(removed)
        entry["seconds"] = seconds if step == 0 else 0.0
        removed.append(entry["selected"])
        steps.append(entry)
    return steps
