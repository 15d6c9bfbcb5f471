"""Is an on-task input the project ships too close to a benchmark problem? The measures every
task's overlap check shares: names compared normalized, and token overlap as BLEU-4.

BLEU-4 here is unsmoothed, with the brevity penalty, 0..1: the shipped input's tokens are the
hypothesis, the benchmark problem's the reference; above :data:`BLEU_THRESHOLD` counts as
overlap. Each task tokenizes its own language (:mod:`nose.tasks.java_python.overlap`,
:mod:`nose.tasks.humaneval.corpus`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

BLEU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Overlap:
    method: str  # the shipped input's name
    sample_id: str
    kind: str  # "name" | "bleu"
    value: float | str


def normalized_name(name: str) -> str:
    return name.replace("_", "").lower()


def ngrams(tokens: list[str]) -> list[Counter]:
    return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, 5)]


def bleu4(hyp: list[str], ref: list[str], hyp_grams: list[Counter] | None = None,
          ref_grams: list[Counter] | None = None) -> float:
    """Sentence BLEU-4 without smoothing: 0 when any n-gram order has no match."""
    if not hyp or not ref:
        return 0.0
    hg, rg = hyp_grams or ngrams(hyp), ref_grams or ngrams(ref)
    logs = []
    for n in (3, 2, 1, 0):  # the 4-gram order first: most pairs stop there
        total = sum(hg[n].values())
        matched = sum((hg[n] & rg[n]).values())
        if matched == 0 or total == 0:
            return 0.0
        logs.append(math.log(matched / total))
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(sum(logs) / 4)


def overlaps(inputs: list[tuple[str, list[str]]], problems: list[tuple[str, list[str], list[str]]],
             threshold: float = BLEU_THRESHOLD) -> list[Overlap]:
    """Every (input, problem) pair that shares a normalized name or exceeds the BLEU-4 threshold.
    ``inputs``: (name, tokens); ``problems``: (id, names, tokens)."""
    names: dict[str, str] = {}
    refs = []
    for pid, problem_names, tokens in problems:
        for name in problem_names:
            names.setdefault(normalized_name(name), pid)
        refs.append((pid, tokens, ngrams(tokens)))
    found = []
    for name, tokens in inputs:
        if normalized_name(name) in names:
            found.append(Overlap(name, names[normalized_name(name)], "name", name))
        grams = ngrams(tokens)
        for pid, ref, ref_grams in refs:
            score = bleu4(tokens, ref, grams, ref_grams)
            if score > threshold:
                found.append(Overlap(name, pid, "bleu", score))
    return found


def max_bleu(inputs: list[tuple[str, list[str]]], problems: list[tuple[str, list[str]]]) -> tuple[float, str, str]:
    """The highest BLEU-4 of any input against any problem: (score, input name, problem id)."""
    refs = [(pid, t, ngrams(t)) for pid, t in problems]
    best = (0.0, "", "")
    for name, tokens in inputs:
        grams = ngrams(tokens)
        for pid, ref, ref_grams in refs:
            score = bleu4(tokens, ref, grams, ref_grams)
            if score > best[0]:
                best = (score, name, pid)
    return best
