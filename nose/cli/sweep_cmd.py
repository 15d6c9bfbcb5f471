"""``nose sweep``: evaluate the first k layers of one or more removal orders, without healing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (DeprecatedModeOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, parse_layers,
                             resolve_replace,
                             progress_bar, quiet_transformers, stderr_console, user_errors)
from nose.cli.eval_options import (BatchSizeOpt, BenchmarkOpt, FitDataOpt, FitSamplesOpt, FitTargetOpt, IdsOpt,
                                   LimitOpt, MaxNewTokensOpt, PromptFileOpt, ReplaceOpt, StratifiedOpt, SystemOpt, TaskOpt, TimeoutOpt,
                                   UnsafeOpt, WorkersOpt, benchmark_subset, check_replace, fitted_replacements, mode_of,
                                   prompt_and_generation)
from nose.errors import NoseError


@user_errors
def sweep(
    criteria: Annotated[str, typer.Option(
        "--criteria", "--order",
        help="Comma-separated orders: a search.json (or its folder), optionally named with label= in "
             "front and read backwards with :reverse after it, e.g. "
             "runs/search-nose,runs/search-nose:reverse,rand=runs/search-random.")],
    k: Annotated[str, typer.Option("--k", help="Numbers of attention sublayers to remove, e.g. 1,2,3,6 "
                                               "(the intact model, k=0, is always evaluated).")] = "1,2,3,6",
    model: ModelOpt = "qwen2.5-coder-0.5b",
    out: Annotated[Path, typer.Option(help="Output folder: sweep.json, sweep.png, evals/.")] = Path("runs/sweep"),
    task: TaskOpt = "java-python",
    benchmark: BenchmarkOpt = None,
    limit: LimitOpt = None,
    stratified: StratifiedOpt = False,
    ids: IdsOpt = None,
    max_new_tokens: MaxNewTokensOpt = 512,
    batch_size: BatchSizeOpt = 8,
    workers: WorkersOpt = 2,
    timeout: TimeoutOpt = 10.0,
    unsafe_no_isolation: UnsafeOpt = False,
    prompt_file: PromptFileOpt = None,
    system: SystemOpt = None,
    replace: ReplaceOpt = None,
    mode: DeprecatedModeOpt = None,
    fit_data: FitDataOpt = "auto",
    fit_samples: FitSamplesOpt = None,
    fit_target: FitTargetOpt = "attention",
    reference: Annotated[str | None, typer.Option(
        help="Label of the order the CA differences are measured against (default: the first order).")] = None,
    collect_only: Annotated[bool, typer.Option("--collect-only", help="Run nothing: tabulate and plot the "
                                               "finished evaluations, list the missing ones.")] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Plot CA, CodeBLEU and BLEU against the number of removed attention sublayers (thesis Fig. 4.8).

    Greedy decoding; finished evaluations in --out are reused, so an interrupted sweep resumes.
    """
    from nose.evaluate.run import EvalConfig
    from nose.sandbox import require_isolation
    from nose.evaluate.sweep import FILENAME, Order, check_sweep
    from nose.evaluate.sweep import sweep as run_sweep
    from nose.files import check_output_dir
    from nose.model.loading import load_model, resolve_model
    from nose.report.sweep_report import difference_markdown, plot_sweep, sweep_markdown

    err, log = stderr_console()
    check_output_dir(out)
    orders = [Order.parse(spec.strip()) for spec in criteria.split(",") if spec.strip()]
    ks = parse_layers(k)
    check_sweep(orders, ks)  # before the model loads; the sweep checks the weights before writing
    reference = reference or orders[0].label
    if reference not in [o.label for o in orders]:
        raise NoseError(f"--reference {reference!r} is not one of the orders' labels "
                        f"({', '.join(o.label for o in orders)})")
    task_, root, samples = benchmark_subset(task, benchmark, ids, limit, stratified)
    prompt, gen = prompt_and_generation(task_, prompt_file, system, max_new_tokens, 1, 0.0, batch_size, 0, "transformers")
    replace = resolve_replace(replace, mode, "skip", log)
    config = EvalConfig(workers=workers, timeout_s=timeout, mode=mode_of(replace), efficiency=False,
                        unsafe_no_isolation=unsafe_no_isolation)
    check_replace(replace)
    require_isolation(unsafe_no_isolation)
    quiet_transformers()
    ref = resolve_model(model, log=log)
    config.validate(ref.num_layers)
    lm = load_model(ref, dtype=dtype, device=device, device_map=device_map, log=log)
    log(f"sweep of {model} over k={ks} for {', '.join(o.label for o in orders)} on {len(samples)} samples")
    with progress_bar(err) as progress:
        fitter = fitted_replacements(lm, replace, fit_data, fit_samples, fit_target, progress, log)
        record = run_sweep(lm, orders, ks, samples, prompt, gen, config, out, str(root), progress, log,
                           collect_only=collect_only, fitter=fitter, task=task_)
    plot = plot_sweep(record, out / "sweep.png")
    if json_out:
        typer.echo(json.dumps({"out": str(out), "sweep_json": str(out / FILENAME), "plot": str(plot),
                               "rows": record["rows"], "missing": record["missing"]}, indent=2))
        return
    for metric, title in (("ca_percent", "CA [%]"), ("codebleu", "CodeBLEU"), ("bleu", "BLEU")):
        typer.echo(f"\n{title}\n" + sweep_markdown(record, metric))
    if len(orders) > 1:
        typer.echo(f"\nCA difference to {reference} [percentage points, paired 95 % bootstrap]\n"
                   + difference_markdown(record, reference))
    if record["missing"]:
        typer.echo(f"\nnot evaluated yet: {', '.join(record['missing'])}")
    typer.echo(f"\nwrote {out / FILENAME} and {plot}")
