"""Serving cost of a base model and its exported (attention-removed) checkpoints, side by side.

Each model is loaded in turn into this one process and measured with the same random prompts:
prefill latency, greedy decode tokens/s with a KV cache at batch 1 and 8, KV-cache bytes per
token, weight bytes and peak memory. Writes ``reports/serving_speed.md``.

    python benchmarks/serving_speed.py base=qwen2.5-coder-0.5b k6=runs/qwen-k6-surgery

With ``--shape`` the models are random-weight ones of a real shape (no download): the base is
built from the config, and for every k > 0 of ``--k`` the attention of its k deepest layers is
removed by a real export (``nose.shrink.export``) into ``--work-dir``, loaded back like any
exported checkpoint, measured and deleted:

    python benchmarks/serving_speed.py --shape opencodeinterpreter-6.7b --k 0,4,8,16 --device cuda
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.evaluate.efficiency import kv_cache_bytes_per_token, parameter_counts, speed  # noqa: E402
from nose.model.loading import LoadedModel, from_module, load_model, resolve_device  # noqa: E402
from nose.shrink.export import export_checkpoint  # noqa: E402
from nose.testing import tiny_tokenizer  # noqa: E402

SHAPES = {
    # ../shared/MODELS.md, "Shapes without weights": m-a-p/OpenCodeInterpreter-DS-6.7B.
    "opencodeinterpreter-6.7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                     vocab_size=32256, max_position_embeddings=16384, rms_norm_eps=1e-6,
                                     rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0}),
    # Qwen2.5-Coder-0.5B-Instruct's config: small enough to run every k on the CPU machines.
    "qwen2.5-coder-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                               max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                               rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
}


def random_shape_models(shape: dict, ks: list[int], device: str, dtype: torch.dtype,
                        work_dir: Path) -> Iterator[tuple[str, str, LoadedModel]]:
    """(name, spec, model) for the random base (k = 0) and each export without k deepest attentions.

    ``shape`` is a config: ``model_type`` plus that family's config fields.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(shape)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    with torch.device(resolve_device(device)):
        base = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    lm = from_module(base, tiny_tokenizer(), spec="random")  # any tokenizer: prompts are random ids
    del base
    n = lm.num_layers
    # Every export is written before the base is measured, so that the base can be freed before
    # the first export loads: one model in memory at a time keeps each peak-memory figure its own.
    folders = {k: export_checkpoint(lm, list(range(n - k, n)), Path(work_dir) / f"k{k}") for k in ks if k}
    if 0 in ks:
        yield "k=0", "random weights", lm
    del lm  # the caller drops its reference once it has measured the base
    for k, folder in folders.items():
        try:
            yield f"k={k}", f"export without layers {n - k}..{n - 1}", load_model(
                str(folder), dtype=str(dtype).removeprefix("torch."), device=device)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def models(args) -> Iterator[tuple[str, str, LoadedModel]]:
    if args.shape:
        with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
            yield from random_shape_models(SHAPES[args.shape], [int(k) for k in args.k.split(",")], args.device,
                                           getattr(torch, args.dtype), Path(tmp))
        return
    for item in args.models:
        name, _, spec = item.partition("=")
        yield name, spec, load_model(spec, device=args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="name=model (preset, folder or exported checkpoint); first is the base")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape instead of models")
    ap.add_argument("--k", default="0,4,8,16", help="with --shape: attention layers removed per variant")
    ap.add_argument("--dtype", default="bfloat16", help="with --shape: weight dtype")
    ap.add_argument("--work-dir", type=Path, default=None, help="with --shape: where exports are written")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3, help="timings are the median of this many runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "serving_speed.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.shape) == bool(args.models):
        ap.error("pass models (name=model ...) or --shape, not both")
    batches = tuple(int(b) for b in args.batches.split(","))
    rows = []
    for name, spec, lm in models(args):
        s = speed(lm.model, args.prompt_len, args.new_tokens, batches, args.repeats)
        counts = parameter_counts(lm.model, lm.adapter)
        rows.append((name, spec, lm.num_layers, s, kv_cache_bytes_per_token(lm.model, lm.adapter), counts))
        del lm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    base = rows[0]
    peak_key = "peak_cuda_allocated_bytes" if "peak_cuda_allocated_bytes" in base[3] else "peak_rss_bytes"
    head = ["model", "prefill [ms]"] + [f"decode b={b} [tok/s]" for b in batches] + \
        ["KV cache [bytes/token]", "weights [MB]", "peak memory [MB]"]
    lines = ["# Serving speed: base vs attention-removed checkpoints", "",
             "Command: `python benchmarks/serving_speed.py " + " ".join(sys.argv[1:]) + "`", "",
             f"Device: {base[3]['device']}, {base[3]['dtype']}; prompt {args.prompt_len} random tokens; decode "
             f"{args.new_tokens} greedy tokens with a KV cache, timed apart from the prefill; times are the median "
             f"of {args.repeats} runs; peak memory is "
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
