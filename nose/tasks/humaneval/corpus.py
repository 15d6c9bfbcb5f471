"""The docstring-to-function problems nose ships (``functions.jsonl``): on-task inputs of another
kind than translation, for self-distilled transcripts (``--data complete``) and a held-out score
the project owns. Never HumanEval: the check below keeps them apart.

The 220 problems were written for nose (same licence as the project) in HumanEval's file format
(``task_id``, ``prompt``: signature and docstring with examples, ``entry_point``,
``canonical_solution``, ``test`` defining ``check(candidate)``), so ``nose evaluate --task
humaneval --benchmark`` reads them as they are. Twenty-five drafted problems were dropped before
shipping because they ask for the same function as a HumanEval problem, or a close variant, in
other words: a name and token check cannot see that, so it was done by hand. Dropped: second
largest / k-th smallest (``next_smallest``), overlapping substring counts (``how_many_times``),
Roman numerals both ways (``int_to_mini_roman``), prime sieves (``count_up_to``), bracket balance
(``correct_bracketing``), Caesar shifts (``encrypt``), digit products (``digits``), word counts
(``histogram``), median of three (``median``), one-bit counts (``sort_array``), anagrams
(``same_chars``), order-keeping dedupe (``unique``, ``remove_duplicates``), triangular numbers
(``sum_to_n``), gcd of a list (``greatest_common_divisor``), index of the maximum
(``max_element``), pair sums both ways (``pairs_sum_to_zero``), powers of three
(``is_simple_power``), days in a month (``valid_date``), Collatz steps (``get_odd_collatz``),
common elements (``common``), bits to int (``decimal_to_binary``), vowel positions
(``vowels_count``). The second set (114 problems, from ``reverse_words`` on: parsing, dates,
money, graphs, grids, dynamic programming, geometry, text formatting) was written to grow the
fit data after the first 82 training problems measured too few; one draft (real roots of a
quadratic) was dropped as close to ``find_zero``.

Overlap check (:func:`find_overlaps`, a test): no problem shares a normalized name with a
HumanEval entry point, and no problem's prompt and solution reach BLEU-4 above 0.5 against any
HumanEval problem's (Python tokens).
"""

from __future__ import annotations

import re
from pathlib import Path

from nose.tasks.overlap import BLEU_THRESHOLD, Overlap, overlaps

SHIPPED = Path(__file__).with_name("functions.jsonl")
_TOKEN = re.compile(r'"""|\'\'\'|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|[A-Za-z_]\w*|\d[\w.]*'
                    r"|\*\*=?|//=?|->|[<>=!+\-*/%&|^]=?|[()\[\]{}:;,.@~]")


def python_tokens(code: str) -> list[str]:
    return _TOKEN.findall(code)


def load_functions(path: Path | None = None) -> list:
    """The shipped problems (or a file in the same format) as :class:`~nose.tasks.humaneval.Problem`."""
    from nose.tasks.humaneval import load

    return load(Path(path) if path is not None else SHIPPED)


def find_overlaps(problems: list, benchmark: list, threshold: float = BLEU_THRESHOLD) -> list[Overlap]:
    """Every (shipped problem, HumanEval problem) pair sharing a normalized entry point or above the
    BLEU-4 threshold on prompt and solution."""
    return overlaps([(p.entry, python_tokens(p.prompt + p.solution)) for p in problems],
                    [(b.id, [b.entry], python_tokens(b.prompt + b.solution)) for b in benchmark], threshold)
