"""How much of the HumanEval gap is extraction? Re-judge an evaluation's answers whose extracted
code does not parse with EvalPlus's rule instead (the longest run of lines that parses), in the
same sandbox, and count what changes. Reads a ``nose evaluate --task humaneval`` folder.

    python experiments/humaneval-anchor/rejudge.py runs/tasks/humaneval-intact
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from nose.evaluate.run import test_outputs
from nose.sandbox import Limits
from nose.tasks import HUMANEVAL as task
from nose.tasks.code import keep_definitions


def longest_valid(code: str) -> str:
    """EvalPlus's ``extract_longest_valid_code``: the contiguous lines that parse with the most non-empty lines."""
    lines = code.splitlines()
    best, best_count = "", 0
    for i in range(len(lines)):
        for j in range(len(lines), i, -1):
            chunk = "\n".join(lines[i:j])
            count = sum(1 for line in lines[i:j] if line.strip())
            if count <= best_count:
                break
            try:
                ast.parse(chunk)
            except SyntaxError:
                continue
            best, best_count = chunk, count
            break
    return best


def main(folder: Path) -> None:
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    problems = {p.id: p for p in task.load(task.root(None))}
    broken = []
    for r in records:
        try:
            ast.parse(r["codes"][0])
        except SyntaxError:
            broken.append(r)
    salvaged = [keep_definitions(longest_valid(r["codes"][0])) + "\n" for r in broken]
    judged = test_outputs([problems[r["id"]] for r in broken], [[f"```python\n{c}```"] for c in salvaged],
                          Limits(wall_s=10, cpu_s=11), workers=2, task=task)
    before = sum(r["passed"][0] for r in records)
    gained = [j["id"] for j in judged if j["passed"][0]]
    print(json.dumps({"problems": len(records), "passed": before, "unparsable_code": len(broken),
                      "passed_after_salvage": [j["id"] for j in judged if j["passed"][0]],
                      "ca_percent": 100 * before / len(records),
                      "ca_percent_with_salvage": 100 * (before + len(gained)) / len(records),
                      "salvaged_verdicts": {j["id"]: j["verdicts"][0] for j in judged}}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
