"""``nose evaluate``: G-TransEval Java→Python quality and efficiency of one model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (DeprecatedModeOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, parse_layers,
                             resolve_replace,
                             progress_bar, quiet_transformers, stderr_console, user_errors)
from nose.cli.eval_options import (BackendOpt, BatchSizeOpt, BenchmarkOpt, FitDataOpt, FitSamplesOpt, FitTargetOpt,
                                   IdsOpt, LimitOpt, MaxNewTokensOpt, NOpt, PromptFileOpt, ReplaceOpt, SeedOpt,
                                   StratifiedOpt, SystemOpt, TaskOpt, TemperatureOpt, TimeoutOpt, UnsafeOpt, WorkersOpt,
                                   benchmark_subset, check_replace, fitted_replacements, mode_of, prompt_and_generation)


@user_errors
def evaluate(
    model: ModelOpt = "qwen2.5-coder-0.5b",
    task: TaskOpt = "java-python",
    benchmark: BenchmarkOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder for results.json and samples.jsonl.")] = Path("runs/evaluate"),
    limit: LimitOpt = None,
    stratified: StratifiedOpt = False,
    ids: IdsOpt = None,
    n: NOpt = 1,
    temperature: TemperatureOpt = 0.0,
    max_new_tokens: MaxNewTokensOpt = 512,
    batch_size: BatchSizeOpt = 8,
    workers: WorkersOpt = 2,
    timeout: TimeoutOpt = 10.0,
    unsafe_no_isolation: UnsafeOpt = False,
    prompt_file: PromptFileOpt = None,
    system: SystemOpt = None,
    backend: BackendOpt = "transformers",
    drop_attention: Annotated[str | None, typer.Option(help="Switch these attention layers off in memory "
                                                            "(no healing), e.g. 21,20.")] = None,
    replace: ReplaceOpt = None,
    mode: DeprecatedModeOpt = None,
    fit_data: FitDataOpt = "auto",
    fit_samples: FitSamplesOpt = None,
    fit_target: FitTargetOpt = "attention",
    efficiency: Annotated[bool, typer.Option("--efficiency/--no-efficiency", help="Measure FLOPs, memory, speed.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard samples.jsonl in --out.")] = False,
    seed: SeedOpt = 0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Translate G-TransEval Java to Python, test it in a sandbox, and measure cost."""
    from nose.evaluate.run import SAMPLES, EvalConfig
    from nose.evaluate.run import evaluate as run_evaluation
    from nose.sandbox import require_isolation
    from nose.files import check_output_dir
    from nose.model.loading import load_model, resolve_model

    err, log = stderr_console()
    check_output_dir(out)
    task_, root, samples = benchmark_subset(task, benchmark, ids, limit, stratified)
    prompt, gen = prompt_and_generation(task_, prompt_file, system, max_new_tokens, n, temperature, batch_size, seed, backend)
    replace = resolve_replace(replace, mode, "skip", log)
    config = EvalConfig(workers=workers, timeout_s=timeout, drop_attention=parse_layers(drop_attention),
                        mode=mode_of(replace), efficiency=efficiency, unsafe_no_isolation=unsafe_no_isolation)
    check_replace(replace, config.drop_attention)
    require_isolation(unsafe_no_isolation)  # before the model loads; the run logs the unsafe warning once
    quiet_transformers()
    ref = resolve_model(model, log=log)
    config.validate(ref.num_layers)
    lm = load_model(ref, dtype=dtype, device=device, device_map=device_map, log=log)
    fitter = fitted_replacements(lm, replace, fit_data, fit_samples, fit_target, log=log)
    if fitter is not None:
        config.replacements = fitter(config.drop_attention)
    if overwrite and (out / SAMPLES).exists():
        (out / SAMPLES).unlink()
    log(f"evaluating {model} on {len(samples)} samples from {root}"
        + (f", attention off in layers {sorted(config.drop_attention)}" if config.drop_attention else ""))
    created = not out.exists()
    try:
        with progress_bar(err) as progress:
            results = run_evaluation(lm, samples, prompt, gen, config, out, str(root), progress, log, task_)
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
