"""The repair table: removed / linear / healed / linear + healed, exported and evaluated from disk.

For each k and variant, ``nose shrink`` writes a checkpoint (the first k layers of ``--order``)
and ``nose evaluate`` evaluates that checkpoint, loaded back from disk, on the G-TransEval subset;
the intact model is evaluated once with the same settings. Every step is skipped when its output
exists, so a killed run resumes where it stopped (``nose evaluate`` itself resumes mid-run).
With ``--sweep``, the intact model and the ``removed`` variant are read from a finished
``nose sweep`` with the same settings (in memory; an export with attention deleted has the
same logits, ``tests/test_export.py``) instead of being evaluated again.
Writes ``reports/repair/summary.json`` and prints the table for ``reports/repair.md``.

    python benchmarks/repair.py --order runs/h2h/search-kl-translate --k 3,6,8 \\
        --benchmark <G-TransEval clone> --work runs/repair --heal-steps 120
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name: (replace, healing)
    "removed": ("none", False),
    "linear": ("linear", False),
    "healed": ("none", True),
    "linear+healed": ("linear", True),
}


def nose(*args: str, log: Path) -> None:
    with open(log, "a") as f:
        done = subprocess.run([sys.executable, "-m", "nose", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"nose {' '.join(args[:2])} failed; see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--order", required=True, help="a search.json (or folder): its first k layers are removed")
    ap.add_argument("--k", default="3,6,8")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--limit", default="160")
    ap.add_argument("--max-new-tokens", default="320")
    ap.add_argument("--batch-size", default="32")
    ap.add_argument("--work", type=Path, default=Path("runs/repair"))
    ap.add_argument("--heal", default="", help="extra nose shrink options for the healed variants, e.g. "
                                               "'--steps 120 --lr 1e-4 --loss kd'")
    ap.add_argument("--sweep", type=Path, help="a nose sweep folder with the same benchmark settings: its "
                                               "intact and removed evaluations are reused")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "repair")
    args = ap.parse_args()

    from nose.evaluate.efficiency import kv_cache_bytes_per_token, parameter_counts
    from nose.evaluate.sweep import eval_name, read_sweep
    from nose.model.loading import load_model
    from nose.search.record import read_record

    work = args.work
    (work / "evals").mkdir(parents=True, exist_ok=True)
    log = work / "repair.log"
    evaluate = ["evaluate", "--benchmark", args.benchmark, "--limit", args.limit, "--stratified",
                "--max-new-tokens", args.max_new_tokens, "--batch-size", args.batch_size, "--no-efficiency"]
    swept = read_sweep(args.sweep / "sweep.json")["evals"] if args.sweep else {}
    if "skip-none" in swept:
        intact = swept["skip-none"]
    else:
        intact_dir = work / "evals" / "intact"
        if not (intact_dir / "results.json").exists():
            nose(*evaluate, "--model", args.model, "--out", str(intact_dir), log=log)
        intact = json.loads((intact_dir / "results.json").read_text())["metrics"]
        intact["ca_by_type"] = {t: v["ca"] for t, v in intact["ca_by_type"].items()}
    order = read_record(Path(args.order))["order"]
    rows = []
    for k in [int(k) for k in args.k.split(",")]:
        for name in args.variants.split(","):
            replace, healing = VARIANTS[name]
            in_memory = swept.get(eval_name(order[:k], "skip")) if name == "removed" else None
            if in_memory:
                rows.append({"variant": name, "k": k, "layers": sorted(order[:k]), "ca_percent": in_memory["ca_percent"],
                             "intact_ca_percent": intact["ca_percent"], "ca_by_type": in_memory["ca_by_type"],
                             "codebleu": in_memory["codebleu"], "bleu": in_memory["bleu"],
                             "verdicts": in_memory["verdicts"],
                             "kv_cache_bytes_per_token": in_memory["kv_cache_bytes_per_token"],
                             "parameters": in_memory["parameters"],
                             "replacement_parameters": in_memory["replacement_parameters"],
                             "repair_seconds": 0.0, "repair_cpu_seconds": 0.0, "repair_tokens": 0,
                             "checkpoint": None, "evaluation": str(args.sweep / "evals" / eval_name(order[:k], "skip"))})
                continue
            ckpt = work / f"k{k}-{name.replace('+', '-')}"
            if not (ckpt / "nose.json").exists():
                heal = args.heal.split() if healing else ["--steps", "0"]
                nose("shrink", "--model", args.model, "--search", args.order, "--k", str(k), "--replace", replace,
                     *heal, "--out", str(ckpt), "--overwrite", log=log)
            eval_dir = work / "evals" / ckpt.name
            if not (eval_dir / "results.json").exists():
                nose(*evaluate, "--model", str(ckpt), "--out", str(eval_dir), log=log)
            meta = json.loads((ckpt / "nose.json").read_text())
            metrics = json.loads((eval_dir / "results.json").read_text())["metrics"]
            lm = load_model(str(ckpt))
            params = parameter_counts(lm.model, lm.adapter)
            cost = meta["repair_cost"]
            rows.append({"variant": name, "k": k, "layers": meta["removed_attention"],
                         "ca_percent": metrics["ca_percent"], "intact_ca_percent": intact["ca_percent"],
                         "ca_by_type": {t: v["ca"] for t, v in metrics["ca_by_type"].items()},
                         "codebleu": metrics["codebleu"], "bleu": metrics["bleu"], "verdicts": metrics["verdicts"],
                         "kv_cache_bytes_per_token": kv_cache_bytes_per_token(lm.model, lm.adapter),
                         "parameters": params["parameters"],
                         "replacement_parameters": params["replacement_parameters"],
                         "repair_seconds": cost["fit_seconds"] + cost["heal_seconds"],
                         "repair_cpu_seconds": cost["fit_cpu_seconds"] + cost["heal_cpu_seconds"],
                         "repair_tokens": cost["fit_tokens"] + cost["heal_tokens"],
                         "checkpoint": str(ckpt), "evaluation": str(eval_dir)})
            del lm
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({
        "model": args.model, "order": args.order, "benchmark": {"limit": int(args.limit), "stratified": True},
        "intact": {"ca_percent": intact["ca_percent"], "codebleu": intact["codebleu"],
                   "ca_by_type": intact["ca_by_type"]},
        "healing_options": args.heal, "rows": rows}, indent=2) + "\n")
    table = ["| k | variant | CA [%] | kept of intact | CodeBLEU | KV [bytes/token] | parameters [M] | "
             "repair [min] | repair tokens |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['k']} | {r['variant']} | {r['ca_percent']:.1f} | "
                     f"{100 * r['ca_percent'] / r['intact_ca_percent']:.0f} % | {r['codebleu']:.1f} | "
                     f"{r['kv_cache_bytes_per_token']:,} | {r['parameters'] / 1e6:.2f} | "
                     f"{r['repair_seconds'] / 60:.1f} | {r['repair_tokens']:,} |")
    print("\n".join(table))


if __name__ == "__main__":
    main()
