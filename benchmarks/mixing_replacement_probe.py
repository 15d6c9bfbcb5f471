"""Probe: would a replacement that mixes tokens repair a removed attention better than one linear map?

``h = x + W·LN1(x)`` sees only the current token; an attention mostly moves information *between*
tokens. This probe fits, by the same sequential ridge fit as ``nose shrink --replace linear``
(:func:`nose.shrink.linear_fit.fit_linear`, 198 training transcripts, ridge strength on every 4th
row), replacements linear in richer features of n = LN1(x):

| variant | features (each hidden wide) | extra state while generating |
|---|---|---|
| linear | n_t (today's replacement) | none |
| bias | n_t, 1 | none |
| shift | n_t, n_{t−1} | one token per layer |
| mean | n_t, mean of n_1..n_t | a running sum per layer |
| shift+mean | n_t, n_{t−1}, mean of n_1..n_t | both |

and scores each on the held-out transcripts (teacher-forced KL to the intact model, as
``benchmarks/heldout_fidelity.py``). Every variant is fitted and scored in one run, side by side.

Not a toolkit feature: the probe's replacements run on whole sequences only (no KV-cache path, no
export); no serving engine's DeciLM code has such a block. It measures whether building one is
worth it (reports/repair.md, "k = 8, ninth round"). Resumable: variants already in ``--out`` are
kept.

    python benchmarks/mixing_replacement_probe.py --layers 23,5,6,22,4,11,19,12 --out runs/mixing/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.data.transcripts import resolve_source  # noqa: E402
from nose.evaluate.fidelity import fidelity  # noqa: E402
from nose.files import write_json_atomic  # noqa: E402
from nose.model.loading import load_model  # noqa: E402
from nose.model.replacements import FeatureLinear, Linear  # noqa: E402
from nose.model.switches import attention_switched  # noqa: E402
from nose.search.calibration import build_calibration  # noqa: E402
from nose.shrink.linear_fit import FitConfig, fit_linear  # noqa: E402
from nose.shrink.pipeline import fit_rows  # noqa: E402


def _previous(n: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(n[:, :1]), n[:, :-1]], 1)


def _prefix_mean(n: torch.Tensor) -> torch.Tensor:
    """Causal mean over each row (rows are right-padded, so real tokens never see padding)."""
    steps = torch.arange(1, n.shape[1] + 1, device=n.device, dtype=n.dtype)[None, :, None]
    return n.cumsum(1) / steps


def _bias(n: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(n[..., :1])


PARTS = {"previous": _previous, "mean": _prefix_mean, "bias": _bias}
VARIANTS = {"linear": (), "bias": ("bias",), "shift": ("previous",), "mean": ("mean",),
            "shift+mean": ("previous", "mean")}


def mixing(parts: tuple[str, ...]) -> type[FeatureLinear]:
    """A replacement linear in ``[n_t, *parts(n)]``, for :func:`fit_linear`'s ``kind``."""
    if not parts:
        return Linear

    class Mixing(FeatureLinear):
        kind = "mixing-probe"

        @staticmethod
        def features(normed: torch.Tensor) -> torch.Tensor:
            return torch.cat([normed, *(PARTS[p](normed) for p in parts)], -1)

    return Mixing


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--layers", required=True, help="comma-separated attention sublayers to replace")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    layers = [int(i) for i in args.layers.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    done = json.loads(args.out.read_text()) if args.out.exists() else {"layers": layers, "rows": []}
    if done["layers"] != layers:
        ap.error(f"{args.out} holds layers {done['layers']}; pass another --out")

    lm = load_model(args.model)
    config = FitConfig()
    rows = fit_rows(lm, resolve_source("translate", lm, log=print), config)
    held = build_calibration(lm.tokenizer, resolve_source("translate:heldout", lm), samples=1000, seq_len=640,
                             count="answer")
    for name in variants:
        if any(r["variant"] == name for r in done["rows"]):
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        fitted, report = fit_linear(lm, layers, rows, config, kind=mixing(VARIANTS[name]))
        fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        score = fidelity(lm, held, {name: lambda: attention_switched(lm.model, fitted, adapter=lm.adapter)})[name]
        params = sum(r.linear_attn.weight.numel() for r in fitted.values())
        done["rows"].append({"variant": name, "features": ["current", *VARIANTS[name]], **score,
                             "parameters": params, "fit_wall_seconds": fit_wall, "fit_cpu_seconds": fit_cpu,
                             "fit_tokens": rows.counted_tokens, "fit_layers": report["layers"]})
        write_json_atomic(args.out, done)
        print(f"{name}: held-out KL {score['kl']:.4f}, agreement {100 * score['agreement']:.1f} %, "
              f"fit {fit_wall / 60:.1f} wall / {fit_cpu / 60:.1f} CPU min", flush=True)
    print("| variant | held-out KL | agreement | parameters [M] |\n|---|---:|---:|---:|")
    for r in done["rows"]:
        print(f"| {r['variant']} | {r['kl']:.4f} | {100 * r['agreement']:.1f} % | {r['parameters'] / 1e6:.2f} |")


if __name__ == "__main__":
    main()
