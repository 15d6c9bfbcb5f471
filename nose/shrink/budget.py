"""k from a budget: ``nose shrink --search S --max-drop P --kv-budget F`` picks the cut itself.

- ``--kv-budget F``: the export keeps at most the share F of the model's KV cache. Every layer of
  the supported families caches the same number of values per token, so removing k of A
  attention layers keeps ``(A − k) / A``: k is at least ``ceil((1 − F) · A)``.
- ``--max-drop P``: the repaired model keeps at least ``1 − P`` of the intact model's
  computational accuracy on the project's held-out Java tests (:mod:`nose.evaluate.heldout_tests`:
  164 tests of 170 methods none of the fits reads, unless ``--budget-methods`` names others; never
  G-TransEval). The tests, not the held-out KL, because a drop budget needs a score on the scale
  of the accuracy a user loses: on the k = 6 export the tests kept 89 % where the unseen
  G-TransEval samples kept 85 %, while the teacher-forced top-1 agreement read 98 % (reports/
  repair.md and issue 34); and they chose the better k = 8 set where the KL did not.

The largest k of the search's order (at least the KV floor) whose repaired model stays within
the drop is found by bisection, so about log2(steps) + 1 repaired models are scored (each: the
replacement's fit for the first k layers, then greedy answers), assuming accuracy falls as k grows;
every score is kept in ``nose.json``. The repair is scored before healing: ``--steps`` heals the
chosen cut afterwards. A budget that no k of the order meets is a one-line error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nose.errors import NoseError


@dataclass(frozen=True)
class Budget:
    max_drop: float | None = None  # share of the intact held-out accuracy the export may lose
    kv_budget: float | None = None  # share of the KV cache the export may keep
    methods: str | None = None  # JSONL of Java methods to test; None: the project's held-out test methods

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.kv_budget is not None

    def validate(self) -> None:
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise NoseError(f"--max-drop must be at least 0 % and below 100 %, got {self.max_drop:.1%}")
        if self.kv_budget is not None and not 0 < self.kv_budget <= 1:
            raise NoseError(f"--kv-budget must be above 0 % and at most 100 %, got {self.kv_budget:.1%}")
        if self.methods is not None and self.max_drop is None:
            raise NoseError("--budget-methods applies to --max-drop only")

    def settings(self) -> dict:
        return {"max_drop": self.max_drop, "kv_budget": self.kv_budget, "methods": self.methods}


def parse_share(text: str | None, option: str) -> float | None:
    """``5%`` or ``0.05`` -> 0.05."""
    if text is None:
        return None
    value = text.strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise NoseError(f"{option} takes a share such as 5% or 0.05, got {text!r}") from None
    if not math.isfinite(share):
        raise NoseError(f"{option} takes a share such as 5% or 0.05, got {text!r}")
    return share


def kv_floor(kv_budget: float | None, attention_layers: int, order: list[int]) -> int:
    """The fewest layers of ``order`` to remove so that the KV cache kept is within the budget (at least 1)."""
    if kv_budget is None:
        return 1
    k = max(1, math.ceil((1 - kv_budget) * attention_layers - 1e-9))
    if k > len(order):
        raise NoseError(f"--kv-budget {kv_budget:.0%} needs {k} of the {attention_layers} attention layers removed; "
                        f"the search selected {len(order)}: run nose search --steps {k} (or raise the budget)")
    return k


def largest_within(lo: int, hi: int, kept: Callable[[int], float], floor: float) -> int | None:
    """The largest k in ``lo..hi`` with ``kept(k) >= floor`` by bisection (``kept`` assumed to fall
    as k grows); None when ``kept(lo)`` is already below it."""
    if kept(lo) < floor:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if kept(mid) >= floor:
            lo = mid
        else:
            hi = mid - 1
    return lo


def choose_cut(order: list[int], attention_layers: int, budget: Budget,
               accuracy: Callable[[list[int]], float] | None, intact: float | None) -> tuple[int, dict]:
    """The k of the budget and its record for ``nose.json``.

    ``accuracy(layers)``: the repaired model's held-out accuracy with ``layers`` removed (only
    called for ``--max-drop``); ``intact``: the intact model's."""
    floor_k = kv_floor(budget.kv_budget, attention_layers, order)
    record = {**budget.settings(), "order": order, "attention_layers": attention_layers, "kv_floor_k": floor_k}
    if budget.max_drop is None:
        return floor_k, {**record, "k": floor_k, "kv_kept": (attention_layers - floor_k) / attention_layers}
    if not intact:
        raise NoseError("the intact model passes none of the held-out tests, so a drop cannot be measured; "
                        "use a model that solves the task, or --budget-methods with methods it can translate")
    scores: dict[int, dict] = {}

    def kept(k: int) -> float:
        if k not in scores:
            ca = accuracy(order[:k])
            scores[k] = {"layers": order[:k], "accuracy": ca, "kept": ca / intact}
        return scores[k]["kept"]

    k = largest_within(floor_k, len(order), kept, 1 - budget.max_drop)
    record.update(intact_accuracy=intact, scores={str(i): scores[i] for i in sorted(scores)})
    if k is None:
        raise NoseError(f"no cut meets the budget: removing the first {floor_k} layers of the order "
                        f"{order[:floor_k]} keeps {scores[floor_k]['kept']:.1%} of the intact held-out accuracy, "
                        f"below the {1 - budget.max_drop:.1%} that --max-drop {budget.max_drop:.1%} allows"
                        + (" with --kv-budget" if budget.kv_budget is not None else ""))
    return k, {**record, "k": k, "kv_kept": (attention_layers - k) / attention_layers}


def allowance(max_drop: float, passed: int, cases: int) -> str:
    """What ``--max-drop`` allows, in tests: below two, one answer decides the budget (the shipped
    held-out split's 39 tests, 25 passed by Qwen2.5-Coder-0.5B, let 5 % lose 1.25; reports/budget.md)."""
    allowed = max_drop * passed
    line = (f"budget: --max-drop {max_drop:.1%} lets the repaired model lose {allowed:.2f} of the {passed} "
            f"held-out tests the intact model passes (of {cases})")
    if allowed < 2:
        line += "; one answer decides a budget this small: pass --budget-methods with more methods or raise --max-drop"
    return line


def heldout_accuracy(lm, budget: Budget, repaired: Callable[[list[int]], dict], work: Path, key: str,
                     progress=None, log=print) -> tuple[Callable[[list[int]], float], float]:
    """The scoring function :func:`choose_cut` calls and the intact model's accuracy.

    ``repaired(layers)``: the replacements that remove ``layers`` (fitted ones fitted here);
    answers go to ``work`` (one JSONL per model, named with ``key``, a digest of what made the
    repair, so a stopped choice resumes and another repair never reads its answers)."""
    from nose.evaluate.heldout_tests import cases_of, heldout_methods, passed_tests
    from nose.model.switches import attention_switched
    from nose.sandbox import require_isolation

    isolation = require_isolation()
    methods = heldout_methods(budget.methods)
    cases, left_out = cases_of(methods, progress=progress, log=log)
    if not cases:
        raise NoseError(f"none of the {len(methods)} held-out Java methods gets tests ({len(left_out)} left out); "
                        "pass --budget-methods with methods of supported signatures")

    def accuracy(layers: list[int], name: str) -> float:
        passed, _ = passed_tests(lm, methods, cases, work / f"answers-{key}-{name}.jsonl", isolation, progress, name)
        ca = sum(passed.values()) / len(cases)
        log(f"held-out tests, {name}: {sum(passed.values())} of {len(cases)} pass ({ca:.1%})")
        return ca

    intact = accuracy([], "intact")
    log(allowance(budget.max_drop, round(intact * len(cases)), len(cases)))

    def removed(layers: list[int]) -> float:
        with attention_switched(lm.model, repaired(layers), adapter=lm.adapter):
            return accuracy(layers, "remove-" + "-".join(map(str, layers)))

    return removed, intact
