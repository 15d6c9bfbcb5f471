"""``nose gguf``: a GGUF file that stock llama.cpp loads, from an export or any model nose reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import JsonOpt, stderr_console, user_errors

OuttypeOpt = Annotated[str, typer.Option(help="Tensor type: f32, f16, bf16 or q8_0 (llama.cpp's converter "
                                              "writes each directly).")]


@user_errors
def gguf(
    model: Annotated[str, typer.Argument(help="A nose export, a transformers folder or a preset.")],
    out: Annotated[Path, typer.Option(help="The .gguf file to write.")],
    outtype: OuttypeOpt = "f16",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing GGUF file at --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a checkpoint to GGUF with llama.cpp's own converter (removed layers as no-op blocks)."""
    from nose.shrink.gguf import describe, write_gguf

    _, log = stderr_console()
    folder = Path(model)
    if not folder.is_dir():
        from nose.model.loading import resolve_model

        source = resolve_model(model, log=log).source
        if source["kind"] == "gguf":
            from nose.errors import NoseError

            raise NoseError(f"{model} is already a GGUF file; convert a checkpoint folder or a preset")
        folder = Path(source["path"])
    path = write_gguf(folder, out, outtype, overwrite=overwrite, log=log)
    info = describe(path)
    summary = {"out": str(path), "arch": info["arch"], "outtype": outtype, "bytes": path.stat().st_size,
               "attention_free_layers": [i for i, h in enumerate(info["kv_heads"] or []) if h == 0]}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {path} ({info['arch']}, {outtype}, {summary['bytes'] / 1e6:.1f} MB; layers without "
                   f"KV cache: {summary['attention_free_layers']})")
