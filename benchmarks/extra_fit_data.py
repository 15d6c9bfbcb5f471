"""Fit data with more on-task methods: the shipped training transcripts plus transcripts of
``benchmarks/extra_java_methods.jsonl`` (all of them; the held-out split stays the shipped 40).

The 38 extra methods were written for this measurement in the style of
``nose/data/java_methods.jsonl`` (same licence, nose/data/DATA_LICENSE.md): 46 new names were
written and the 8 that ``nose.data.overlap`` flagged against G-TransEval (by name or BLEU-4 > 0.5)
removed; the script checks the overlap again. Writes a chat JSONL for ``nose shrink --data``
(reports/repair.md, "k = 8, sixth round").

    python benchmarks/extra_fit_data.py --benchmark <G-TransEval clone> --out runs/extra/fit-data.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.data.corpus import load_methods  # noqa: E402
from nose.data.overlap import find_overlaps  # noqa: E402
from nose.data.transcripts import generate_transcripts, resolve_source  # noqa: E402
from nose.evaluate.benchmark import load_benchmark  # noqa: E402
from nose.model.loading import load_model  # noqa: E402


def write_fit_data(lm, extra: list[dict], out: Path) -> int:
    """The shipped training transcripts, then the ``extra`` transcript records, as one chat JSONL
    for ``nose shrink --data`` (written to a temporary file, then renamed); returns its rows."""
    shipped = Path(resolve_source("translate", lm)).read_text(encoding="utf-8").splitlines()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in shipped)
        f.writelines(json.dumps({"messages": r["messages"], "name": r["name"]}) + "\n" for r in extra)
    tmp.replace(out)
    return len(shipped) + len(extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--methods", type=Path, default=ROOT / "benchmarks" / "extra_java_methods.jsonl")
    ap.add_argument("--benchmark", type=Path, required=True, help="G-TransEval clone (overlap check)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    methods = load_methods(args.methods)
    overlapping = {o.method for o in find_overlaps(methods, load_benchmark(args.benchmark))}
    methods = [m for m in methods if m.name not in overlapping]
    lm = load_model(args.model)
    extra = [r for r in generate_transcripts(lm, methods, log=print).records if r["parses"]]
    rows = write_fit_data(lm, extra, args.out)
    print(f"{rows - len(extra)} shipped training transcripts + {len(extra)} extra ({len(overlapping)} methods "
          f"dropped for overlap) -> {args.out}")


if __name__ == "__main__":
    main()
