"""Is a Java method too close to a benchmark sample? By name, or by token overlap (BLEU-4).

Names are compared normalized (``_`` removed, lower case) against both entry points of every
benchmark sample (the Java method's and the Python reference's). Token overlap is BLEU-4
(unsmoothed, brevity penalty, 0..1) of the method's Java tokens against each benchmark Java
program's tokens (the method is the hypothesis, the benchmark program the reference); above
:data:`BLEU_THRESHOLD` counts as overlap. Comments are dropped before tokenizing.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from nose.tasks.java_python.corpus import JavaMethod

BLEU_THRESHOLD = 0.5

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[A-Za-z_$][\w$]*|\d[\w.]*'
                    r"|>>>=|<<=|>>=|>>>|->|::|\+\+|--|&&|\|\||[<>=!+\-*/%&|^]=?|[{}()\[\];,.@?:~]")


def java_tokens(code: str) -> list[str]:
    return _TOKEN.findall(_COMMENT.sub(" ", code))


def normalized_name(name: str) -> str:
    return name.replace("_", "").lower()


def _ngrams(tokens: list[str]) -> list[Counter]:
    return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, 5)]


def bleu4(hyp: list[str], ref: list[str], hyp_grams: list[Counter] | None = None,
          ref_grams: list[Counter] | None = None) -> float:
    """Sentence BLEU-4 without smoothing: 0 when any n-gram order has no match."""
    if not hyp or not ref:
        return 0.0
    hg, rg = hyp_grams or _ngrams(hyp), ref_grams or _ngrams(ref)
    logs = []
    for n in (3, 2, 1, 0):  # the 4-gram order first: most pairs stop there
        total = sum(hg[n].values())
        matched = sum((hg[n] & rg[n]).values())
        if matched == 0 or total == 0:
            return 0.0
        logs.append(math.log(matched / total))
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(sum(logs) / 4)


@dataclass(frozen=True)
class Overlap:
    method: str
    sample_id: str
    kind: str  # "name" | "bleu"
    value: float | str


def find_overlaps(methods: list[JavaMethod], samples, threshold: float = BLEU_THRESHOLD) -> list[Overlap]:
    """Every (method, benchmark sample) pair that shares a normalized name or exceeds the BLEU-4
    threshold. ``samples``: :class:`nose.tasks.java_python.benchmark.Sample` objects."""
    names: dict[str, str] = {}
    refs = []
    for s in samples:
        for entry in (s.java_entry_point, s.python_entry_point):
            names.setdefault(normalized_name(entry), s.id)
        tokens = java_tokens(s.java)
        refs.append((s.id, tokens, _ngrams(tokens)))
    found = []
    for m in methods:
        if normalized_name(m.name) in names:
            found.append(Overlap(m.name, names[normalized_name(m.name)], "name", m.name))
        tokens = java_tokens(m.java)
        grams = _ngrams(tokens)
        for sid, ref, ref_grams in refs:
            score = bleu4(tokens, ref, grams, ref_grams)
            if score > threshold:
                found.append(Overlap(m.name, sid, "bleu", score))
    return found


def max_bleu(methods: list[JavaMethod], samples) -> tuple[float, str, str]:
    """The highest BLEU-4 of any method against any sample: (score, method, sample id)."""
    refs = [(s.id, java_tokens(s.java)) for s in samples]
    refs = [(sid, t, _ngrams(t)) for sid, t in refs]
    best = (0.0, "", "")
    for m in methods:
        tokens = java_tokens(m.java)
        grams = _ngrams(tokens)
        for sid, ref, ref_grams in refs:
            score = bleu4(tokens, ref, grams, ref_grams)
            if score > best[0]:
                best = (score, m.name, sid)
    return best
