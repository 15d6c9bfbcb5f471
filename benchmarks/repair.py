"""The repair table: removed / linear (and its fit variants) / healed / linear + healed, exported and evaluated from disk.

For each k and variant, ``nose shrink`` writes a checkpoint (the first k layers of ``--order``)
and ``nose evaluate`` evaluates that checkpoint, loaded back from disk, on the G-TransEval subset;
the intact model is evaluated once with the same settings. Every step is skipped when its output
exists, so a killed run resumes where it stopped (``nose evaluate`` itself resumes mid-run); an
existing checkpoint is kept whatever ``--heal`` says now (move it away to heal it again).
With ``--sweep``, the intact model and the ``removed`` variant are read from a finished
``nose sweep`` with the same settings (in memory; an export with attention deleted has the
same logits, ``tests/test_export.py``) instead of being evaluated again.
Writes ``reports/repair/summary.json`` (each row names its order; rows of earlier runs with the
same model and benchmark are kept; healed rows carry their healing settings) and prints the
table for ``reports/repair.md``.

Selection rule (``docs/decisions.md``): the order, k and variants a run evaluates were chosen
before it, on data the project owns (held-out transcripts, held-out unit tests made by running
the Java); G-TransEval only reports them. ``--order-chosen-by`` and ``--variants-chosen-by``
say what chose them; both are written into each new row (``chosen_by``), beside
``evaluated_on``.

    python benchmarks/repair.py --order runs/h2h/search-kl-translate --k 3,6,8 \\
        --benchmark <G-TransEval clone> --work runs/repair --heal "--steps 60 --lr 1e-5" \\
        --order-chosen-by "held-out unit tests" --variants-chosen-by "held-out transcripts' KL"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name: (replace, healing, further nose shrink options)
    "removed": ("skip", False, ()),
    "linear": ("linear", False, ("--fit-samples", "64")),  # the first fit (64 transcripts)
    "linear-stream": ("linear", False, ("--fit-target", "stream")),
    "linear-198": ("linear", False, ("--fit-samples", "198")),  # every training transcript: shrink's default
    "linear-fit-data": ("linear", False, ()),  # every row of --fit-data (nose shrink --data)
    "healed": ("skip", True, ()),
    "linear+healed": ("linear", True, ()),
    # KD trains only the fitted maps, from step 1 (no blend): the recipe the held-out transcripts chose at k = 8
    "linear+healed-maps": ("linear", True, ("--train", "replacements", "--schedule", "none")),
}
HEALING_KEYS = ("steps", "schedule", "loss", "train", "lr", "batch_size", "temperature", "tokens", "validation")
NO_REPAIR = {"fit_seconds": 0.0, "heal_seconds": 0.0, "fit_cpu_seconds": 0.0, "heal_cpu_seconds": 0.0,
             "fit_tokens": 0, "heal_tokens": 0}


def nose(*args: str, log: Path) -> None:
    with open(log, "a") as f:
        done = subprocess.run([sys.executable, "-m", "nose", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"nose {' '.join(args[:2])} failed; see {log}")


def row(order: str, variant: str, k: int, layers: list[int], metrics: dict, intact: dict, efficiency: dict,
        cost: dict, checkpoint: Path | None, evaluation: Path, healing: dict | None = None) -> dict:
    """One row of summary.json: quality (``metrics``, CA by type as plain percentages), size
    (``efficiency``: KV cache and parameter counts), the repair's cost (a checkpoint's
    ``repair_cost``) and, for healed rows, the healing settings and held-out validation."""
    return {"order": order, "variant": variant, "k": k, "layers": layers, "ca_percent": metrics["ca_percent"],
            "intact_ca_percent": intact["ca_percent"], "ca_by_type": metrics["ca_by_type"],
            "codebleu": metrics["codebleu"], "bleu": metrics["bleu"], "verdicts": metrics["verdicts"],
            "kv_cache_bytes_per_token": efficiency["kv_cache_bytes_per_token"],
            "parameters": efficiency["parameters"], "replacement_parameters": efficiency["replacement_parameters"],
            "repair_seconds": cost["fit_seconds"] + cost["heal_seconds"],
            "repair_cpu_seconds": cost["fit_cpu_seconds"] + cost["heal_cpu_seconds"],
            "repair_tokens": cost["fit_tokens"] + cost["heal_tokens"],
            "checkpoint": None if checkpoint is None else str(checkpoint), "evaluation": str(evaluation),
            "healing": healing}


def read_metrics(evaluation: Path) -> dict:
    """An evaluation's metrics, CA by type as plain percentages (as a sweep records them)."""
    metrics = json.loads((evaluation / "results.json").read_text())["metrics"]
    return {**metrics, "ca_by_type": {t: v["ca"] for t, v in metrics["ca_by_type"].items()}}


def with_differences(rows: list[dict]) -> list[dict]:
    """Each repaired row gains ``ca_minus_removed``: its CA minus the removed row's of the same
    order and k, percentage points with the paired 95 % bootstrap interval [difference, low, high].
    A row whose evaluations are not on this machine (runs/ is not committed) keeps what it recorded."""
    from nose.evaluate.run import SAMPLES
    from nose.evaluate.sweep import passed_by_id
    from nose.report.sweep_report import paired_ca_difference

    def here(r: dict) -> bool:
        return (Path(r["evaluation"]) / SAMPLES).exists()

    removed = {(r["order"], r["k"]): r for r in rows if r["variant"] == "removed"}
    for r in rows:
        if r["variant"] == "removed" or not here(r):
            continue
        r.pop("ca_minus_removed", None)
        if (r["order"], r["k"]) in removed and here(removed[r["order"], r["k"]]):
            difference = paired_ca_difference(passed_by_id(Path(r["evaluation"])),
                                              passed_by_id(Path(removed[r["order"], r["k"]]["evaluation"])))
            r["ca_minus_removed"] = [round(float(v), 2) for v in difference]
    return rows


def merged_rows(path: Path, summary: dict, rows: list[dict]) -> list[dict]:
    """This run's rows plus those of an earlier summary made with the same model and benchmark (a
    row of this run replaces the earlier one of the same order, k and variant), by k, order and variant."""
    if path.exists():
        old = json.loads(path.read_text())
        if all(old.get(key) == summary[key] for key in ("model", "benchmark")):
            new = {(r["order"], r["k"], r["variant"]) for r in rows}
            rows = [r for r in old["rows"] if (r["order"], r["k"], r["variant"]) not in new] + rows
    return sorted(rows, key=lambda r: (r["k"], r["order"], list(VARIANTS).index(r["variant"])))


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
    ap.add_argument("--fit-data", help="fit data of the linear-fit-data variant (nose shrink --data), e.g. the "
                                       "chat JSONL (experiments/extra-fit-data)")
    ap.add_argument("--sweep", type=Path, help="a nose sweep folder with the same benchmark settings: its "
                                               "intact and removed evaluations are reused")
    for what in ("order", "variants"):
        ap.add_argument(f"--{what}-chosen-by", required=True, help=f"what chose the {what} (held-out data the "
                        "project owns; docs/decisions.md, Selection rule); written into each new row")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "repair")
    args = ap.parse_args()
    if "linear-fit-data" in args.variants.split(",") and not args.fit_data:
        ap.error("the linear-fit-data variant fits on --fit-data; pass --fit-data FILE")

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
        intact = read_metrics(intact_dir)
    order = read_record(Path(args.order))["order"]
    rows = []
    for k in [int(k) for k in args.k.split(",")]:
        for name in args.variants.split(","):
            replace, healing, options = VARIANTS[name]
            fit_data = args.fit_data if name == "linear-fit-data" else None
            options = (*options, "--data", fit_data) if fit_data else options
            in_memory = swept.get(eval_name(order[:k], "skip")) if name == "removed" else None
            if in_memory:
                rows.append(row(args.order, name, k, sorted(order[:k]), in_memory, intact, in_memory, NO_REPAIR, None,
                                args.sweep / "evals" / eval_name(order[:k], "skip")))
                continue
            ckpt = work / f"k{k}-{name.replace('+', '-')}"
            if not (ckpt / "nose.json").exists():
                heal = args.heal.split() if healing else ["--steps", "0"]
                nose("shrink", "--model", args.model, "--search", args.order, "--k", str(k), "--replace", replace,
                     *options, *heal, "--out", str(ckpt), "--overwrite", log=log)
            eval_dir = work / "evals" / ckpt.name
            if not (eval_dir / "results.json").exists():
                nose(*evaluate, "--model", str(ckpt), "--out", str(eval_dir), log=log)
            meta = json.loads((ckpt / "nose.json").read_text())
            metrics = read_metrics(eval_dir)
            lm = load_model(str(ckpt))
            efficiency = {"kv_cache_bytes_per_token": kv_cache_bytes_per_token(lm.model, lm.adapter),
                          **parameter_counts(lm.model, lm.adapter)}
            healed = {key: meta["healing"][key] for key in HEALING_KEYS} if meta["healing"]["steps"] else None
            rows.append(row(args.order, name, k, meta["removed_attention"], metrics, intact, efficiency, meta["repair_cost"],
                            ckpt, eval_dir, healed) | ({"fit_data": fit_data} if fit_data else {}))
            del lm
    evaluated_on = f"G-TransEval --limit {args.limit} --stratified (the development set)"
    chosen_by = {"order": args.order_chosen_by, "variant": args.variants_chosen_by}
    rows = [r | {"chosen_by": chosen_by, "evaluated_on": evaluated_on} for r in rows]
    summary = {"model": args.model, "benchmark": {"limit": int(args.limit), "stratified": True},
               "intact": {"ca_percent": intact["ca_percent"], "codebleu": intact["codebleu"],
                          "ca_by_type": intact["ca_by_type"]}}
    rows = with_differences(merged_rows(args.out / "summary.json", summary, rows))
    args.out.mkdir(parents=True, exist_ok=True)
    old = json.loads((args.out / "summary.json").read_text()) if (args.out / "summary.json").exists() else {}
    checks = {"external_checks": old["external_checks"]} if "external_checks" in old else {}
    (args.out / "summary.json").write_text(json.dumps({**summary, **checks, "rows": rows}, indent=2) + "\n")
    table = [("| k | order | variant | CA [%] | kept of intact | CodeBLEU | KV [bytes/token] | parameters [M] | "
              "repair [min] | repair tokens | CA − removed [95 % CI] |"),
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        table.append(f"| {r['k']} | {Path(r['order']).name} | {r['variant']} | {r['ca_percent']:.1f} | "
                     f"{100 * r['ca_percent'] / r['intact_ca_percent']:.0f} % | {r['codebleu']:.1f} | "
                     f"{r['kv_cache_bytes_per_token']:,} | {r['parameters'] / 1e6:.2f} | "
                     f"{r['repair_seconds'] / 60:.1f} | {r['repair_tokens']:,} | "
                     + ("{:+.1f} [{:+.1f}, {:+.1f}] |".format(*r["ca_minus_removed"]) if "ca_minus_removed" in r
                        else "— |"))
    print("\n".join(table))


if __name__ == "__main__":
    main()
