"""Probe: refit the changed layers' MLP down-projections in closed form, after the linear fit.

For each changed layer l (in depth order, on the repaired model's stream with every earlier
change in place), ``mlp.down_proj`` is refitted by ridge least squares *toward its original
weights* so that the layer puts the residual stream back where the intact model has it: inputs
are the MLP's intermediate activations on the repaired stream, the target is the intact stream
after layer l minus the repaired stream before the MLP. The ridge strength is chosen on every
4th calibration row, as in :mod:`nose.shrink.linear_fit`. The checkpoint's linear maps are kept.
Before and after, the model is scored on the held-out transcripts (teacher-forced KL).

Not a toolkit feature: this measured whether such a refit is worth building (reports/repair.md,
"k = 8, fifth round": it is not).

    python benchmarks/mlp_refit_probe.py --checkpoint runs/repair-kllinear/k8-linear-198 --out runs/mlp-probe.json
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

from safetensors import safe_open  # noqa: E402

from nose.data.transcripts import resolve_source  # noqa: E402
from nose.evaluate.fidelity import fidelity  # noqa: E402
from nose.model.adapters import first_output  # noqa: E402
from nose.model.loading import load_model  # noqa: E402
from nose.model.replacements import Linear  # noqa: E402
from nose.model.switches import attention_switched  # noqa: E402
from nose.search.calibration import build_calibration  # noqa: E402
from nose.shrink.linear_fit import FitConfig, _heldout_rows, _layer_inputs  # noqa: E402
from nose.shrink.pipeline import fit_rows  # noqa: E402

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # λ = α · tr(A) / intermediate, pulling toward the original weights


def linear_maps(folder: str) -> dict[int, Linear]:
    meta = json.loads((Path(folder) / "nose.json").read_text())
    where = json.loads((Path(folder) / "model.safetensors.index.json").read_text())["weight_map"]
    maps = {}
    for i in meta["removed_attention"]:
        key = f"model.layers.{i}.self_attn.linear_attn.weight"
        with safe_open(str(Path(folder) / where[key]), "pt") as f:
            maps[i] = Linear(f.get_tensor(key))
    return maps


def refit_down_proj(mlp, acts, targets, heldout, alphas=ALPHAS) -> dict:
    """Ridge toward the original down_proj: (A + λI) M = B + λ W0ᵀ; α by held-out error."""
    w0 = mlp.down_proj.weight.detach().double()
    n = w0.shape[1]
    zero = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
    a, b, ha, hb, hc = zero(n, n), zero(n, w0.shape[0]), zero(n, n), zero(n, w0.shape[0]), 0.0
    for x, y, held in zip(acts, targets, heldout):
        a_, b_ = (ha, hb) if held else (a, b)
        a_ += (x.T @ x).double()
        b_ += (x.T @ y).double()
        hc += float((y.double() ** 2).sum()) if held else 0.0
    eye = torch.eye(n, dtype=torch.float64)

    def err(m):
        return (hc - 2 * float((m * hb).sum()) + float((m * (ha @ m)).sum())) / hc

    scale = float(torch.trace(a)) / n
    scores = {al: err(torch.linalg.solve(a + al * scale * eye, b + al * scale * w0.T)) for al in alphas}
    best = min(scores, key=scores.get)
    lam = best * float(torch.trace(a + ha)) / n
    m = torch.linalg.solve(a + ha + lam * eye, b + hb + lam * w0.T)
    mlp.down_proj.weight.copy_(m.T.to(mlp.down_proj.weight.dtype))
    return {"alpha": best, "heldout_relative_error": scores[best], "original_relative_error": err(w0.T)}


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--checkpoint", required=True, help="an exported checkpoint with linear replacements")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    lm, ref = load_model(args.model), load_model(args.model)  # lm's MLPs change; ref stays intact
    maps = linear_maps(args.checkpoint)
    held = build_calibration(lm.tokenizer, resolve_source("translate:heldout", lm), samples=1000, seq_len=640,
                             count="answer")
    variant = {"repaired": lambda: attention_switched(lm.model, maps, adapter=lm.adapter)}
    result = {"checkpoint": args.checkpoint, "before": fidelity(lm, held, variant, reference=ref)["repaired"]}
    config = FitConfig()
    calib = fit_rows(lm, resolve_source("translate", lm), config)
    layers, intact_layers = lm.adapter.layers_of(lm.model), ref.adapter.layers_of(ref.model)
    kwargs, counted, heldout, stream = [], [], [], []
    for start, batch in zip(range(0, calib.samples, config.batch_size), calib.batches(config.batch_size, "token")):
        inputs, kw = _layer_inputs(lm, batch, keep={0})
        kwargs.append(kw)
        stream.append(inputs[0])
        counted.append(batch.count_mask.bool())
        heldout.append(_heldout_rows(start, batch.size, config.heldout_every, "cpu"))
    intact, t0, c0, result["layers"] = list(stream), time.perf_counter(), time.process_time(), {}
    for j in range(max(maps) + 1):
        layer = layers[j]
        intact = [first_output(intact_layers[j](x, **kw[j])) for x, kw in zip(intact, kwargs)]
        if j in maps:
            acts, targets, held_flags = [], [], []
            for x, after, kw, cnt, held_rows in zip(stream, intact, kwargs, counted, heldout):
                mid = x + maps[j](layer.input_layernorm(x), x)
                h = layer.post_attention_layernorm(mid)
                act = layer.mlp.act_fn(layer.mlp.gate_proj(h)) * layer.mlp.up_proj(h)
                for flag in (False, True):
                    rows = cnt & (held_rows[:, None] if flag else ~held_rows[:, None])
                    acts.append(act[rows])
                    targets.append((after - mid)[rows])
                    held_flags.append(flag)
            result["layers"][j] = refit_down_proj(layer.mlp, acts, targets, held_flags)
            print(j, result["layers"][j], flush=True)
        with attention_switched(lm.model, {j: maps[j]} if j in maps else {}, adapter=lm.adapter):
            stream = [first_output(layer(x, **kw[j])) for x, kw in zip(stream, kwargs)]
    result["fit_seconds"], result["fit_cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    result["after"] = fidelity(lm, held, variant, reference=ref)["repaired"]
    args.out.write_text(json.dumps(result, indent=1))
    print(f"held-out KL {result['before']['kl']:.4f} -> {result['after']['kl']:.4f}, agreement "
          f"{100 * result['before']['agreement']:.1f} -> {100 * result['after']['agreement']:.1f} %")


if __name__ == "__main__":
    main()
