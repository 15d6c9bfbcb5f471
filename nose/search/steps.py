"""The step record every criterion writes into ``search.json``, and its bootstrap statistics.

A step record: ``step`` (1-based), ``base_value`` (the state's statistic; None for one-shot
criteria), ``candidates`` (``layer``, ``value``, ``score``, ``ci95``), ``selected`` (lowest
score, ties to the lower layer), its ``score`` and ``ci95``, ``runner_up`` and
``runner_up_score``, ``p_win`` (share of bootstrap replicates in which the winner stays below
the runner-up) and ``separated`` (the 95 % interval of that margin excludes 0); the caller adds
``removed_before`` and ``seconds``, and with ``--mode linear`` ``fit_heldout_relative_error``
(each candidate's fitted W: held-out squared error over the attention output's energy).
"""

from __future__ import annotations

import numpy as np


def bootstrap_weights(n_samples: int, replicates: int, seed: int, step: int) -> np.ndarray:
    """Resampling counts (replicates, n_samples), paired across candidates, seeded by (seed, step)."""
    rng = np.random.default_rng([seed, step])
    return rng.multinomial(n_samples, np.full(n_samples, 1.0 / n_samples), size=replicates).astype(np.float64)


def step_record(step: int, scores: dict[int, float], boot: dict[int, np.ndarray] | None = None,
                values: dict[int, float] | None = None, base_value: float | None = None) -> dict:
    """The record of step ``step`` (0-based) from each candidate's score and bootstrap replicates."""
    layers = sorted(scores)
    ranked = sorted(layers, key=lambda i: (scores[i], i))
    winner = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    ci: dict[int, list[float] | None] = {i: None for i in layers}
    separated, p_win = None, None
    if boot is not None:  # replicates that drew no counted token are NaN and left out
        for i in layers:
            if np.isfinite(boot[i]).any():
                lo, hi = np.nanpercentile(boot[i], [2.5, 97.5])
                ci[i] = [float(lo), float(hi)]
        margin = boot[runner_up] - boot[winner] if runner_up is not None else np.array([np.nan])
        margin = margin[np.isfinite(margin)]
        if margin.size:
            p_win = float(np.mean(margin > 0))
            separated = bool(np.percentile(margin, 2.5) > 0)
    values = values or {}
    return {
        "step": step + 1,
        "base_value": base_value,
        "candidates": [{"layer": i, "value": values.get(i), "score": scores[i], "ci95": ci[i]} for i in layers],
        "selected": winner,
        "score": scores[winner],
        "ci95": ci[winner],
        "runner_up": runner_up,
        "runner_up_score": scores[runner_up] if runner_up is not None else None,
        "p_win": p_win,
        "separated": separated,
    }
