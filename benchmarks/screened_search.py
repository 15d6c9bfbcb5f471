"""Screened vs exact greedy search, side by side in one run on one model and one calibration set.

Both searches run the default recipe (``kl`` scored under the ``linear`` repair) on the same
calibration rows; the screened one scores every candidate on the first batch and only the best
``--screen`` on every row (:mod:`nose.search.greedy`). Each search keeps its ``search.json``
under ``--work`` and resumes from it, so a stopped run goes on where it was; wall time is the
sum of the steps' recorded seconds. Writes ``--out`` (markdown) and a JSON beside it: time of
each, their ratio, the picks at every k, and, while the two orders agree, where the exact
winner ranked in the screen (the smallest screen that would have kept it).

    python benchmarks/screened_search.py --model qwen2.5-coder-0.5b --samples 32 --steps 8 --screen 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.data.calibration import build_calibration  # noqa: E402
from nose.data.transcripts import data_source, resolve_source  # noqa: E402
from nose.files import write_json_atomic  # noqa: E402
from nose.provenance import device_name  # noqa: E402
from nose.model.loading import load_model, resolve_model  # noqa: E402
from nose.search.config import SearchConfig  # noqa: E402
from nose.search.record import FILENAME, read_record  # noqa: E402
from nose.search.run import run_search  # noqa: E402


def search(lm, calib, config: SearchConfig, folder: Path) -> dict:
    previous = read_record(folder / FILENAME) if (folder / FILENAME).exists() else None
    if previous is not None and previous["complete"] and len(previous["steps"]) >= config.steps:
        return previous
    return run_search(lm, calib, config, out_dir=folder, resume=previous)


def screen_ranks(exact: dict, screened: dict) -> list[dict]:
    """Per step while both searches removed the same layers: the exact winner's rank in the screen."""
    rows = []
    for e, s in zip(exact["steps"], screened["steps"]):
        if e["removed_before"] != s["removed_before"]:
            break
        screen = {c["layer"]: c["screen_score"] for c in s["candidates"]}
        screen.update({c["layer"]: c["screen_score"] for c in s.get("screened_out", [])})
        ranked = sorted(screen, key=lambda i: (screen[i], i))
        rows.append({"step": e["step"], "exact": e["selected"], "screened": s["selected"],
                     "exact_winner_screen_rank": ranked.index(e["selected"]) + 1 if screen else None,
                     "candidates": len(e["candidates"])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--screen", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "screened-search")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "search_screen.md")
    args = ap.parse_args()

    ref = resolve_model(args.model)
    tokenizer = ref.load_tokenizer()
    lm = load_model(ref, tokenizer=tokenizer)
    source = resolve_source(data_source("auto", tokenizer), lm, needed=args.samples, log=print)
    calib = build_calibration(tokenizer, source, samples=args.samples,
                              seq_len=512 if source != "stdlib" else 128, seed=0)
    base = dict(steps=args.steps, criterion="kl", mode="linear", batch_size=args.batch_size)
    work = args.work / args.model
    screened = search(lm, calib, SearchConfig(screen=args.screen, **base), work / f"screen-{args.screen}")
    exact = search(lm, calib, SearchConfig(screen=0, **base), work / "exact")

    seconds = {name: sum(s["seconds"] for s in r["steps"]) for name, r in (("exact", exact), ("screened", screened))}
    ranks = screen_ranks(exact, screened)
    agree = [k + 1 for k in range(args.steps) if exact["order"][:k + 1] == screened["order"][:k + 1]]
    device = device_name(lm.device)
    cmd = "python benchmarks/screened_search.py " + " ".join(sys.argv[1:])
    result = {"command": cmd, "model": args.model, "device": device, "calibration": calib.describe(),
              "settings": {**base, "screen": args.screen}, "seconds": seconds,
              "ratio": seconds["exact"] / seconds["screened"], "order": {"exact": exact["order"],
                                                                        "screened": screened["order"]},
              "same_prefix_k": max(agree, default=0), "screen_ranks": ranks,
              "step_seconds": {"exact": [s["seconds"] for s in exact["steps"]],
                               "screened": [s["seconds"] for s in screened["steps"]]}}
    lines = [
        "# Screened vs exact greedy search",
        "",
        f"Command: `{cmd}`",
        "",
        f"Model `{args.model}` ({lm.num_layers} layers, {lm.dtype}, {device}); calibration {calib.samples} rows "
        f"of {calib.source} (at most {calib.seq_len} tokens, {calib.counted_tokens} counted answer tokens), "
        f"batch {args.batch_size}; criterion kl scored under the linear repair, {args.steps} steps; the screen "
        f"reads the first batch ({args.batch_size} rows) and keeps {args.screen} candidates. torch {torch.__version__}.",
        "",
        "| search | wall time [s] | order |",
        "|---|---:|---|",
        f"| exact (every candidate on every row) | {seconds['exact']:.0f} | {exact['order']} |",
        f"| screened (--screen {args.screen}) | {seconds['screened']:.0f} | {screened['order']} |",
        "",
        f"- **Wall-time ratio exact / screened: {result['ratio']:.2f}x.**",
        f"- Same picks at every k up to {result['same_prefix_k']} of {args.steps}.",
        "- The exact winner's rank in the screen, per step (while the orders agree): "
        + ", ".join(f"step {r['step']}: {r['exact_winner_screen_rank']} of {r['candidates']}" for r in ranks) + ".",
        f"- Seconds per step, exact: {result['step_seconds']['exact']}; screened: {result['step_seconds']['screened']}.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out.with_suffix(".json"), result)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
