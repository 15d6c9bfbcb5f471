"""Is a Java method too close to a G-TransEval sample? By name, or by token overlap (BLEU-4,
:mod:`nose.tasks.overlap`).

Names are compared normalized (``_`` removed, lower case) against both entry points of every
benchmark sample (the Java method's and the Python reference's). Token overlap is BLEU-4 of the
method's Java tokens against each benchmark Java program's tokens. Comments are dropped before
tokenizing.
"""

from __future__ import annotations

import re

from nose.tasks.java_python.corpus import JavaMethod
from nose.tasks.overlap import BLEU_THRESHOLD, Overlap, bleu4, overlaps
from nose.tasks.overlap import max_bleu as _max_bleu

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[A-Za-z_$][\w$]*|\d[\w.]*'
                    r"|>>>=|<<=|>>=|>>>|->|::|\+\+|--|&&|\|\||[<>=!+\-*/%&|^]=?|[{}()\[\];,.@?:~]")

__all__ = ["BLEU_THRESHOLD", "Overlap", "bleu4", "find_overlaps", "java_tokens", "max_bleu"]


def java_tokens(code: str) -> list[str]:
    return _TOKEN.findall(_COMMENT.sub(" ", code))


def find_overlaps(methods: list[JavaMethod], samples, threshold: float = BLEU_THRESHOLD) -> list[Overlap]:
    """Every (method, benchmark sample) pair that shares a normalized name or exceeds the BLEU-4
    threshold. ``samples``: :class:`nose.tasks.java_python.benchmark.Sample` objects."""
    return overlaps([(m.name, java_tokens(m.java)) for m in methods],
                    [(s.id, [s.java_entry_point, s.python_entry_point], java_tokens(s.java)) for s in samples],
                    threshold)


def max_bleu(methods: list[JavaMethod], samples) -> tuple[float, str, str]:
    """The highest BLEU-4 of any method against any sample: (score, method, sample id)."""
    return _max_bleu([(m.name, java_tokens(m.java)) for m in methods], [(s.id, java_tokens(s.java)) for s in samples])
