"""Serving cost of a base model and its exported (attention-removed) checkpoints, side by side.

Each model is loaded in turn into this one process and measured with the same random prompts:
prefill latency, greedy decode tokens/s with a KV cache at batch 1 and 8, KV-cache bytes per
token, weight bytes and peak memory. Writes ``reports/serving_speed.md``.

    python benchmarks/serving_speed.py base=qwen2.5-coder-0.5b k6=runs/qwen-k6-surgery
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.evaluate.efficiency import kv_cache_bytes_per_token, parameter_counts, speed  # noqa: E402
from nose.model.loading import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="name=model (preset, folder or exported checkpoint); first is the base")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "serving_speed.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = tuple(int(b) for b in args.batches.split(","))
    rows = []
    for item in args.models:
        name, _, spec = item.partition("=")
        lm = load_model(spec, device=args.device)
        s = speed(lm.model, args.prompt_len, args.new_tokens, batches)
        counts = parameter_counts(lm.model, lm.adapter)
        rows.append((name, spec, lm.num_layers, s, kv_cache_bytes_per_token(lm.model, lm.adapter), counts))
        del lm
        gc.collect()
    base = rows[0]
    peak_key = "peak_cuda_allocated_bytes" if "peak_cuda_allocated_bytes" in base[3] else "peak_rss_bytes"
    head = ["model", "prefill [ms]"] + [f"decode b={b} [tok/s]" for b in batches] + \
        ["KV cache [bytes/token]", "weights [MB]", "peak memory [MB]"]
    lines = ["# Serving speed: base vs attention-removed checkpoints", "",
             "Command: `python benchmarks/serving_speed.py " + " ".join(sys.argv[1:]) + "`", "",
             f"Device: {base[3]['device']}, {base[3]['dtype']}; prompt {args.prompt_len} random tokens; decode "
             f"{args.new_tokens} greedy tokens with a KV cache, timed apart from the prefill; peak memory is "
             f"{'CUDA max allocated' if peak_key.startswith('peak_cuda') else 'process RSS (includes the Python process and the other models freed before)'}.",
             "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def rel(v, b):
        return f"{v:,.1f} ({(v / b - 1) * 100:+.0f}%)" if b else f"{v:,.1f}"

    for name, spec, layers, s, kv, counts in rows:
        peak = s[peak_key] if peak_key.startswith("peak_cuda") else max(s[peak_key].values())
        base_peak = base[3][peak_key] if peak_key.startswith("peak_cuda") else max(base[3][peak_key].values())
        cells = [f"{name} (`{spec}`)", rel(s["prefill_ms"], base[3]["prefill_ms"])]
        cells += [rel(s["decode_tokens_per_s"][str(b)], base[3]["decode_tokens_per_s"][str(b)]) for b in batches]
        cells += [rel(kv, base[4]), rel(counts["weight_bytes"] / 1e6, base[5]["weight_bytes"] / 1e6),
                  rel(peak / 1e6, base_peak / 1e6)]
        lines.append("| " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
