"""Fast (prefix-cached) vs naive NOSE search, side by side on one model and one calibration set.

Writes ``reports/search_speed.md``: wall time of each, their ratio, the picks and the largest TE
difference, and the work each did, counted in decoder-layer forwards and output-head forwards
and in layer-equivalents (head forwards weighted by head MACs / layer MACs), whose ratio is
the most any exact greedy search could gain here.

    python benchmarks/search_speed.py --model qwen2.5-coder-0.5b --steps 2 --samples 8 --seq-len 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.testing.naive_search import naive_search  # noqa: E402
from nose.model.loading import load_model  # noqa: E402
from nose.provenance import device_name  # noqa: E402
from nose.data.calibration import build_calibration  # noqa: E402
from nose.search.config import SearchConfig  # noqa: E402
from nose.search.run import run_search  # noqa: E402


def macs_per_token(config, seq_len: int) -> tuple[float, float]:
    """(one decoder layer, the output head) multiply-accumulates per token, attention scores
    averaged over a causal sequence of ``seq_len``."""
    h, inter = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or h // heads
    proj = h * heads * hd * 2 + h * kv * hd * 2
    scores = 2 * heads * hd * (seq_len + 1) / 2
    return proj + scores + 3 * h * inter, h * config.vocab_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "search_speed.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    calib = build_calibration(lm.tokenizer, "stdlib", samples=args.samples, seq_len=args.seq_len)
    config = SearchConfig(steps=args.steps, batch_size=args.batch_size)
    batches = calib.batch_count(args.batch_size)

    def timed(fn):
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - t0

    fast, t_fast = timed(lambda: run_search(lm, calib, config))
    naive, t_naive = timed(lambda: naive_search(lm, calib, args.steps, protect=tuple(config.protected()),
                                                batch_size=args.batch_size))

    same = fast["order"] == naive["order"]
    te_diff = max(abs(c["score"] - naive["steps"][k]["candidates"][c["layer"]])
                  for k, s in enumerate(fast["steps"]) for c in s["candidates"])
    layer_macs, head_macs = macs_per_token(lm.model.config, calib.seq_len)
    head_w = head_macs / layer_macs

    def work(w):
        lf, hf = w["layer_forwards"] / batches, w["head_forwards"] / batches
        return lf, hf, lf + hf * head_w

    f_l, f_h, f_eq = work(fast["work"])
    n_l, n_h, n_eq = work(naive["work"])
    device = device_name(lm.device)
    cmd = "python benchmarks/search_speed.py " + " ".join(sys.argv[1:])
    lines = [
        "# Search speed: prefix-cached vs naive NOSE search",
        "",
        f"Command: `{cmd}`",
        "",
        f"Model `{args.model}` ({lm.num_layers} layers, {lm.dtype}, {device}); calibration: "
        f"{calib.samples} rows x {calib.seq_len} tokens of the standard library, batch {args.batch_size}; "
        f"{args.steps} greedy steps, mode skip, target final, layer 0 protected. torch {torch.__version__}.",
        "",
        "| search | wall time [s] | layer forwards / batch | head forwards / batch | layer-equivalents / batch | order |",
        "|---|---:|---:|---:|---:|---|",
        f"| naive (full forward + logits per candidate) | {t_naive:.1f} | {n_l:.0f} | {n_h:.0f} | {n_eq:.0f} | {naive['order']} |",
        f"| fast (prefix cache, no head) | {t_fast:.1f} | {f_l:.0f} | {f_h:.0f} | {f_eq:.0f} | {fast['order']} |",
        "",
        f"- **Wall-time ratio naive / fast: {t_naive / t_fast:.2f}x**.",
        f"- Work ratio (the limit for an exact greedy search): {n_eq / f_eq:.2f}x in layer-equivalents; "
        f"one head forward = {head_w:.2f} layer forwards by MACs ({head_macs / 1e6:.1f} M vs "
        f"{layer_macs / 1e6:.1f} M per token).",
        f"- Same picks: {'yes' if same else 'NO'}; largest |TE fast − TE naive| over all candidates: {te_diff:.2e} nats.",
        f"- Fast search seconds per step: {[s['seconds'] for s in fast['steps']]}; naive: "
        f"{[round(s['seconds'], 1) for s in naive['steps']]}.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
