"""Greedy criteria (``nose``, ``nose-abs``, ``kl``, ``loss``; see :mod:`nose.search.criteria`).

At each step with removed set S, every candidate i (not removed, not protected) is scored from
the same state S, and the lowest score is removed next. The other candidates' switches are
restored before the next one is tried. Layer inputs are cached per batch
(:mod:`nose.search.prefix`), so candidate i costs only layers i..last. A criterion that compares
against the intact model (``kl``) gets the intact model's log-probs at the batch's read
positions from one extra forward per batch, before the state's switches are applied.

A criterion measures one statistic of a state and scores ``score(value(S), value(S ∪ {i}))``:
``TE_i = H(S) − H(S ∪ {i})`` for NOSE, the loss increase for ``loss``, the KL of S ∪ {i} itself
for ``kl``.

Replacement while scoring (``mode``): a parameter-free one (skip, double, thesis) for every
layer, or ``linear``: before each step, every candidate's ``W·LN1(x)`` is fitted alone on the
calibration rows in state S (:func:`nose.replace.ridge.fit_each`; one forward per batch),
and i is scored replaced by it. A selected layer keeps the map it was scored with, so S is
what the search measured; ``nose shrink`` refits the final set sequentially. This chooses the
layers a linear repair restores best, rather than the ones whose plain removal hurts least.

The fit's forward in state S repeats the scoring's base pass by design: every map is solved
from all batches before any batch's tails can run, and keeping each batch's layer inputs
between the two passes would cost ``layers · rows · seq_len · hidden`` values (0.9 GB in fp32
for the 32 rows of 315 tokens the Qwen2.5-0.5B search read) to save one of the about fifteen
full forwards a step runs per batch (fit, intact reference, base, candidates' tails).

Uncertainty: the calibration samples are resampled with replacement (paired across candidates,
seeded by ``(seed, step)``) to give a 95 % percentile interval for each score, and the winner's
margin over the runner-up (see :func:`nose.search.steps.step_record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nose.model.loading import LoadedModel
from nose.model.replacements import Replacement, uniform
from nose.model.switches import attention_switched
from nose.data.calibration import CalibrationSet
from nose.search.config import SearchConfig
from nose.search.criteria import CRITERIA
from nose.search.prefix import PrefixRunner
from nose.search.steps import bootstrap_weights, step_record
from nose.search.target import Target, TargetHook
from nose.replace import get as replacement
from nose.replace.ridge import FitConfig


@dataclass
class StepStats:
    """Statistics of one step: the base state and each candidate, per sample."""

    base: object
    candidates: dict


def score_step(lm: LoadedModel, calib: CalibrationSet, state: dict[int, Replacement],
               candidates: dict[int, Replacement], config: SearchConfig, target: Target, runner: PrefixRunner,
               advance: Callable[[], None] = lambda: None) -> StepStats:
    """Collect the criterion's statistic for ``state`` (the removed layers' replacements) and for
    each candidate added to it with its replacement."""
    criterion = CRITERIA[config.criterion]
    base = criterion.statistic()
    per = {i: criterion.statistic() for i in candidates}
    with TargetHook(target.module(lm.model, lm.adapter)) as hook:
        for batch in calib.batches(config.batch_size, criterion.positions):
            if criterion.reference:
                batch.reference = runner.reference(batch)
            with attention_switched(lm.model, state, adapter=lm.adapter):
                hook.collect(base, batch)
                runner.base(batch)
                for i, replacement in candidates.items():
                    hook.collect(per[i], batch)
                    with attention_switched(lm.model, {i: replacement}, adapter=lm.adapter):
                        runner.tail(i)
                hook.collect(None)
            advance()
    return StepStats(base, per)


def candidate_replacements(lm: LoadedModel, calib: CalibrationSet, state: dict[int, Replacement],
                           candidates: list[int], config: SearchConfig) -> tuple[dict[int, Replacement], dict | None]:
    """Each candidate's replacement in ``state``, and for a fitted one each fit's relative held-out error."""
    kind = replacement(config.mode)
    if not kind.fitted:
        return uniform(candidates, config.mode), None
    return kind.fit_each(lm, candidates, calib, state, FitConfig(batch_size=config.batch_size))


def summarize_step(stats: StepStats, config: SearchConfig, step: int, target: Target) -> dict:
    """Values, scores, intervals and the selection of one step (the step record, minus timing)."""
    criterion = CRITERIA[config.criterion]
    where = f"target {target}"
    layers = sorted(stats.candidates)
    base = stats.base.value(where)
    values = {i: stats.candidates[i].value(where) for i in layers}
    scores = {i: float(criterion.score(base, values[i])) for i in layers}
    boot = None
    if config.bootstrap > 0 and stats.base.samples > 1:
        w = bootstrap_weights(stats.base.samples, config.bootstrap, config.seed, step)
        vb = stats.base.bootstrap(w, where)
        boot = {i: criterion.score(vb, stats.candidates[i].bootstrap(w, where)) for i in layers}
    return step_record(step, scores, boot, values=values, base_value=base)


def greedy_steps(lm: LoadedModel, calib: CalibrationSet, config: SearchConfig, target: Target,
                 candidates: list[int], removed: list[int], work: dict, progress=None, task=None) -> Iterator[dict]:
    """Yield one step record per greedy step after ``removed`` until ``config.steps`` are selected.

    ``work`` receives the decoder-layer and head forwards run (the benchmark's accounting).
    """
    runner = PrefixRunner(lm.model, lm.adapter, target)
    removed = list(removed)
    state: dict[int, Replacement] = {}
    for i in removed:  # a resumed search: the maps its layers were scored with, refitted alike
        state[i] = candidate_replacements(lm, calib, state, [i], config)[0][i]
    # fitted: one fit per layer in state, each a forward over every batch (the runner counts per batch)
    fitted = replacement(config.mode).fitted
    fit_forwards_per_layer = lm.num_layers * calib.batch_count(config.batch_size) if fitted else 0
    for step in range(len(removed), config.steps):
        t0 = time.perf_counter()
        remaining = [i for i in candidates if i not in removed]
        if progress:
            progress.update(task, description=f"step {step + 1}/{config.steps}: {len(remaining)} candidates")
        replacements, fit_errors = candidate_replacements(lm, calib, state, remaining, config)
        runner.record_mlp_outputs = any(r.uses_previous_mlp for r in replacements.values())
        stats = score_step(lm, calib, state, replacements, config, target, runner,
                           advance=(lambda: progress.advance(task)) if progress else (lambda: None))
        entry = summarize_step(stats, config, step, target)
        entry["removed_before"] = sorted(removed)
        if fit_errors is not None:
            entry["fit_heldout_relative_error"] = {str(i): round(e, 6) for i, e in sorted(fit_errors.items())}
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        removed.append(entry["selected"])
        state[entry["selected"]] = replacements[entry["selected"]]
        work.update(layer_forwards=runner.layer_calls + len(state) * fit_forwards_per_layer,
                    head_forwards=runner.head_calls)
        yield entry
