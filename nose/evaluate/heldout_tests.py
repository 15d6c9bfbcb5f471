"""Computational accuracy on Java methods of the project's own, tested by running the Java.

The score that chooses without G-TransEval (reports/repair.md, tenth round): a model answers each
method greedily with the task's prompt, and each answer runs, sandboxed, against tests made by
running the Java (:mod:`nose.tasks.java_python.java_tests`). The tests of a method set are built
once and cached under ``$NOSE_CACHE/java-tests/`` by the methods' digest; the answers go to a
JSONL per model (``nose.data.transcripts.answer_methods``), so a stopped run resumes. Used by
``nose shrink --max-drop`` (:mod:`nose.shrink.budget`) and ``benchmarks/heldout_tests.py``.
"""

from __future__ import annotations

from pathlib import Path

from nose.data.transcripts import answer_methods, split_of
from nose.model.presets import cache_root
from nose.tasks.java_python.corpus import TEST_METHODS, JavaMethod, load_methods, methods_sha256
from nose.tasks.java_python.java_tests import Case, build_cases, read_cases, score_answers, write_cases

INPUTS_PER_METHOD = 10


def heldout_methods(path: str | Path | None = None) -> list[JavaMethod]:
    """The methods of a JSONL file, or by default the project's test methods: the shipped corpus's
    held-out split (41) and the 129 methods written only for testing (170; 164 get tests). Neither
    is ever fitted on. The held-out split alone (39 tests) was too coarse for a budget: Qwen2.5-
    Coder-0.5B passes 25, so one answer is 4 % of its accuracy (reports/budget.md)."""
    if path is not None:
        return load_methods(path)
    return [m for m in load_methods() if split_of(m.name) == "heldout"] + load_methods(TEST_METHODS)


def cases_of(methods: list[JavaMethod], inputs: int = INPUTS_PER_METHOD, path: Path | None = None,
               progress=None, log=lambda msg: None) -> tuple[list[Case], dict[str, str]]:
    """The tests of ``methods`` (and the left-out methods with the reason), built once per method set."""
    meta = {"methods_sha256": methods_sha256(methods), "inputs_per_method": inputs, "seed": 0}
    path = path or cache_root() / "java-tests" / f"{meta['methods_sha256'][:16]}-{inputs}.json"
    if path.exists():
        cases, left_out, stored = read_cases(path)
        if stored == meta:
            return cases, left_out
    log(f"building tests for {len(methods)} Java methods by running them (once; cached in {path})")
    cases, left_out = build_cases(methods, inputs, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_cases(path, cases, left_out, meta)
    return cases, left_out


def passed_tests(lm, methods: list[JavaMethod], cases: list[Case], answers: Path, isolation,
                 progress=None, label: str = "answers") -> tuple[dict[str, bool], float]:
    """Per test case: whether ``lm`` (as it is switched now) passes it; and the generation seconds."""
    records, seconds = answer_methods(lm, methods, answers, progress=progress, label=label)
    replies = {sha: r["messages"][-1]["content"] for sha, r in records.items()}
    return score_answers(cases, replies, isolation=isolation, progress=progress, label=f"{label}: tests"), seconds
