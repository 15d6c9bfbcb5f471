"""Option types shared by commands, and the one-line error handling."""

from __future__ import annotations

import functools
import os
from enum import Enum
from typing import Annotated

import typer

from nose.errors import NoseError


REPLACE_KINDS = {  # mirrors nose.replace.KINDS (a test checks), written out so --help needs no torch
    "skip": "nothing (the block exports as a no-op)",
    "double": "x again",
    "thesis": "2·LN1(x), the thesis code's",
    "linear": "W·LN1(x), W fitted in closed form",
    "folded": "W·a, a the previous MLP's hidden activation, W fitted in closed form and folded into that MLP's "
              "down-projection on export (a no-op block every DeciLM engine serves)",
}


def replace_help(default: str) -> str:
    """The ``--replace`` help every command shows: the replacements, then the command's default."""
    kinds = "; ".join(f"{name}: {what}" for name, what in REPLACE_KINDS.items())
    return f"What is added to the residual where an attention is removed. {kinds}. Default: {default}."


DeprecatedModeOpt = Annotated[str | None, typer.Option(
    "--mode", hidden=True, help="Deprecated alias of --replace (one release); warns.")]


def resolve_replace(replace: str | None, mode: str | None, default: str, log) -> str:
    """``--replace``, with ``--mode`` and ``--replace none`` kept one release as aliases that warn;
    checked against the registry (a one-line error for an unknown name)."""
    from nose.replace import get

    if replace == "none":  # the old pair: --replace none --mode X meant X
        log(f"warning: --replace none is deprecated; use --replace {mode or 'skip'}")
        replace, mode = mode or "skip", None
    if mode is not None:
        if replace is not None and replace != mode:
            raise NoseError(f"--mode {mode} and --replace {replace} disagree; pass --replace alone")
        log(f"warning: --mode is deprecated; use --replace {mode}")
        replace = mode
    return get(replace or default).name


class Criterion(str, Enum):
    """Mirrors nose.search.criteria.CRITERIA (a test checks), written out so --help needs no torch."""

    nose = "nose"
    nose_abs = "nose-abs"
    kl = "kl"
    cosine = "cosine"
    loss = "loss"
    last = "last"
    random = "random"


ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Preset name (smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), "
    "local folder, .gguf file or Hugging Face hub id.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")]
DeviceMapOpt = Annotated[str | None, typer.Option(
    "--device-map", help="Pass 'auto' to spread a model larger than one GPU with accelerate.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout (for scripts).")]


def parse_layers(text: str | None) -> list[int]:
    """'3,5, 7' -> [3, 5, 7]; a clear error for anything that is not a comma list of integers."""
    if not text:
        return []
    parts = [part.strip() for part in text.strip().rstrip(",").split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):  # no empty items, signs or other scripts' digits
        raise NoseError(f"layer list {text!r} is not a comma-separated list of layer numbers (e.g. 3,5,7)")
    return [int(p) for p in parts]


def stderr_console():
    """(console on stderr, a ``log(msg)`` that prints one plain line there)."""
    from rich.console import Console

    err = Console(stderr=True)
    return err, (lambda msg: err.print(msg, highlight=False))


def progress_bar(console, every_s: float = 60.0):
    """The progress display every long command uses (on stderr, gone when done). Where stderr is
    not a terminal (a background run's log) no bar is drawn, so each task prints a plain line at
    most every ``every_s`` seconds and when it completes instead."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    if console.is_terminal:
        return Progress(*columns, console=console, transient=True)

    class LoggedProgress(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.printed = {}  # task -> when its last line was printed; None once printed as complete

        def add_task(self, *args, **kwargs):
            task_id = super().add_task(*args, **kwargs)
            self.printed[task_id] = self.get_time()
            return task_id

        def update(self, task_id, **kwargs):
            super().update(task_id, **kwargs)
            self._print(task_id)

        def advance(self, task_id, advance=1):
            super().advance(task_id, advance)
            self._print(task_id)

        def _print(self, task_id):
            task, now = self._tasks[task_id], self.get_time()
            last = self.printed.get(task_id)
            if last is None or (now - last < every_s and not task.finished):
                return  # already printed as complete, or printed less than every_s ago
            self.printed[task_id] = None if task.finished else now
            total = f"/{task.total:.0f}" if task.total is not None else ""
            console.print(f"{task.description}: {task.completed:.0f}{total} ({task.elapsed or 0:.0f} s)",
                          highlight=False)

    return LoggedProgress(*columns, console=console, disable=True)  # no live display: the lines are the display


def quiet_transformers() -> None:
    """Hide transformers' own loading bars and advice; the command reports its progress itself."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def user_errors(fn):
    """Print a NoseError as one line on stderr and exit 2 (traceback only with NOSE_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NoseError as e:
            if os.environ.get("NOSE_DEBUG"):
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper
