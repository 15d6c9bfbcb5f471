"""The naive greedy search: the oracle the fast search is checked against.

Deliberately simple and independent of nose.search's statistics and prefix cache: for every
candidate it switches S ∪ {i} and runs the *whole* causal LM (logits included, as the thesis
code did), then computes the criterion's statistic of the state with float64 numpy/torch, read
from the registry entry's ``oracle`` path:

- ``entropy``: the target features of all counted tokens in one array, ``Σ_j log std_j``;
- ``nll``: mean next-token NLL of the float64 log-softmax at the counted next-token positions;
- ``kl``: mean ``KL(p_intact ‖ p_state)`` at the same positions, the intact logits computed once.

The score of a candidate is the registry's ``score(value of S, value of S ∪ {i})``.

a fitted ``mode`` (``linear``, ``folded``): candidate i is replaced by a map fitted with the kind's own fit
(itself checked against a naive ridge) for layer i alone, run with S's maps switched on and every
real token counted; a selected layer keeps its map.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from nose.model.loading import LoadedModel
from nose.model.replacements import make
from nose.model.switches import attention_switched
from nose.data.calibration import CalibrationSet
from nose.search.criteria import CRITERIA
from nose.search.target import Target
from nose.replace import get
from nose.replace.ridge import FitConfig


def _forward(lm: LoadedModel, calib: CalibrationSet, removed: dict, batch_size: int,
             module: torch.nn.Module, work: dict) -> list[tuple]:
    """(batch, logits float64, target output float64) for every batch with ``removed`` (a
    ``{layer: Replacement}`` dict) switched on."""
    grabbed = {}
    handle = module.register_forward_hook(
        lambda mod, args, out: grabbed.__setitem__("out", out[0] if isinstance(out, tuple) else out))
    out = []
    try:
        with torch.no_grad(), attention_switched(lm.model, removed, adapter=lm.adapter):
            for batch in calib.batches(batch_size, "token"):
                logits = lm.model(input_ids=batch.input_ids.to(lm.device),
                                  attention_mask=batch.attention_mask.to(lm.device), use_cache=False).logits
                work["layer_forwards"] += lm.num_layers
                work["head_forwards"] += 1
                out.append((batch, logits.double().cpu(), grabbed["out"].double().cpu()))
    finally:
        handle.remove()
    return out


def _next_positions(batch) -> torch.Tensor:
    pos = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    pos[:, :-1] = batch.attention_mask[:, :-1].bool() & batch.count_mask[:, 1:].bool()
    return pos


def _entropy(runs) -> float:
    x = np.concatenate([feats[batch.count_mask.bool()].numpy() for batch, _, feats in runs])
    return float(np.log(x.std(axis=0)).sum())


def _nll(runs) -> float:
    total, count = 0.0, 0
    for batch, logits, _ in runs:
        pos = _next_positions(batch)
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
        total -= float(logp[pos[:, :-1]].sum())
        count += int(pos.sum())
    return total / count


def _kl(runs, intact) -> float:
    total, count = 0.0, 0
    for (batch, logits, _), (_, ref, _) in zip(runs, intact):
        pos = _next_positions(batch)
        logp, logq = torch.log_softmax(ref[pos], dim=-1), torch.log_softmax(logits[pos], dim=-1)
        total += float((logp.exp() * (logp - logq)).sum())
        count += int(pos.sum())
    return total / count


def naive_search(lm: LoadedModel, calib: CalibrationSet, steps: int, mode: str = "skip",
                 target: str = "final", protect: tuple[int, ...] = (0,), batch_size: int = 4,
                 criterion: str = "nose") -> dict:
    """Steps with ``base`` (the statistic of S), ``candidates`` (layer -> score), ``selected``."""
    crit = CRITERIA[criterion]
    tgt = Target.parse(crit.target or target, lm.num_layers)
    module = tgt.module(lm.model, lm.adapter)
    last = tgt.last_layer(lm.num_layers)
    removed: dict = {}
    work = {"layer_forwards": 0, "head_forwards": 0}
    every_token = replace(calib, count_mask=calib.attention_mask.clone())

    def replacement(i):
        kind = get(mode)
        if not kind.fitted:
            return make(mode)
        with attention_switched(lm.model, removed, adapter=lm.adapter):
            return kind.fit(lm, [i], every_token, FitConfig(batch_size=batch_size))[0][i]

    intact = _forward(lm, calib, {}, batch_size, module, work) if crit.oracle == "kl" else None
    statistic = {"entropy": _entropy, "nll": _nll, "kl": lambda runs: _kl(runs, intact)}[crit.oracle]
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        base = statistic(_forward(lm, calib, removed, batch_size, module, work))
        maps = {i: replacement(i) for i in range(last + 1) if i not in removed and i not in protect}
        score = {i: float(crit.score(base, statistic(_forward(lm, calib, {**removed, i: r}, batch_size, module,
                                                                 work))))
                 for i, r in maps.items()}
        winner = min(score, key=lambda i: (score[i], i))
        out.append({"selected": winner, "score": score[winner], "candidates": score, "base": base,
                    "seconds": time.perf_counter() - t0})
        removed[winner] = maps[winner]
    return {"steps": out, "order": list(removed), "work": work}
