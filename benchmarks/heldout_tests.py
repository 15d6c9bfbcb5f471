"""Computational accuracy on Java methods of our own, tested by running the Java: choose without G-TransEval.

Each checkpoint (``label=folder``; the intact ``--model`` is always the first row) answers every
test method greedily with the evaluation's prompt (``nose.data.transcripts.answer_methods``;
answers appended to ``--work/answers-<label>.jsonl`` by :mod:`nose.evaluate.heldout_tests`, so a stopped run resumes), and each answer
runs, sandboxed, against tests made by running the Java (:mod:`nose.tasks.java_python.java_tests`; built
once into ``--work/cases.json``). The test methods: ``--methods`` or the project's held-out test
methods (:func:`nose.evaluate.heldout_tests.heldout_methods`: the shipped corpus's held-out split
and the methods written only for testing, 170; never fitted on). Writes a JSON file (per row: CA,
kept share of the intact CA, the paired difference to the intact model with its 95 % bootstrap
interval, and every method's pass or fail) and prints a markdown table.

    python benchmarks/heldout_tests.py --checkpoints k8=runs/k8-linear,k6=runs/k6-linear \\
        --work runs/heldout-tests --out runs/heldout-tests/ca.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.evaluate.heldout_tests import cases_of, heldout_methods, passed_tests  # noqa: E402
from nose.sandbox import require_isolation  # noqa: E402
from nose.files import write_json_atomic  # noqa: E402
from nose.model.loading import load_model  # noqa: E402
from nose.report.sweep_report import paired_ca_difference  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="the intact model")
    ap.add_argument("--checkpoints", default="", help="comma-separated label=folder of exported checkpoints")
    ap.add_argument("--methods", type=Path, help="a JSONL of Java methods (name, java) instead of the held-out test methods")
    ap.add_argument("--inputs", type=int, default=10, help="argument sets drawn per method")
    ap.add_argument("--work", type=Path, required=True, help="folder for cases.json and the answers")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    isolation = require_isolation()
    methods = heldout_methods(args.methods)
    t0 = time.perf_counter()
    cases, left_out = cases_of(methods, args.inputs, args.work / "cases.json", log=print)
    print(f"tests for {len(cases)} of {len(methods)} methods ({time.perf_counter() - t0:.0f} s)")

    specs = [("intact", args.model)] + [tuple(s.split("=", 1)) for s in args.checkpoints.split(",") if s]
    rows = []
    for label, folder in specs:
        lm = load_model(folder, dtype=args.dtype, device=args.device)
        if label == "intact" and lm.absent_attention():
            raise SystemExit(f"--model {folder} has attention removed; pass the intact model")
        passed, seconds = passed_tests(lm, methods, cases, args.work / f"answers-{label}.jsonl", isolation, label=label)
        row = {"checkpoint": label, "path": str(folder), "removed": lm.absent_attention(),
               "passed_count": sum(passed.values()), "cases": len(cases),
               "ca_percent": 100 * sum(passed.values()) / len(cases), "generation_seconds": round(seconds, 1),
               "passed": passed}
        if rows:
            intact = rows[0]
            row["kept_of_intact"] = row["passed_count"] / intact["passed_count"]
            row["ca_minus_intact"] = list(paired_ca_difference(passed, intact["passed"]))
        rows.append(row)
        del lm
        write_json_atomic(args.out, {"model": args.model, "methods": len(methods), "cases": len(cases),
                                     "left_out": left_out, "inputs_per_method": args.inputs, "rows": rows})
    print("| checkpoint | CA (passed / tests) | kept of intact | CA − intact [pp, 95 % CI] |\n|---|---:|---:|---|")
    for r in rows:
        diff = "" if "ca_minus_intact" not in r else "{:+.1f} [{:+.1f}, {:+.1f}]".format(*r["ca_minus_intact"])
        kept = f"{100 * r['kept_of_intact']:.0f} %" if "kept_of_intact" in r else ""
        print(f"| {r['checkpoint']} | {r['ca_percent']:.1f} % ({r['passed_count']} / {r['cases']}) | {kept} | {diff} |")


if __name__ == "__main__":
    main()
