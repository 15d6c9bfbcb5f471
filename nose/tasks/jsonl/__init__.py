"""The user's own task: Python functions to write, read from a JSONL file the user keeps, judged
by the user's test code in the same sandbox as the built-in tasks.

``nose evaluate --task jsonl --benchmark my_task.jsonl`` measures what a cut costs on the job a
model is compressed for. One JSON object per line:

| field | | what it is |
|---|---|---|
| ``id`` | required | a unique name (``--ids`` picks by it) |
| ``prompt`` | required | the whole user message the model gets (the chat template wraps it) |
| ``entry_point`` | required | the function the answer must define at its top level |
| ``test`` | required | Python run after the answer; when it defines ``check``, ``check(<entry_point>)`` is called; a clean exit passes (``assert`` failures are ``wrong``) |
| ``setup`` | optional | Python run before the answer (imports, helpers the prompt gives) |
| ``reference`` | optional | a reference solution: BLEU and CodeBLEU are computed on the samples that have one |
| ``group`` | optional | a group name: results.json reports CA per group |

The answer's code is extracted as for every Python task (:mod:`nose.tasks.code`). The file is
only read: like every benchmark, nothing is fitted or chosen on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nose.errors import NoseError
from nose.model.generation import PromptConfig
from nose.tasks.code import checked_program, checked_verdict, defined_function, extract_code
from nose.tasks.task import Task, by_ids

REQUIRED = ("id", "prompt", "entry_point", "test")
OPTIONAL = ("setup", "reference", "group")
PROMPT = PromptConfig("{prompt}", None, cue="\n", required="prompt")


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    entry: str
    test: str
    setup: str = ""
    reference: str | None = None
    level: str = "all"  # the group's name
    type: int = 0  # the group's index, in order of first appearance


def find_root(path: Path | None) -> Path:
    if path is None:
        raise NoseError("--task jsonl reads your problems from a file: add --benchmark FILE.jsonl "
                        "(one object per line with id, prompt, entry_point, test; see the README)")
    path = Path(path)
    if not path.is_file() or not path.name.endswith(".jsonl"):
        raise NoseError(f"--benchmark {path}: for --task jsonl name a .jsonl file of problems")
    return path


def _problem(record, groups: dict[str, int]) -> Problem:
    if not isinstance(record, dict):
        raise ValueError("is not a JSON object")
    missing = [k for k in REQUIRED if not isinstance(record.get(k), str) or not record[k].strip()]
    if missing:
        raise ValueError(f"has no {', '.join(missing)} (a non-empty string each)")
    unknown = sorted(set(record) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"has unknown field(s) {', '.join(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    bad = [k for k in OPTIONAL if k in record and not isinstance(record[k], str)]
    if bad:
        raise ValueError(f"field(s) {', '.join(bad)} must be strings")
    if not record["entry_point"].isidentifier():
        raise ValueError(f"entry_point {record['entry_point']!r} is not a Python name")
    group = record.get("group") or "all"
    return Problem(record["id"], record["prompt"], record["entry_point"], record["test"], record.get("setup", ""),
                   record.get("reference"), group, groups.setdefault(group, len(groups)))


def load(path: Path) -> list[Problem]:
    problems, groups, seen = [], {}, set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            problem = _problem(json.loads(line), groups)
        except json.JSONDecodeError:
            raise NoseError(f"{path}:{n} is not JSON") from None
        except ValueError as e:
            raise NoseError(f"{path}:{n} {e}") from None
        if problem.id in seen:
            raise NoseError(f"{path}:{n} repeats id {problem.id!r}; ids must be unique")
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        raise NoseError(f"{path} holds no problem")
    return problems


def select(problems: list[Problem], ids: list[str] | None = None, limit: int | None = None,
           stratified: bool = False) -> list[Problem]:
    """By id, else the first ``limit`` (``stratified``: the same share of every group)."""
    if ids:
        return by_ids(problems, ids, "unknown ids {} in the task file")
    if not limit or limit >= len(problems):
        return problems
    if not stratified:
        return problems[:limit]
    groups: dict[int, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.type, []).append(p)
    share = {t: max(1, round(limit * len(g) / len(problems))) for t, g in groups.items()}
    picked = {p.id for t, g in groups.items() for p in g[:share[t]]}
    return [p for p in problems if p.id in picked][:limit]


def _no_corpus(path=None):
    raise NoseError("a jsonl task ships no on-task corpus; transcripts and fits use java-python's or a file "
                    "you pass (--data)")


TASK = Task(
    name="jsonl",
    summary="your own problems from a JSONL file: write the named function, judged by your test code",
    root=find_root,
    load=load,
    select=select,
    prompt=PROMPT,
    fields=lambda p: {"prompt": p.prompt},
    extract=extract_code,
    entry_point=lambda code, p: defined_function(code, p.entry),
    program=lambda code, entry, p: checked_program(p.setup, code, p.test, entry),
    verdict=checked_verdict,
    reference=lambda p: p.reference,
    corpus=_no_corpus,
    overlap=lambda corpus, problems: [],
)
