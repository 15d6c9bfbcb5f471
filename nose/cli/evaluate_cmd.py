"""``nose evaluate``: G-TransEval Java→Python quality and efficiency of one model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, Mode, ModelOpt, parse_layers,
                             progress_bar, quiet_transformers, stderr_console, user_errors)
from nose.errors import NoseError


@user_errors
def evaluate(
    model: ModelOpt = "qwen2.5-coder-0.5b",
    benchmark: Annotated[Path | None, typer.Option(help="A clone of PolyEval/G-TransEval "
                                                        "(default: $NOSE_BENCHMARK).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for results.json and samples.jsonl.")] = Path("runs/evaluate"),
    limit: Annotated[int | None, typer.Option(help="Evaluate this many samples.")] = None,
    stratified: Annotated[bool, typer.Option("--stratified", help="With --limit: keep the type proportions.")] = False,
    ids: Annotated[str | None, typer.Option(help="Comma-separated sample ids, e.g. l1-000,l4-003.")] = None,
    n: Annotated[int, typer.Option(help="Completions per sample (pass@k); needs --temperature > 0.")] = 1,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help="Generated tokens per completion at most.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 8,
    workers: Annotated[int, typer.Option(help="Parallel sandboxed test processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds per test program.")] = 10.0,
    prompt_file: Annotated[Path | None, typer.Option(help="User-message template with {java}.")] = None,
    system: Annotated[str | None, typer.Option(help="System message ('' for none).")] = None,
    backend: Annotated[str, typer.Option(help="transformers or vllm.")] = "transformers",
    drop_attention: Annotated[str | None, typer.Option(help="Switch these attention layers off in memory "
                                                            "(no healing), e.g. 21,20.")] = None,
    mode: Annotated[Mode, typer.Option(help="Replacement for --drop-attention.")] = Mode.skip,
    efficiency: Annotated[bool, typer.Option("--efficiency/--no-efficiency", help="Measure FLOPs, memory, speed.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard samples.jsonl in --out.")] = False,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Translate G-TransEval Java to Python, test it in a sandbox, and measure cost."""
    from nose.evaluate.benchmark import find_root, load_benchmark, select
    from nose.evaluate.generation import DEFAULT_SYSTEM, GenerationConfig, PromptConfig
    from nose.evaluate.run import SAMPLES, EvalConfig
    from nose.evaluate.run import evaluate as run_evaluation
    from nose.files import check_output_dir
    from nose.model.loading import load_model, resolve_model

    err, log = stderr_console()
    check_output_dir(out)
    path = benchmark or (Path(os.environ["NOSE_BENCHMARK"]) if os.environ.get("NOSE_BENCHMARK") else None)
    if path is None:
        raise NoseError("pass --benchmark PATH (a clone of PolyEval/G-TransEval) or set NOSE_BENCHMARK")
    root = find_root(path)
    samples = select(load_benchmark(root), [i.strip() for i in ids.split(",")] if ids else None, limit, stratified)
    prompt = PromptConfig.from_file(prompt_file, DEFAULT_SYSTEM if system is None else (system or None))
    gen = GenerationConfig(max_new_tokens=max_new_tokens, n=n, temperature=temperature, batch_size=batch_size,
                           seed=seed, backend=backend)
    gen.validate()
    config = EvalConfig(workers=workers, timeout_s=timeout, drop_attention=parse_layers(drop_attention),
                        mode=mode.value, efficiency=efficiency)
    quiet_transformers()
    ref = resolve_model(model, log=log)
    config.validate(ref.num_layers)
    lm = load_model(ref, dtype=dtype, device=device, device_map=device_map, log=log)
    if overwrite and (out / SAMPLES).exists():
        (out / SAMPLES).unlink()
    log(f"evaluating {model} on {len(samples)} samples from {root}"
        + (f", attention off in layers {sorted(config.drop_attention)}" if config.drop_attention else ""))
    created = not out.exists()
    try:
        with progress_bar(err) as progress:
            results = run_evaluation(lm, samples, prompt, gen, config, out, str(root), progress)
    except BaseException:
        if created and not (out / SAMPLES).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    m = results["metrics"]
    summary = {"out": str(out), "samples": m["samples"], "ca_percent": m["ca_percent"],
               "ca_by_type": {k: v["ca"] for k, v in m["ca_by_type"].items()}, "bleu": m["bleu"],
               "codebleu": m["codebleu"], "pass_at_k": m.get("pass_at_k"), "seconds": results["seconds"]}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    from nose.report.compare import comparison, to_markdown

    typer.echo(to_markdown(comparison([results], [model])))
    typer.echo(f"wrote {out / 'results.json'} and {out / SAMPLES}")
