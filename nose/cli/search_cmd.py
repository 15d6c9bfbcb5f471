"""``nose search``: rank attention sublayers with a criterion on calibration text.

The defaults are the recipe that measured best (reports/criteria.md, reports/repair.md): the
``kl`` criterion, candidates scored under the default repair (``linear``), on the task's
transcripts where the model has a chat template (only as many as the calibration rows need)
and on the standard library otherwise, every candidate screened on the first batch and the best
four scored on every row (``--screen``). NOSE as published is ``--criterion nose`` (scored with
the sublayer skipped, on every row, as in the paper)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (Criterion, DeprecatedModeOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, parse_layers,
                             replace_help, resolve_replace,
                             progress_bar, quiet_transformers, stderr_console, user_errors)
from nose.errors import NoseError


# the replacement a criterion scores under unless --replace says otherwise: the default repair
# for the output criteria, skipping for NOSE (as published) and the one-shot criteria
DEFAULT_REPLACE = {"kl": "linear", "loss": "linear"}
# candidates scored on every row after the first batch screened them (reports/search_speed.md);
# the published criteria and the one-shot ones score every candidate on every row
DEFAULT_SCREEN = {"kl": 4, "loss": 4}


def _default_out(model: str) -> Path:
    slug = Path(model.rstrip("/")).name.removesuffix(".gguf").replace("/", "-") or "model"
    return Path("runs") / f"search-{slug}"


@user_errors
def search(
    model: ModelOpt = "smollm2-135m",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: runs/search-<model>).")] = None,
    steps: Annotated[int, typer.Option(help="Attention sublayers to select (greedy steps).")] = 4,
    criterion: Annotated[Criterion, typer.Option(
        help="kl (output KL to the intact model, greedy; measured best with --calibration translate, "
             "reports/criteria.md), nose (transfer entropy, greedy, as published), nose-abs (|TE|), loss "
             "(LM-loss increase, greedy), cosine (attention-drop 1-cos, one shot), last (deepest first), "
             "random (seeded by --seed).")] = Criterion.kl,
    replace: Annotated[str | None, typer.Option(help=replace_help(
        "linear for kl and loss (each candidate fitted on the calibration rows, so the search picks the layers "
        "the repair restores best), skip for the others (nose as published)"))] = None,
    mode: DeprecatedModeOpt = None,
    target: Annotated[str, typer.Option(help="NOSE's entropy features: final (after the last norm), logits, "
                                             "layer:N.")] = "final",
    protect: Annotated[str | None, typer.Option(help="Layers never removed, e.g. 3,5.")] = None,
    allow_layer0: Annotated[bool, typer.Option("--allow-layer0", help="Let layer 0's attention be removed "
                                               "(engines may refuse such a checkpoint).")] = False,
    calibration: Annotated[str, typer.Option(help="auto (translate for a model with a chat template, stdlib "
                                                  "otherwise), stdlib, translate (the model's own translations of "
                                                  "the Java methods shipped with nose; translate:FILE for other "
                                                  "methods), a text/.jsonl file, or a folder of source code.")] = "auto",
    count: Annotated[str, typer.Option(help="Chat data (translate): statistics count the answer tokens "
                                            "(answer) or every token (all).")] = "answer",
    text_field: Annotated[str, typer.Option(help="JSONL field holding the text (records with "
                                                 "'messages' use the chat template).")] = "text",
    samples: Annotated[int, typer.Option(help="Calibration rows.")] = 16,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per calibration row (default: 512 for chat data, "
                                                     "one conversation per row; 128 for text).")] = None,
    pack: Annotated[bool, typer.Option("--pack/--no-pack", help="Pack documents into full rows, or one "
                                       "padded row per document.")] = True,
    batch_size: Annotated[int, typer.Option(help="Rows per forward; bounds the prefix cache memory.")] = 4,
    screen: Annotated[int | None, typer.Option(
        help="Greedy criteria: score every candidate on the first batch, then only the best N on every row "
             "(0: every candidate on every row, the exact greedy step). Default: 4 for kl and loss, 0 "
             "otherwise.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates for TE intervals (0: none).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for calibration order, bootstrap and --criterion random.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the search.json in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing search in --out.")] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rank attention sublayers and select the ones to remove (output KL under the linear repair by default)."""
    from nose.files import check_output_dir
    from nose.model.loading import load_model, resolve_model
    from nose.data.transcripts import data_source, is_transcript_source, resolve_source
    from nose.data.calibration import build_calibration
    from nose.data.chat import is_chat_file
    from nose.search.config import SearchConfig
    from nose.search.record import FILENAME, read_record
    from nose.search.run import run_search

    err, log = stderr_console()
    replace = resolve_replace(replace, mode, DEFAULT_REPLACE.get(criterion.value, "skip"), log)  # the options first
    config = SearchConfig(steps=steps, criterion=criterion.value, mode=replace, target=target, protect=parse_layers(protect),
                          protect_layer0=not allow_layer0, seed=seed, bootstrap=bootstrap, batch_size=batch_size,
                          screen=DEFAULT_SCREEN.get(criterion.value, 0) if screen is None else screen)
    out = out or _default_out(model)
    check_output_dir(out)
    existing = out / FILENAME
    if resume and not existing.exists():
        raise NoseError(f"--resume: no {FILENAME} in {out} to continue")
    if existing.exists() and not (resume or overwrite):
        raise NoseError(f"{existing} exists; pass --resume to continue it or --overwrite to start over")
    previous = read_record(existing) if resume else None

    quiet_transformers()
    ref = resolve_model(model, log=log)  # config only: bad settings fail before weights load
    config.validate(ref.num_layers, ref.absent_attention)
    tokenizer = ref.load_tokenizer()
    calibration = data_source(calibration, tokenizer)
    lm, source = None, calibration
    if is_transcript_source(calibration):  # the intact model answers the methods the rows need
        lm = load_model(ref, dtype=dtype, device=device, device_map=device_map, tokenizer=tokenizer, log=log)
        with progress_bar(err) as progress:
            source = resolve_source(calibration, lm, progress=progress, log=log, needed=samples)
    if seq_len is None:
        seq_len = 512 if source != "stdlib" and is_chat_file(Path(source).expanduser()) else 128
    calib = build_calibration(tokenizer, source, samples=samples, seq_len=seq_len, seed=seed,
                              pack=pack, text_field=text_field, count=count, log=log)
    if source != calibration:
        calib.source = f"{calibration} ({source})"
    lm = lm or load_model(ref, dtype=dtype, device=device, device_map=device_map, tokenizer=tokenizer, log=log)
    log(f"model {model}: {lm.adapter.family}, {lm.num_layers} layers, {lm.dtype} on {lm.device}; "
        f"calibration {calib.samples} x {calib.seq_len} tokens from {calibration}; criterion {config.criterion}")

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with progress_bar(err) as progress:
            record = run_search(lm, calib, config, out_dir=out, resume=previous, progress=progress)
    except BaseException:
        if created and not (out / FILENAME).exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: leave no empty folder
        raise

    from nose.report.search_plots import plot_search

    plots = plot_search(record, out)
    summary = {"out": str(out), "search_json": str(out / FILENAME), "plots": [str(p) for p in plots],
               "order": record["order"],
               "steps": [{"step": s["step"], "layer": s["selected"], "score": s["score"], "ci95": s["ci95"],
                          "separated": s["separated"], "seconds": s["seconds"]} for s in record["steps"]]}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console

    _print_table(record, Console())
    Console().print(f"order: {record['order']}\nwrote {out / FILENAME} and {', '.join(p.name for p in plots)}")


def _print_table(record: dict, console) -> None:
    from rich.table import Table

    cfg = record["settings"]
    table = Table(title=f"{cfg['criterion']} search: {record['model']['id']} (mode {cfg['mode']}, "
                        f"target {cfg['target']})")
    for col in ("step", "layer", f"{record['score']['name']} [{record['score']['unit']}]", "95% interval",
                "separated", "seconds"):
        table.add_column(col, justify="right")
    for s in record["steps"]:
        ci = f"[{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}]" if s["ci95"] else "-"
        sep = "-" if s["separated"] is None else ("yes" if s["separated"] else f"no (p={s['p_win']:.2f})")
        table.add_row(str(s["step"]), str(s["selected"]), f"{s['score']:+.4f}", ci, sep, f"{s['seconds']:.1f}")
    console.print(table)
