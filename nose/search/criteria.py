"""What a criterion is, in one place: the registry every part of the search reads.

A :class:`Criterion` gives each candidate attention sublayer a *score*; the lowest is removed
first (ties to the lower layer). Greedy criteria rescore the remaining candidates from the new
state after each removal, through the prefix cache (:mod:`nose.search.greedy`); one-shot
criteria rank all candidates once, on the intact model (:mod:`nose.search.oneshot`). Adding a
criterion is one entry in :data:`CRITERIA`: the CLI's choices, the config checks, the search,
``search.json`` and the naive oracle (``nose/testing/naive_search.py``) all read it.

A greedy criterion's *statistic* is a class with ``observe(outputs (K, F), batch)`` (the
target's outputs at the batch's read positions), ``samples``, ``value(where)`` and
``bootstrap(weights (R, N), where)``; its ``score(value of S, value of S ∪ {i})`` works
elementwise, so bootstrap replicates go through the same function.

| name | kind | score of candidate i (lowest removed) |
|---|---|---|
| ``nose`` | greedy | ``H(S) − H(S ∪ {i})``, signed (NOSE, exactly as published) |
| ``nose-abs`` | greedy | ``|H(S) − H(S ∪ {i})|`` (variant: the size of the entropy change) |
| ``kl`` | greedy | mean ``KL(p_intact ‖ p_{S ∪ {i}})`` over counted next-token positions [nats/token] |
| ``loss`` | greedy | ``L(S ∪ {i}) − L(S)``, mean next-token NLL [nats/token] |
| ``cosine`` | one shot | ``1 − cos(x, x + Attn(LN1(x)))`` on the intact model |
| ``last`` | one shot | number of layers after i (deepest first) |
| ``random`` | one shot | position in a permutation seeded by ``--seed`` |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nose.search.entropy import MomentStats
from nose.search.kl import KLStats
from nose.search.loss import LossStats
from nose.search.oneshot import cosine_rank, last_rank, random_rank


def transfer_entropy(h_s, h_si):
    return h_s - h_si


def abs_transfer_entropy(h_s, h_si):
    return abs(h_s - h_si)


def increase(v_s, v_si):
    return v_si - v_s


def own_value(v_s, v_si):
    return v_si


@dataclass(frozen=True)
class Criterion:
    name: str
    kind: str  # "greedy" | "one-shot"
    score_name: str
    unit: str
    help: str  # one line for the CLI and the docs
    statistic: Callable | None = None  # greedy: a new, empty per-row statistic
    score: Callable = increase  # greedy: (value of S, value of S ∪ {i}) -> score, elementwise
    positions: str = "token"  # what the statistic reads: "token" features or "next"-token predictions
    target: str | None = None  # the features it needs; None: the configurable --target (final, logits, layer:N)
    reference: bool = False  # needs the intact model's next-token log-probs per batch
    rank: Callable | None = None  # one-shot: (lm, calib, config, candidates, advance) -> (scores, boot)
    oracle: str | None = None  # the naive oracle's statistic of a state: entropy | nll | kl

    @property
    def greedy(self) -> bool:
        return self.kind == "greedy"

    def record(self) -> dict:
        """The ``score`` block of ``search.json``."""
        return {"kind": self.kind, "name": self.score_name, "unit": self.unit}


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("nose", "greedy", "transfer entropy H(S) - H(S+i)", "nats",
              "NOSE: signed transfer entropy of the target features (greedy)",
              MomentStats, transfer_entropy, oracle="entropy"),
    Criterion("nose-abs", "greedy", "|H(S) - H(S+i)|", "nats",
              "NOSE variant: size of the entropy change, sign ignored (greedy)",
              MomentStats, abs_transfer_entropy, oracle="entropy"),
    Criterion("kl", "greedy", "mean KL(p_intact || p_S+i)", "nats/token",
              "output KL to the intact model on the calibration tokens (greedy)",
              KLStats, own_value, positions="next", target="logits", reference=True, oracle="kl"),
    Criterion("loss", "greedy", "loss increase L(S+i) - L(S)", "nats/token",
              "calibration LM-loss increase (greedy)",
              LossStats, increase, positions="next", target="logits", oracle="nll"),
    Criterion("cosine", "one-shot", "1 - cos(x, x + Attn(LN(x)))", "1",
              "attention-drop 1 - cos on the intact model (one shot)", rank=cosine_rank),
    Criterion("last", "one-shot", "layers after i", "layers", "deepest first (one shot)", rank=last_rank),
    Criterion("random", "one-shot", "position in the seeded permutation", "1",
              "a permutation seeded by --seed (one shot)", rank=random_rank),
)}
