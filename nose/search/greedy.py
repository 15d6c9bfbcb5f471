"""Greedy criteria (``nose``, ``nose-abs``, ``kl``, ``loss``; see :mod:`nose.search.criteria`).

At each step with removed set S, every candidate i (not removed, not protected) is scored from
the same state S, and the lowest score is removed next. The other candidates' switches are
restored before the next one is tried. Layer inputs are cached per batch
(:mod:`nose.search.prefix`), so candidate i costs only layers i..last. A criterion that compares
against the intact model (``kl``) gets the intact model's log-probs at the batch's read
positions from one extra forward per batch in the first step, before the state's switches are
applied; later steps re-run only the head on the hidden states kept then
(:meth:`nose.search.prefix.PrefixRunner.reference`).

Screen (``--screen m``): every candidate is scored on the first batch and only the m best on
the rest (:func:`score_step`). The exact step's cost is dominated by the candidates' tails (each
re-runs layers i..last and the head on every row); the screen cuts those to one batch for all
but m candidates, while the fit, the base pass and the kept candidates' tails stay.

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
full forwards an exact step runs per batch (fit, base, candidates' tails).

Uncertainty: the calibration samples are resampled with replacement (paired across candidates,
seeded by ``(seed, step)``) to give a 95 % percentile interval for each score, and the winner's
margin over the runner-up (see :func:`nose.search.steps.step_record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nose.errors import NoseError
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
from nose.replace.ridge import FitConfig, candidates_per_pass


@dataclass
class StepStats:
    """Statistics of one step: the base state and each candidate scored on every row, per sample;
    with a screen, ``screen`` holds every candidate's score on the screen rows."""

    base: object
    candidates: dict
    screen: dict | None = None
    screen_rows: int = 0


def score_step(lm: LoadedModel, calib: CalibrationSet, state: dict[int, Replacement],
               candidates: dict[int, Replacement], config: SearchConfig, target: Target, runner: PrefixRunner,
               advance: Callable[[], None] = lambda: None) -> StepStats:
    """Collect the criterion's statistic for ``state`` (the removed layers' replacements) and for
    each candidate added to it with its replacement.

    With ``config.screen = m`` (fewer than the candidates), every candidate is scored on the
    first batch only (the first batch with a counted token), and only the m best go on through
    the other batches: the kept candidates' statistics are exactly the exact search's, so the
    step picks what the exact search would whenever its winner passes the screen."""
    criterion = CRITERIA[config.criterion]
    base = criterion.statistic()
    per = {i: criterion.statistic() for i in candidates}
    scoring, screen, rows, screen_rows = list(candidates), None, 0, 0
    with TargetHook(target.module(lm.model, lm.adapter)) as hook:
        for k, batch in enumerate(calib.batches(config.batch_size, criterion.positions)):
            if criterion.reference:
                batch.reference = runner.reference(batch, k)
            with attention_switched(lm.model, state, adapter=lm.adapter):
                hook.collect(base, batch)
                runner.base(batch)
                for i in scoring:
                    hook.collect(per[i], batch)
                    with attention_switched(lm.model, {i: candidates[i]}, adapter=lm.adapter):
                        runner.tail(i)
                hook.collect(None)
            rows += batch.size
            if screen is None and 0 < config.screen < len(candidates):
                screen = _screen_scores(base, per, criterion, f"target {target}")
                if screen is not None:
                    scoring = sorted(sorted(candidates, key=lambda i: (screen[i], i))[:config.screen])
                    screen_rows = rows
            advance()
    if screen is None:
        return StepStats(base, per)
    return StepStats(base, {i: per[i] for i in scoring}, screen, screen_rows)


def _screen_scores(base, per: dict, criterion, where: str) -> dict[int, float] | None:
    """Each candidate's score on the rows read so far, or None while they hold no counted token."""
    try:
        value = base.value(where)
        return {i: float(criterion.score(value, stat.value(where))) for i, stat in per.items()}
    except NoseError:
        return None


def candidate_replacements(lm: LoadedModel, calib: CalibrationSet, state: dict[int, Replacement],
                           candidates: list[int], config: SearchConfig) -> tuple[dict[int, Replacement], dict | None, int]:
    """Each candidate's replacement in ``state``; for a fitted one each fit's relative held-out error
    and the full forwards per batch the fits ran (``fit_each`` fits its candidates in groups)."""
    kind = replacement(config.mode)
    if not kind.fitted:
        return uniform(candidates, config.mode), None, 0
    fitted, errors = kind.fit_each(lm, candidates, calib, state, FitConfig(batch_size=config.batch_size))
    per_pass = candidates_per_pass(lm.model.config, type(fitted[candidates[0]]))
    return fitted, errors, -(-len(candidates) // per_pass)


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
    entry = step_record(step, scores, boot, values=values, base_value=base)
    if stats.screen is not None:
        for c in entry["candidates"]:
            c["screen_score"] = stats.screen[c["layer"]]
        entry["screen_rows"] = stats.screen_rows
        entry["screened_out"] = [{"layer": i, "screen_score": stats.screen[i]}
                                 for i in sorted(stats.screen, key=lambda i: (stats.screen[i], i)) if i not in scores]
    return entry


def greedy_steps(lm: LoadedModel, calib: CalibrationSet, config: SearchConfig, target: Target,
                 candidates: list[int], removed: list[int], work: dict, progress=None, task=None) -> Iterator[dict]:
    """Yield one step record per greedy step after ``removed`` until ``config.steps`` are selected.

    ``work`` receives the decoder-layer and head forwards run (the benchmark's accounting).
    """
    runner = PrefixRunner(lm.model, lm.adapter, target)
    removed = list(removed)
    state: dict[int, Replacement] = {}
    fit_passes = 0  # full forwards over every batch run by fits (the runner counts its own per batch)
    for i in removed:  # a resumed search: the maps its layers were scored with, refitted alike
        refit, _, passes = candidate_replacements(lm, calib, state, [i], config)
        state[i] = refit[i]
        fit_passes += passes
    for step in range(len(removed), config.steps):
        t0 = time.perf_counter()
        remaining = [i for i in candidates if i not in removed]
        if progress:
            progress.update(task, description=f"step {step + 1}/{config.steps}: {len(remaining)} candidates")
        replacements, fit_errors, passes = candidate_replacements(lm, calib, state, remaining, config)
        fit_passes += passes
        runner.record_mlp_hidden = any(r.uses_previous_mlp for r in replacements.values())
        stats = score_step(lm, calib, state, replacements, config, target, runner,
                           advance=(lambda: progress.advance(task)) if progress else (lambda: None))
        entry = summarize_step(stats, config, step, target)
        entry["removed_before"] = sorted(removed)
        if fit_errors is not None:
            entry["fit_heldout_relative_error"] = {str(i): round(e, 6) for i, e in sorted(fit_errors.items())}
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        removed.append(entry["selected"])
        state[entry["selected"]] = replacements[entry["selected"]]
        work.update(layer_forwards=runner.layer_calls + fit_passes * lm.num_layers * calib.batch_count(config.batch_size),
                    head_forwards=runner.head_calls)
        yield entry
