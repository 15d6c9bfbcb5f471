"""``nose data``: task-shaped data: harvest Java methods, make self-distilled transcripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import (DeviceMapOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, progress_bar, quiet_transformers,
                             stderr_console, user_errors)

app = typer.Typer(help="Task-shaped data: Java methods, and the model's own answers to the shipped inputs.",
                  no_args_is_help=True)


@app.command()
@user_errors
def harvest(
    source: Annotated[Path, typer.Argument(help="A Java source tree, a .java file, or a src.zip/jar of sources "
                                                "(e.g. /usr/lib/jvm/openjdk-17/lib/src.zip).")],
    out: Annotated[Path, typer.Option(help="JSONL to write: name, java, origin per method.")] = Path("runs/methods.jsonl"),
    min_lines: Annotated[int, typer.Option(help="Shortest method kept, in lines.")] = 3,
    max_lines: Annotated[int, typer.Option(help="Longest method kept, in lines.")] = 40,
    limit: Annotated[int | None, typer.Option(help="Keep at most this many methods.")] = None,
    exclude_benchmark: Annotated[Path | None, typer.Option(
        help="A G-TransEval clone: drop methods that share a name with a sample or overlap one (BLEU-4 > 0.5).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Pull standalone static methods out of Java sources (for transcripts: --calibration translate:FILE)."""
    from nose.tasks.java_python.corpus import write_methods
    from nose.tasks.java_python.harvest import harvest as run_harvest
    from nose.files import check_output_dir

    err, log = stderr_console()
    check_output_dir(out.parent)
    with progress_bar(err) as progress:
        task = progress.add_task("files", total=None)
        methods, stats = run_harvest(source, min_lines, max_lines, limit,
                                     progress=lambda s: progress.update(task, completed=s.files))
    excluded = 0
    if exclude_benchmark is not None:
        from nose.tasks.java_python.overlap import find_overlaps
        from nose.tasks.java_python.benchmark import load_benchmark

        bad = {o.method for o in find_overlaps(methods, load_benchmark(exclude_benchmark))}
        excluded = len(bad)
        methods = [m for m in methods if m.name not in bad]
    write_methods(methods, out)
    summary = {"out": str(out), "files": stats.files, "static_methods": stats.static_methods, "kept": len(methods),
               "excluded_for_overlap": excluded, "skipped": dict(stats.skipped)}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"kept {len(methods)} of {stats.static_methods} static methods in {stats.files} files "
                   f"(skipped: {dict(stats.skipped.most_common())}; {excluded} overlapped the benchmark); wrote {out}")


@app.command()
@user_errors
def transcripts(
    model: ModelOpt = "qwen2.5-coder-0.5b",
    source: Annotated[str, typer.Option(help="translate (Java methods, the java-python prompt) or complete "
                                             "(docstring-to-function problems, the humaneval prompt).")] = "translate",
    inputs: Annotated[Path | None, typer.Option("--inputs", "--java", help=(
        "The inputs to answer: a JSONL of Java methods for translate, of problems in HumanEval's format for "
        "complete (default: the corpus shipped with nose)."))] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit in tokens.")] = 384,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer the shipped inputs with the intact model (cached, resumable) and write the chat JSONL splits."""
    from nose.tasks.java_python.corpus import methods_sha256
    from nose.data.transcripts import SOURCES, TranscriptSettings, generate_transcripts
    from nose.errors import NoseError
    from nose.model.loading import load_model

    err, log = stderr_console()
    if source not in SOURCES:
        raise NoseError(f"unknown --source {source!r}; choose {' or '.join(SOURCES)}")
    methods = SOURCES[source].load(inputs)
    quiet_transformers()
    lm = load_model(model, dtype=dtype, device=device, device_map=device_map, log=log)
    with progress_bar(err) as progress:
        result = generate_transcripts(lm, methods, TranscriptSettings(max_new_tokens, batch_size), progress=progress,
                                      log=log, source=SOURCES[source])
    paths = {split: str(result.write_split(split, methods_sha256(methods))) for split in ("train", "heldout")}
    meta = json.loads((result.folder / "transcripts.json").read_text())
    summary = {**result.summary(), "files": paths, "cache": str(result.folder),
               "answer_tokens_per_second": meta["answer_tokens_per_second"]}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"{summary['methods']} {source} transcripts ({summary['dropped']} dropped: Python does not parse), "
                   f"{summary['train']} train / {summary['heldout']} held out; "
                   f"{meta['answer_tokens_per_second']} answer tokens/s\n"
                   f"train: {paths['train']}\nheld out: {paths['heldout']}")
