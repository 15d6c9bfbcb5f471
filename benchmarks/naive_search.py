"""The naive greedy search (NOSE or loss): the oracle the fast search is checked against.

Deliberately simple and independent of nose.search's statistics and prefix cache: for every
candidate it switches S ∪ {i} and runs the *whole* causal LM (logits included, as the thesis
code did). NOSE gathers the target features of all counted tokens into one float64 array and
takes ``Σ_j log std_j`` with numpy; the loss criterion takes the mean next-token NLL of the
float64 log-softmax over the positions whose token and next token are both unmasked.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from nose.model.loading import LoadedModel
from nose.model.switches import attention_switched
from nose.search.calibration import CalibrationSet
from nose.search.target import Target


@torch.no_grad()
def _loss(lm: LoadedModel, calib: CalibrationSet, removed: list[int], mode: str, batch_size: int,
          work: dict) -> float:
    total, count = 0.0, 0
    with attention_switched(lm.model, removed, mode, adapter=lm.adapter):
        for start in range(0, calib.samples, batch_size):
            ids = calib.input_ids[start:start + batch_size]
            mask = calib.attention_mask[start:start + batch_size].bool()
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.long().to(lm.device),
                              use_cache=False).logits.double().cpu()
            work["layer_forwards"] += lm.num_layers
            work["head_forwards"] += 1
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            counted = mask[:, 1:] & mask[:, :-1]
            total -= float(logp[counted].sum())
            count += int(counted.sum())
    return total / count


@torch.no_grad()
def _entropy(lm: LoadedModel, calib: CalibrationSet, removed: list[int], mode: str, target: Target,
             batch_size: int, work: dict) -> float:
    module = target.module(lm.model, lm.adapter)
    rows = []

    def grab(mod, args, output):
        out = output[0] if isinstance(output, tuple) else output
        grab.current = out

    handle = module.register_forward_hook(grab)
    try:
        with attention_switched(lm.model, removed, mode, adapter=lm.adapter):
            for start in range(0, calib.samples, batch_size):
                ids = calib.input_ids[start:start + batch_size]
                mask = calib.attention_mask[start:start + batch_size]
                lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
                work["layer_forwards"] += lm.num_layers
                work["head_forwards"] += 1
                feats = grab.current.double().cpu().numpy()
                rows.append(feats[mask.numpy().astype(bool)])
    finally:
        handle.remove()
    x = np.concatenate(rows)
    return float(np.log(x.std(axis=0)).sum())


def naive_search(lm: LoadedModel, calib: CalibrationSet, steps: int, mode: str = "skip",
                 target: str = "final", protect: tuple[int, ...] = (0,), batch_size: int = 4,
                 criterion: str = "nose") -> dict:
    """Steps with ``base`` (entropy or loss of S), ``candidates`` (layer -> score), ``selected``."""
    tgt = Target.parse(target, lm.num_layers)
    last = tgt.last_layer(lm.num_layers)
    removed: list[int] = []
    work = {"layer_forwards": 0, "head_forwards": 0}
    out = []

    def value(state: list[int]) -> float:
        if criterion == "loss":
            return _loss(lm, calib, state, mode, batch_size, work)
        return _entropy(lm, calib, state, mode, tgt, batch_size, work)

    sign = 1 if criterion == "loss" else -1  # score: loss increase, or transfer entropy H(S) - H(S+i)
    for _ in range(steps):
        t0 = time.perf_counter()
        base = value(removed)
        score = {i: sign * (value(removed + [i]) - base)
                 for i in range(last + 1) if i not in removed and i not in protect}
        winner = min(score, key=lambda i: (score[i], i))
        out.append({"selected": winner, "score": score[winner], "candidates": score, "base": base,
                    "seconds": time.perf_counter() - t0})
        removed.append(winner)
    return {"steps": out, "order": removed, "work": work}
