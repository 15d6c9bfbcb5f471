"""``nose shrink``: fade chosen attention sublayers out while healing, then export the slimmer model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, Mode, ModelOpt, parse_layers,
                             progress_bar, quiet_transformers, stderr_console, user_errors)
from nose.errors import NoseError


def layers_from_search(path: Path, k: int | None, weights_sha256: str) -> tuple[list[int], dict]:
    from nose.search.record import read_record

    record = read_record(path)
    if record["model"]["weights_sha256"] != weights_sha256:
        raise NoseError(f"the search file is for model {record['model']['id']} (weights "
                        f"{record['model']['weights_sha256'][:12]}), not this one; run nose search on this model")
    order = record["order"]
    if k is None:
        raise NoseError("--search needs --k (how many of its layers to remove)")
    if not 1 <= k <= len(order):
        raise NoseError(f"--k {k} is out of range: the search selected {len(order)} layers {order}")
    return order[:k], {"search": str(path), "search_order": order, "k": k}


@user_errors
def shrink(
    model: ModelOpt = "smollm2-135m",
    layers: Annotated[str | None, typer.Option(help="Attention layers to remove, e.g. 19,20,21.")] = None,
    search: Annotated[Path | None, typer.Option(help="A search.json (or its folder) to take layers from.")] = None,
    k: Annotated[int | None, typer.Option(help="With --search: remove its first k layers.")] = None,
    mode: Annotated[Mode, typer.Option(help="skip or double (folded into later layers); thesis cannot be exported.")] = Mode.skip,
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write.")] = Path("runs/shrunk"),
    steps: Annotated[int, typer.Option(help="Healing steps (0 = surgery only).")] = 100,
    epochs: Annotated[int, typer.Option(help="Healing epochs (validation after each).")] = 1,
    schedule: Annotated[str, typer.Option(help="Blend schedule: linear or epoch.")] = "linear",
    loss: Annotated[str, typer.Option(help="ce, kd, ce+kd or gem.")] = "kd",
    alpha: Annotated[float, typer.Option(help="Weight of kd in ce+kd.")] = 0.2,
    temperature: Annotated[float, typer.Option(help="KD temperature.")] = 2.0,
    beta: Annotated[float, typer.Option(help="GEM beta.")] = 0.7,
    train: Annotated[str, typer.Option(help="Trainable parameters: default (MLP + post-attention norm of "
                                            "the changed layers), all, or lora (adapters on those MLPs, "
                                            "merged at the end).")] = "default",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Rows per optimizer step.")] = 4,
    data: Annotated[str, typer.Option(help="Healing text: stdlib, a text/.jsonl file or a folder.")] = "stdlib",
    text_field: Annotated[str, typer.Option(help="JSONL text field.")] = "text",
    samples: Annotated[int, typer.Option(help="Training rows.")] = 256,
    val_samples: Annotated[int, typer.Option(help="Validation rows (taken after the training rows).")] = 16,
    seq_len: Annotated[int, typer.Option(help="Tokens per row.")] = 128,
    seed: Annotated[int, typer.Option(help="Data order seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue healing from the state saved beside --out.")] = False,
    save_every: Annotated[int, typer.Option(help="Save the healing state every N steps.")] = 25,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove attention sublayers (annealed healing optional) and export a DeciLM checkpoint."""
    from nose.files import check_output_dir
    from nose.model.loading import load_model, resolve_model
    from nose.model.switches import check_layer_indices
    from nose.shrink.data import build_training_rows
    from nose.shrink.export import check_exportable, check_mode, check_target, export_checkpoint
    from nose.shrink.healing import HealConfig, heal

    err, log = stderr_console()
    check_output_dir(out)
    check_target(out, overwrite)
    if (layers is None) == (search is None):
        raise NoseError("pass exactly one of --layers and --search")
    config = HealConfig(steps=steps, epochs=epochs, schedule=schedule, loss=loss, alpha=alpha,
                        temperature=temperature, beta=beta, train=train, lr=lr, batch_size=batch_size, seed=seed)
    config.validate()
    check_mode(mode.value)
    quiet_transformers()
    ref = resolve_model(model, log=log)
    if search is not None:
        removed, provenance = layers_from_search(search, k, ref.weights_sha256)
    else:
        removed = parse_layers(layers)
        if not removed:
            raise NoseError("--layers is empty; name at least one layer, e.g. --layers 19,20")
        provenance = {}
    removed = check_layer_indices(removed, ref.num_layers, what="--layers")
    tokenizer = ref.load_tokenizer()
    train_rows = val_rows = None
    if steps > 0:
        rows = build_training_rows(tokenizer, data, samples=samples + val_samples, seq_len=seq_len, seed=seed,
                                   text_field=text_field, log=log)
        if len(rows) < 2:
            raise NoseError(f"healing data {data} gives {len(rows)} row(s); need a training and a validation row")
        train_rows, val_rows = rows.split(max(1, min(val_samples, len(rows) // 5)))
    lm = load_model(ref, dtype=dtype, device=device, device_map=device_map, tokenizer=tokenizer, log=log)
    check_exportable(lm, removed, mode.value)
    log(f"attention layers: {lm.num_layers} -> {lm.num_layers - len(removed)} (removing {removed}, mode {mode.value})")
    state = out.parent / f".{out.name}.healing-state.pt"
    if resume and not state.exists():
        raise NoseError(f"--resume: no healing state at {state}")
    with progress_bar(err) as progress:
        history = heal(lm, removed, mode.value, train_rows, val_rows, config, progress,
                       state_path=state if steps else None, save_every=save_every, resume=resume)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`, one process exports
        return
    healing = {"healing": {**asdict(config), "tokens": history.tokens * history.processes,
                           "processes": history.processes, "seconds": round(history.seconds, 1),
                           "data": data if steps else None, "train_rows": 0 if train_rows is None else len(train_rows),
                           "validation": history.validation, "final_train_loss":
                               history.steps[-1]["loss"] if history.steps else None}}
    folder = export_checkpoint(lm, removed, out, mode.value, {**provenance, **healing}, overwrite=overwrite)
    state.unlink(missing_ok=True)  # exported: the healing state is no longer needed
    if history.steps:
        from nose.report.heal_plots import plot_healing

        (folder / "healing.json").write_text(json.dumps(asdict(history) | {"loss_name": loss}, indent=2))
        plot_healing(asdict(history) | {"loss_name": loss}, folder / "healing_curve.png",
                     f"{model}: remove {removed}, {loss}")
    summary = {"out": str(folder), "removed_attention": removed, "mode": mode.value, "healing_steps": steps,
               "tokens": history.tokens, "seconds": round(history.seconds, 1), "validation": history.validation}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {folder} (attention layers {lm.num_layers} -> {lm.num_layers - len(removed)}; "
                   f"{history.tokens} healing tokens in {history.seconds:.0f} s)")
