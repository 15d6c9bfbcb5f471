"""The user's own task (``--task jsonl``): problems read from a JSONL file, judged by the user's
test code in the sandbox, run end to end by ``nose evaluate``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nose.cli.app import app
from nose.errors import NoseError
from nose.evaluate.run import test_outputs as judge
from nose.sandbox import Limits
from nose.tasks import JSONL as task

runner = CliRunner()

PROBLEMS = [
    {"id": "add", "prompt": "Write a Python function add(a, b) that returns a + b.", "entry_point": "add",
     "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
     "reference": "def add(a, b):\n    return a + b\n", "group": "arith"},
    {"id": "dedupe", "prompt": "Write dedupe(xs) keeping the first of each item, in order.", "entry_point": "dedupe",
     "setup": "from collections import OrderedDict", "test": "assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]\n",
     "group": "lists"},
    {"id": "double", "prompt": "Write double(x).", "entry_point": "double",
     "test": "def check(f):\n    assert f(4) == 8\n", "reference": "def double(x):\n    return 2 * x\n",
     "group": "arith"},
]


@pytest.fixture()
def task_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROBLEMS) + "\n\n")
    return path


def fenced(code: str) -> str:
    return f"Sure:\n```python\n{code}```\n"


def test_problems_load_with_groups_and_select(task_file):
    problems = task.load(task.root(task_file))
    assert [(p.id, p.level, p.type) for p in problems] == [("add", "arith", 0), ("dedupe", "lists", 1),
                                                            ("double", "arith", 0)]
    assert problems[1].reference is None and problems[1].setup.startswith("from collections")
    assert [p.id for p in task.select(problems, ["double", "add"])] == ["double", "add"]
    assert [p.id for p in task.select(problems, limit=2, stratified=True)] == ["add", "dedupe"]
    assert [p.id for p in task.select(problems, limit=2)] == ["add", "dedupe"]
    with pytest.raises(NoseError, match="unknown ids nope"):
        task.select(problems, ["nope"])
    assert "Write double(x)." in task.prompt.render(_no_chat(), **task.fields(problems[2]))


def _no_chat():
    class Plain:  # a tokenizer without a chat template: the plain-text rendering
        chat_template = None
    return Plain()


@pytest.mark.parametrize("record, message", [
    ('{"id": "a", "prompt": "p", "entry_point": "f"}', "line 1 has no test"),
    ('{"id": "a", "prompt": "p", "entry_point": "f", "test": "t", "tests": "x"}', "unknown field(s) tests"),
    ('{"id": "a", "prompt": "p", "entry_point": "f-g", "test": "t"}', "is not a Python name"),
    ('{"id": "a", "prompt": "p", "entry_point": "f", "test": "t", "group": 3}', "group must be strings"),
    ('[1, 2]', "is not a JSON object"),
    ('{"id": "a", ', "is not JSON"),
])
def test_bad_records_are_one_line_errors_naming_the_line(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(record + "\n")
    with pytest.raises(NoseError, match=message.replace("(", r"\(").replace(")", r"\)").replace("line 1", r"jsonl:1")):
        task.load(path)


def test_repeated_ids_empty_files_and_missing_paths_are_refused(tmp_path):
    path = tmp_path / "twice.jsonl"
    path.write_text("\n".join(json.dumps(PROBLEMS[0]) for _ in range(2)))
    with pytest.raises(NoseError, match="twice.jsonl:2 repeats id 'add'"):
        task.load(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(NoseError, match="holds no problem"):
        task.load(tmp_path / "empty.jsonl")
    with pytest.raises(NoseError, match="add --benchmark FILE.jsonl"):
        task.root(None)
    with pytest.raises(NoseError, match="name a .jsonl file"):
        task.root(tmp_path)


def test_answers_are_judged_by_the_users_test_code(task_file):
    add, dedupe, double = task.load(task_file)
    answers = [[fenced("def add(a, b):\n    return a + b\n")],  # check(candidate) called
               [fenced("def dedupe(xs):\n    return list(OrderedDict.fromkeys(xs))\n")],  # setup in front, asserts
               [fenced("def double(x):\n    return x + 2\n")]]  # right at 2, wrong at 4
    records = judge([add, dedupe, double], answers, Limits(wall_s=20, cpu_s=10), workers=2, task=task)
    assert [r["verdicts"][0] for r in records] == ["passed", "passed", "wrong"]
    assert records[1]["bleu"] is None and records[1]["codebleu"] is None and records[0]["bleu"] > 50
    others = judge([add, add], [[fenced("def plus(a, b):\n    return a + b\n")], [fenced("def add(a, b)\n  x\n")]],
                   Limits(wall_s=20, cpu_s=10), workers=2, task=task)
    assert [r["verdicts"][0] for r in others] == ["no_function", "error"]


def test_cli_evaluates_a_users_task_file(saved_tiny, task_file, tmp_path):
    out = tmp_path / "mine"
    res = runner.invoke(app, ["evaluate", "--task", "jsonl", "--benchmark", str(task_file), "--model",
                              str(saved_tiny("llama")), "--max-new-tokens", "4", "--no-efficiency", "--out", str(out),
                              "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    m = results["metrics"]
    assert results["task"] == "jsonl" and m["samples"] == 3 and set(m["ca_by_type"]) == {"arith", "lists"}
    assert m["text_metric_samples"] == 2 and m["bleu"] is not None
    assert {json.loads(line)["id"] for line in (out / "samples.jsonl").read_text().splitlines()} == \
        {"add", "dedupe", "double"}
    missing = runner.invoke(app, ["evaluate", "--task", "jsonl", "--model", str(saved_tiny("llama")),
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "add --benchmark FILE.jsonl" in missing.stderr
