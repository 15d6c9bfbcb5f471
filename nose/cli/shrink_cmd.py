"""``nose shrink``: remove chosen attention sublayers, repair (the replacement's fit, healing), export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (DeviceMapOpt, DeviceOpt, DtypeOpt, DeprecatedModeOpt, JsonOpt, ModelOpt, parse_layers,
                             replace_help, resolve_replace,
                             progress_bar, quiet_transformers, stderr_console, user_errors)
from nose.cli.eval_options import FitTargetOpt


@user_errors
def shrink(
    model: ModelOpt = "smollm2-135m",
    layers: Annotated[str | None, typer.Option(help="Attention layers to remove, e.g. 19,20,21.")] = None,
    search: Annotated[Path | None, typer.Option(help="A search.json (or its folder) to take layers from; the measured best "
                                                           "is nose search --criterion kl --calibration translate.")] = None,
    k: Annotated[int | None, typer.Option(help="With --search: remove its first k layers.")] = None,
    max_drop: Annotated[str | None, typer.Option(
        help="With --search instead of --k: the largest k whose repair keeps at least 1 - P of the intact model's "
             "accuracy on the held-out Java tests (e.g. 5%); scores about log2(steps) + 1 repaired models.")] = None,
    kv_budget: Annotated[str | None, typer.Option(
        help="With --search instead of --k: keep at most this share of the KV cache (e.g. 75%): removes at least "
             "ceil((1 - F) x attention layers); with --max-drop, the floor of its choice.")] = None,
    budget_methods: Annotated[Path | None, typer.Option(
        help="With --max-drop: a JSONL of Java methods (name, java) to test instead of the project's 170 "
             "held-out test methods.")] = None,
    replace: Annotated[str | None, typer.Option(help=replace_help("folded"))] = None,
    mode: DeprecatedModeOpt = None,
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write.")] = Path("runs/shrunk"),
    steps: Annotated[int, typer.Option(help="Healing steps (0: surgery, or the replacement's fit alone); 60 steps of 4 "
                                       "transcripts take about 30 minutes on 2 CPU cores for a 0.5B model.")] = 60,
    epochs: Annotated[int, typer.Option(help="Healing epochs (validation after each).")] = 1,
    schedule: Annotated[str, typer.Option(
        help="Blend schedule: linear, epoch, or none (M = 0 from the start).")] = "linear",
    loss: Annotated[str, typer.Option(help="ce, kd, ce+kd or gem.")] = "kd",
    alpha: Annotated[float, typer.Option(help="Weight of kd in ce+kd.")] = 0.2,
    temperature: Annotated[float, typer.Option(help="KD temperature.")] = 2.0,
    beta: Annotated[float, typer.Option(help="GEM beta.")] = 0.7,
    train: Annotated[str, typer.Option(help="Trainable: default (replacements + MLP and post-attention norm of "
                                            "the changed layers), replacements, all, or lora (adapters on those "
                                            "MLPs, merged at the end, and the replacements).")] = "default",
    lr: Annotated[float, typer.Option(help="AdamW learning rate (1e-4 quadrupled the held-out KD of a "
                                        "linear repair, reports/repair.md).")] = 1e-5,
    batch_size: Annotated[int, typer.Option(help="Rows per optimizer step.")] = 4,
    data: Annotated[str, typer.Option(help="Healing and fit data: auto (translate+complete for a model with a chat "
                                           "template, else stdlib), translate[:FILE], complete (docstring-to-function "
                                           "answers), stdlib, a text/.jsonl file or a folder.")] = "auto",
    text_field: Annotated[str, typer.Option(help="JSONL text field.")] = "text",
    samples: Annotated[int, typer.Option(help="Healing rows.")] = 256,
    val_samples: Annotated[int, typer.Option(help="Validation rows (the held-out transcripts for translate).")] = 16,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per healing row (default: 512 for transcripts, "
                                                       "128 for packed text).")] = None,
    fit_samples: Annotated[int | None, typer.Option(help="Rows the linear or folded fit reads (a quarter score "
                                                         "the ridge strength); default: every training transcript "
                                                         "for translate data, 64 rows of other data.")] = None,
    fit_seq_len: Annotated[int, typer.Option(help="Tokens per fit row at most.")] = 512,
    fit_target: FitTargetOpt = "attention",
    seed: Annotated[int, typer.Option(help="Data order seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    gguf: Annotated[Path | None, typer.Option(help="Also write this .gguf file (llama.cpp) from the export.")] = None,
    gguf_type: Annotated[str, typer.Option(help="Tensor type of --gguf: f32, f16, bf16 or q8_0.")] = "f16",
    resume: Annotated[bool, typer.Option("--resume", help="Continue healing from the state saved beside --out.")] = False,
    save_every: Annotated[int, typer.Option(help="Save the healing state every N steps.")] = 25,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove attention sublayers, repair what is left (fit, annealed healing), export a DeciLM checkpoint."""
    from nose.files import check_output_dir
    from nose.model.loading import load_model, resolve_model
    from nose.shrink.export import check_target
    from nose.shrink.healing import HealConfig
    from nose.replace.ridge import FitConfig
    from nose.shrink.budget import Budget, parse_share
    from nose.shrink.pipeline import ShrinkConfig, choose_layers
    from nose.shrink.pipeline import shrink as run_shrink

    err, log = stderr_console()
    check_output_dir(out)
    if gguf is not None:
        from nose.shrink.gguf import check_gguf_target

        check_gguf_target(gguf, gguf_type, overwrite)  # before any work
    check_target(out, overwrite, source=model if Path(model).exists() else None)  # a local model: before loading
    replace = resolve_replace(replace, mode, "folded", log)
    config = ShrinkConfig(
        layers=parse_layers(layers), search=str(search) if search else None, k=k, replace=replace,
        budget=Budget(parse_share(max_drop, "--max-drop"), parse_share(kv_budget, "--kv-budget"),
                      str(budget_methods) if budget_methods else None),
        data=data, text_field=text_field, samples=samples, val_samples=val_samples, seq_len=seq_len, seed=seed,
        fit=FitConfig(samples=fit_samples, seq_len=fit_seq_len, target=fit_target),
        heal=HealConfig(steps=steps, epochs=epochs, schedule=schedule, loss=loss, alpha=alpha, temperature=temperature,
                        beta=beta, train=train, lr=lr, batch_size=batch_size, seed=seed))
    if layers is not None and not config.layers:
        from nose.errors import NoseError

        raise NoseError("--layers is empty; name at least one layer, e.g. --layers 19,20")
    quiet_transformers()
    ref = resolve_model(model, log=log)
    check_target(out, overwrite, source=ref.source.get("path"))
    choose_layers(config, ref.weights_sha256, ref.num_layers)  # bad layers fail before the weights load
    lm = load_model(ref, dtype=dtype, device=device, device_map=device_map, log=log)
    with progress_bar(err) as progress:
        summary = run_shrink(lm, config, out, overwrite=overwrite, resume=resume, save_every=save_every,
                             progress=progress, log=log)
    if summary is None:  # a non-main process of a data-parallel run
        return
    if gguf is not None:
        from nose.shrink.gguf import write_gguf

        summary["gguf"] = str(write_gguf(Path(summary["out"]), gguf, gguf_type, overwrite=overwrite, log=log))
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        c = summary["repair_cost"]
        typer.echo(f"wrote {summary['out']} (removed attention {summary['removed_attention']}; "
                   f"fit {c['fit_seconds']:.0f} s, {c['heal_tokens']} healing tokens in {c['heal_seconds']:.0f} s)"
                   + (f"; and {summary['gguf']}" if gguf is not None else ""))
