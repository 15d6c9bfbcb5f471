"""Greedy criteria: NOSE (DESIGN.md, "Entropy and transfer entropy") and the loss criterion.

At each step with removed set S, every candidate i (not removed, not protected) is scored from
the same state S, and the lowest score is removed next. The other candidates' switches are
restored before the next one is tried. Layer inputs are cached per batch
(:mod:`nose.search.prefix`), so candidate i costs only layers i..last.

A criterion measures one statistic of a state (the Gaussian entropy of the target features for
``nose``, the mean next-token loss for ``loss``) and scores ``sign · (value(S ∪ {i}) − value(S))``:
``TE_i = H(S) − H(S ∪ {i})`` for NOSE (sign −1), the loss increase for ``loss`` (sign +1).

Uncertainty: the calibration samples are resampled with replacement (paired across candidates,
seeded by ``(seed, step)``) to give a 95 % percentile interval for each score, and the winner's
margin over the runner-up (see :func:`nose.search.steps.step_record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nose.model.loading import LoadedModel
from nose.model.switches import attention_switched
from nose.search.calibration import CalibrationSet
from nose.search.config import SearchConfig
from nose.search.entropy import MomentStats
from nose.search.loss import LossStats
from nose.search.prefix import PrefixRunner
from nose.search.steps import bootstrap_weights, step_record
from nose.search.target import Target, TargetHook


@dataclass(frozen=True)
class Measure:
    """How a greedy criterion turns collected statistics into scores."""

    new: Callable[[], MomentStats | LossStats]  # one empty statistic per state
    value: Callable  # (stats, where) -> float
    bootstrap: Callable  # (stats, weights (R, N), where) -> (R,)
    sign: int  # score = sign · (value(S ∪ {i}) − value(S))


MEASURES = {
    "nose": Measure(MomentStats, MomentStats.entropy, MomentStats.bootstrap_entropy, -1),
    "loss": Measure(LossStats, LossStats.value, LossStats.bootstrap, +1),
}


@dataclass
class StepStats:
    """Statistics of one step: the base state and each candidate, per sample."""

    base: MomentStats | LossStats
    candidates: dict


def score_step(lm: LoadedModel, calib: CalibrationSet, removed: list[int], candidates: list[int],
               config: SearchConfig, target: Target, runner: PrefixRunner,
               advance: Callable[[], None] = lambda: None) -> StepStats:
    """Collect the criterion's statistic for state ``removed`` and for each candidate added to it."""
    measure = MEASURES[config.criterion]
    base = measure.new()
    per = {i: measure.new() for i in candidates}
    with attention_switched(lm.model, removed, config.mode, adapter=lm.adapter), \
            TargetHook(target.module(lm.model, lm.adapter)) as hook:
        for ids, mask in calib.batches(config.batch_size):
            hook.collect(base, ids, mask)
            runner.base(ids, mask)
            for i in candidates:
                hook.collect(per[i], ids, mask)
                with attention_switched(lm.model, [i], config.mode, adapter=lm.adapter):
                    runner.tail(i)
            hook.collect(None)
            advance()
    return StepStats(base, per)


def summarize_step(stats: StepStats, config: SearchConfig, step: int, target: Target) -> dict:
    """Values, scores, intervals and the selection of one step (the step record, minus timing)."""
    measure = MEASURES[config.criterion]
    where = f"target {target}"
    layers = sorted(stats.candidates)
    base = measure.value(stats.base, where)
    values = {i: measure.value(stats.candidates[i], where) for i in layers}
    scores = {i: measure.sign * (values[i] - base) for i in layers}
    boot = None
    if config.bootstrap > 0 and stats.base.samples > 1:
        w = bootstrap_weights(stats.base.samples, config.bootstrap, config.seed, step)
        vb = measure.bootstrap(stats.base, w, where)
        boot = {i: measure.sign * (measure.bootstrap(stats.candidates[i], w, where) - vb) for i in layers}
    return step_record(step, scores, boot, values=values, base_value=base)


def greedy_steps(lm: LoadedModel, calib: CalibrationSet, config: SearchConfig, target: Target,
                 candidates: list[int], removed: list[int], work: dict, progress=None, task=None) -> Iterator[dict]:
    """Yield one step record per greedy step after ``removed`` until ``config.steps`` are selected.

    ``work`` receives the decoder-layer and head forwards run (the benchmark's accounting).
    """
    runner = PrefixRunner(lm.model, lm.adapter, target)
    removed = list(removed)
    for step in range(len(removed), config.steps):
        t0 = time.perf_counter()
        remaining = [i for i in candidates if i not in removed]
        if progress:
            progress.update(task, description=f"step {step + 1}/{config.steps}: {len(remaining)} candidates")
        stats = score_step(lm, calib, removed, remaining, config, target, runner,
                           advance=(lambda: progress.advance(task)) if progress else (lambda: None))
        entry = summarize_step(stats, config, step, target)
        entry["removed_before"] = sorted(removed)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        removed.append(entry["selected"])
        work.update(layer_forwards=runner.layer_calls, head_forwards=runner.head_calls)
        yield entry

