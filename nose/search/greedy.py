"""The NOSE greedy search (DESIGN.md, "Entropy and transfer entropy").

At each step with removed set S, every candidate i (not removed, not protected) is scored from
the same state S: ``TE_i = H(S) − H(S ∪ {i})``, and the signed minimum is removed next. The
other candidates' switches are restored before the next one is tried. Layer inputs are cached
per batch (:mod:`nose.search.prefix`), so candidate i costs only layers i..last.

Uncertainty: the calibration samples are resampled with replacement (paired across candidates,
seeded by ``(seed, step)``) to give a 95 % percentile interval for each TE, and the winner's
margin over the runner-up; a step whose margin interval contains 0 is marked not separated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nose.errors import NoseError
from nose.model.adapters import is_noop_attention
from nose.model.loading import LoadedModel
from nose.model.switches import MODES, attention_switched, check_layer_indices
from nose.search.calibration import CalibrationSet
from nose.search.entropy import MomentStats
from nose.search.prefix import PrefixRunner
from nose.files import write_json_atomic
from nose.search.record import FILENAME, check_resumable, new_record
from nose.search.target import Target, TargetHook


@dataclass
class SearchConfig:
    """Settings of one search; validated against the model by :meth:`validate`."""

    steps: int = 4  # attention sublayers to select, one per greedy step
    mode: str = "skip"  # switch mode used while scoring: skip | double | thesis
    target: str = "final"  # final | logits | layer:N
    protect: list[int] = field(default_factory=list)  # layers never removed
    protect_layer0: bool = True  # engines need layer 0's attention (DESIGN.md, export)
    seed: int = 0  # bootstrap (and calibration order) seed
    bootstrap: int = 200  # bootstrap replicates per step; 0 = no intervals
    batch_size: int = 4  # calibration rows per forward; bounds the prefix cache

    def validate(self, num_layers: int, absent: list[int] = ()) -> Target:
        """Check against the model; ``absent``: layers whose attention an export already removed."""
        if self.mode not in MODES:
            raise NoseError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.batch_size < 1:
            raise NoseError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.bootstrap < 0:
            raise NoseError(f"--bootstrap must be 0 or more, got {self.bootstrap}")
        target = Target.parse(self.target, num_layers)
        check_layer_indices(self.protect, num_layers, what="--protect layer")
        n_cand = len([i for i in self.candidates(num_layers, target) if i not in absent])
        if self.steps < 1:
            raise NoseError(f"--steps must be at least 1, got {self.steps}")
        if self.steps > n_cand:
            raise NoseError(f"--steps {self.steps} is larger than the {n_cand} candidate layers "
                            f"({num_layers} layers, protected: {self.protected()}, target {target})")
        return target

    def protected(self) -> list[int]:
        return sorted(set(self.protect) | ({0} if self.protect_layer0 else set()))

    def candidates(self, num_layers: int, target: Target) -> list[int]:
        last = target.last_layer(num_layers)
        return [i for i in range(last + 1) if i not in self.protected()]

    def settings(self, criterion: str = "nose") -> dict:
        d = asdict(self)
        d["protect"] = self.protected()
        del d["protect_layer0"]
        return {"criterion": criterion, **d}


@dataclass
class StepScores:
    """Entropies of one step: the base state and each candidate, with per-sample moments."""

    base: MomentStats
    candidates: dict[int, MomentStats]


def score_step(lm: LoadedModel, calib: CalibrationSet, removed: list[int], candidates: list[int],
               config: SearchConfig, target: Target, runner: PrefixRunner,
               advance: Callable[[], None] = lambda: None) -> StepScores:
    """Collect target moments for state ``removed`` and for each candidate added to it."""
    base = MomentStats()
    per = {i: MomentStats() for i in candidates}
    with attention_switched(lm.model, removed, config.mode, adapter=lm.adapter), \
            TargetHook(target.module(lm.model, lm.adapter)) as hook:
        for ids, mask in calib.batches(config.batch_size):
            hook.collect(base, mask)
            runner.base(ids, mask)
            for i in candidates:
                hook.collect(per[i], mask)
                with attention_switched(lm.model, [i], config.mode, adapter=lm.adapter):
                    runner.tail(i)
            hook.collect(None, None)
            advance()
    return StepScores(base, per)


def summarize_step(scores: StepScores, config: SearchConfig, step: int, target: Target) -> dict:
    """Entropies, TE, intervals and the selection of one step (the step record, minus timing)."""
    where = f"target {target}"
    h_base = scores.base.entropy(where)
    layers = sorted(scores.candidates)
    h = {i: scores.candidates[i].entropy(where) for i in layers}
    te = {i: h_base - h[i] for i in layers}
    order = sorted(layers, key=lambda i: (te[i], i))
    winner = order[0]
    runner_up = order[1] if len(order) > 1 else None
    ci: dict[int, list[float] | None] = {i: None for i in layers}
    separated, p_win = None, None
    n_samples = scores.base.samples
    if config.bootstrap > 0 and n_samples > 1:
        rng = np.random.default_rng([config.seed, step])
        w = rng.multinomial(n_samples, np.full(n_samples, 1.0 / n_samples), size=config.bootstrap).astype(np.float64)
        hb = scores.base.bootstrap_entropy(w, where)
        te_b = {i: hb - scores.candidates[i].bootstrap_entropy(w, where) for i in layers}
        for i in layers:
            lo, hi = np.percentile(te_b[i], [2.5, 97.5])
            ci[i] = [float(lo), float(hi)]
        if runner_up is not None:
            margin = te_b[runner_up] - te_b[winner]
            p_win = float(np.mean(margin > 0))
            separated = bool(np.percentile(margin, 2.5) > 0)
    return {
        "step": step + 1,
        "base_entropy": h_base,
        "candidates": [{"layer": i, "entropy": h[i], "te": te[i], "ci95": ci[i]} for i in layers],
        "selected": winner,
        "te": te[winner],
        "ci95": ci[winner],
        "runner_up": runner_up,
        "runner_up_te": te[runner_up] if runner_up is not None else None,
        "p_win": p_win,
        "separated": separated,
    }


def nose_search(lm: LoadedModel, calib: CalibrationSet, config: SearchConfig, out_dir: Path | None = None,
                resume: dict | None = None, progress=None) -> dict:
    """Run (or continue) the greedy search; returns the search record (see record.py).

    ``out_dir``: when given, ``search.json`` is rewritten there after every step.
    ``resume``: a previous record; its steps are kept and the search continues from them.
    ``progress``: a ``rich.progress.Progress`` to report on, or None for silence.
    """
    layers = lm.adapter.layers_of(lm.model)
    absent = [i for i, layer in enumerate(layers) if is_noop_attention(lm.adapter.attention_of(layer))]
    target = config.validate(lm.num_layers, absent)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    settings = config.settings()
    record = new_record(lm.provenance(), calib.describe(), settings)
    if resume is not None:
        check_resumable(resume, record["model"], record["calibration"], settings)
        record["steps"] = [s for s in resume["steps"] if s["step"] <= config.steps]
        record["created"] = resume.get("created", record["created"])
    record["settings"]["steps"] = config.steps
    removed = [s["selected"] for s in record["steps"]]
    runner = PrefixRunner(lm.model, lm.adapter, target)
    candidates_all = [i for i in config.candidates(lm.num_layers, target) if i not in absent]
    n_batches = -(-calib.samples // config.batch_size)
    task = progress.add_task("search", total=config.steps * n_batches,
                             completed=len(removed) * n_batches) if progress else None

    for step in range(len(removed), config.steps):
        t0 = time.perf_counter()
        candidates = [i for i in candidates_all if i not in removed]
        if progress:
            progress.update(task, description=f"step {step + 1}/{config.steps}: {len(candidates)} candidates")
        scores = score_step(lm, calib, removed, candidates, config, target, runner,
                            advance=(lambda: progress.advance(task)) if progress else (lambda: None))
        entry = summarize_step(scores, config, step, target)
        entry["removed_before"] = sorted(removed)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        record["steps"].append(entry)
        removed.append(entry["selected"])
        record["order"] = list(removed)
        record["complete"] = len(removed) == config.steps
        if out_dir is not None:
            write_json_atomic(Path(out_dir) / FILENAME, record)
    record["order"] = list(removed)
    record["complete"] = True
    record["work"] = {"layer_forwards": runner.layer_calls, "head_forwards": runner.head_calls}
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / FILENAME, record)
    return record
