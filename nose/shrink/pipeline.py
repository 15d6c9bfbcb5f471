"""``shrink``: take attention sublayers out of a model, repair what is left, export the result.

One library call does what ``nose shrink`` does (the CLI only parses options and prints):

1. the layers: a list, or the first k of a ``search.json`` made on the same weights;
2. the data (``--data``): healing rows, validation rows (the held-out split for transcripts,
   else the last rows) and, for a fitted replacement, the fit rows; self-distilled transcripts
   are generated here, from the intact model, before anything changes it;
3. the replacements (``replace``, a name of :data:`nose.replace.KINDS`): ``folded`` (the default)
   makes each removed attention ``x + W·a``, a the previous layer's MLP activation, and ``linear``
   ``x + W·LN1(x)``, W fitted in closed form (:mod:`nose.replace.ridge`); ``skip``, ``double``
   and ``thesis`` are parameter-free;
4. healing (:mod:`nose.shrink.healing`), optional: the annealed blend, KD to the intact model;
5. the export (:mod:`nose.shrink.export`) with ``nose.json`` (provenance, fit report, healing
   settings and cost) and, when healed, ``healing.json`` and ``healing_curve.png``, all written
   before the folder is published.

``data="auto"`` means the self-distilled transcripts of both tasks (:data:`nose.data.transcripts.FIT_DATA`)
for a model with a chat template (it can answer the tasks' prompts) and the Python standard
library for others.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nose.errors import NoseError
from nose.model.loading import LoadedModel
from nose.model.replacements import uniform
from nose.model.switches import check_layer_indices
from nose.shrink.budget import Budget
from nose.shrink.healing import HealConfig, HealHistory, heal
from nose.replace import KINDS, get as replacement
from nose.replace.ridge import FitConfig



@dataclass
class ShrinkConfig:
    layers: list[int] = field(default_factory=list)  # attention layers to remove; or take them from `search`
    search: str | None = None  # a search.json (or its folder)
    k: int | None = None  # with `search`: its first k layers; or a budget picks k (nose.shrink.budget)
    budget: Budget = field(default_factory=Budget)
    replace: str = "folded"  # what stands in for each removed attention (nose.replace.KINDS); folded: closer to
    # the intact model than linear on both held-out sets, and an export every DeciLM engine serves (reports/fold.md)
    data: str = "auto"  # healing and fit data: auto | translate[...] | complete[...] | a+b | stdlib | a file or folder
    text_field: str = "text"
    samples: int = 256  # healing rows
    val_samples: int = 16  # validation rows
    seq_len: int | None = None  # tokens per healing row; None: 512 for chat data (a whole transcript), 128 else
    seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)
    heal: HealConfig = field(default_factory=HealConfig)

    def validate(self) -> None:
        if bool(self.layers) == bool(self.search):
            raise NoseError("pass exactly one of --layers and --search")
        self.budget.validate()
        if self.budget.active and not self.search:
            raise NoseError("a budget (--max-drop, --kv-budget) picks k from a search's order; pass --search")
        if self.budget.active and self.k is not None:
            raise NoseError("pass --k or a budget (--max-drop, --kv-budget), not both")
        if self.search and self.k is None and not self.budget.active:
            raise NoseError("--search needs --k (how many of its layers to remove) or a budget (--max-drop, --kv-budget)")
        kind = replacement(self.replace)
        if self.samples < 1 or self.val_samples < 0 or (self.seq_len is not None and self.seq_len < 2):
            raise NoseError("--samples must be at least 1, --val-samples 0 or more and --seq-len at least 2 "
                            f"(got {self.samples}, {self.val_samples}, {self.seq_len})")
        if self.fit.seq_len < 2:
            raise NoseError(f"--fit-seq-len must be at least 2, got {self.fit.seq_len}")
        self.heal.validate()
        if kind.fitted:
            self.fit.validate()


def layers_from_search(path: str | Path, k: int | None, weights_sha256: str) -> tuple[list[int], dict]:
    """The first ``k`` layers of a search's order (all of them for ``k=None``: a budget picks k)."""
    from nose.search.record import read_record

    record = read_record(Path(path))
    if record["model"]["weights_sha256"] != weights_sha256:
        raise NoseError(f"the search file is for model {record['model']['id']} (weights "
                        f"{record['model']['weights_sha256'][:12]}), not this one; run nose search on this model")
    order = record["order"]
    if k is not None and not 1 <= k <= len(order):
        raise NoseError(f"--k {k} is out of range: the search selected {len(order)} layers {order}")
    return order[:k], {"search": str(path), "search_order": order, "search_criterion":
                       record["settings"]["criterion"], "search_replace": record["settings"]["mode"], "k": k}


def unrepaired_warning(provenance: dict, replace: str) -> str | None:
    """A warning when a search scored its order under a fitted replacement and the cut puts nothing
    in its place: such an order removes layers only the repair makes removable (reports/tasks.md:
    the README's k = 8 set keeps 7 % of intact switched off, 92 % repaired)."""
    searched = provenance.get("search_replace")  # older records may name a retired mode: no warning
    if searched not in KINDS or not KINDS[searched].fitted or replacement(replace).fitted:
        return None
    return (f"warning: the search scored its order under --replace {searched}; with --replace {replace} nothing "
            f"stands in for the removed attention and the model may break: use --replace {searched} or folded")


def choose_layers(config: ShrinkConfig, weights_sha256: str, num_layers: int) -> tuple[list[int], dict]:
    """The layers to remove and where they came from; checked before any weights load."""
    config.validate()
    if config.search:
        layers, provenance = layers_from_search(config.search, config.k, weights_sha256)
    else:
        layers, provenance = list(config.layers), {}
    return check_layer_indices(layers, num_layers, what="--layers"), provenance


@dataclass
class ShrinkData:
    source: str  # what the rows were built from (a transcripts file for translate)
    train: object = None  # TrainingRows
    val: object = None
    fit: object = None  # CalibrationSet


PACKED_FIT_ROWS = 64  # the fit's rows of packed (non-chat) text when --fit-samples is not given


def fit_rows(lm: LoadedModel, source: str, config: FitConfig, seed: int = 0, text_field: str = "text",
             log=print):
    """The rows a linear fit reads: every real token counts (the replacement serves prompt and answer);
    by default every conversation of chat data, else 64 packed rows."""
    from nose.data.chat import count_records, is_chat_file
    from nose.data.calibration import build_calibration

    samples = config.samples or (count_records(Path(source)) if is_chat_file(Path(source)) else PACKED_FIT_ROWS)
    return build_calibration(lm.tokenizer, source, samples=samples, seq_len=config.seq_len, seed=seed,
                             text_field=text_field, count="all", log=log)


def fitter(lm: LoadedModel, replace: str, spec: str, config: FitConfig = FitConfig(), progress=None, log=print):
    """For a fitted replacement, a function ``layers -> {layer: Replacement}`` fitting on ``spec``
    data (``auto`` as in shrink), for in-memory use by ``evaluate`` and ``sweep`` (the rows are
    built once); None for a parameter-free one."""
    from nose.data.transcripts import FIT_DATA, data_source, resolve_source

    kind = replacement(replace)
    if not kind.fitted:
        return None
    config.validate()
    source = resolve_source(data_source(spec, lm.tokenizer, FIT_DATA), lm, progress=progress, log=log)
    rows = fit_rows(lm, source, config, log=log)
    return lambda layers: kind.fit(lm, layers, rows, config, progress)[0]


def build_data(lm: LoadedModel, config: ShrinkConfig, progress=None, log=print) -> ShrinkData:
    """Healing, validation and fit rows (what the configuration needs of them)."""
    from nose.data.transcripts import FIT_DATA, data_source, heldout_of, is_transcript_source, resolve_source
    from nose.shrink.data import build_training_rows

    spec = data_source(config.data, lm.tokenizer, FIT_DATA)
    source = resolve_source(spec, lm, progress=progress, log=log)
    data = ShrinkData(source)
    if config.heal.steps > 0:
        from nose.data.chat import is_chat_file

        seq_len = config.seq_len or (512 if is_chat_file(Path(source)) else 128)

        def rows(path: str, n: int):
            return build_training_rows(lm.tokenizer, path, samples=n, seq_len=seq_len, seed=config.seed,
                                       text_field=config.text_field, log=log)

        if is_transcript_source(spec):  # validate on the held-out transcripts
            data.train = rows(source, config.samples)
            data.val = rows(resolve_source(heldout_of(spec), lm, log=log), config.val_samples)
        else:
            both = rows(source, config.samples + config.val_samples)
            if len(both) < 2:
                raise NoseError(f"healing data {source} gives {len(both)} row(s); need a training and a "
                                "validation row")
            data.train, data.val = both.split(max(1, min(config.val_samples, len(both) // 5)))
    if replacement(config.replace).fitted:
        data.fit = fit_rows(lm, source, config.fit, config.seed, config.text_field, log)
    return data


def shrink(lm: LoadedModel, config: ShrinkConfig, out: Path, overwrite: bool = False, resume: bool = False,
           save_every: int = 25, progress=None, log=print) -> dict | None:
    """Remove, repair and export; returns the summary (None on a non-main data-parallel process)."""
    from accelerate import PartialState

    from nose.shrink.export import check_exportable, check_target, export_checkpoint

    out = Path(out)
    check_target(out, overwrite, source=lm.source.get("path"))
    removed, provenance = choose_layers(config, lm.weights_sha256, lm.num_layers)
    if warning := unrepaired_warning(provenance, config.replace):
        log(warning)
    check_exportable(lm, dict.fromkeys(removed))
    state = out.parent / f".{out.name}.healing-state.pt"
    if resume and not state.exists():  # before the data and the fit, not after them
        raise NoseError(f"--resume: no healing state at {state}; run without --resume")
    data = build_data(lm, config, progress, log)
    kind = replacement(config.replace)
    fits: dict[tuple[int, ...], tuple] = {}  # (replacements, report, wall s, CPU s) by removed layers

    def repaired(layers: list[int]) -> tuple:
        """The replacements for ``layers`` and the fit report (None for a parameter-free kind), fitted once
        (a budget scores several cuts)."""
        if not kind.fitted:
            return uniform(layers, config.replace), None, 0.0, 0.0
        if tuple(layers) not in fits:
            t0, c0 = time.perf_counter(), time.process_time()
            fitted, report = kind.fit(lm, layers, data.fit, config.fit, progress)
            fits[tuple(layers)] = fitted, report, time.perf_counter() - t0, time.process_time() - c0
        return fits[tuple(layers)]

    cost = {"fit_seconds": 0.0, "fit_cpu_seconds": 0.0, "fit_tokens": 0}
    if config.budget.active:
        t0 = time.perf_counter()
        removed, provenance["budget"] = _budget_cut(lm, config, provenance["search_order"], repaired, out, progress,
                                                    log)
        provenance["k"] = len(removed)
        cost["budget_seconds"] = round(time.perf_counter() - t0, 1)
    log(f"attention layers: {lm.num_layers - len(lm.absent_attention())} -> "
        f"{lm.num_layers - len(lm.absent_attention()) - len(removed)} (removing {removed}, "
        f"replacement {config.replace})")
    replacements, fit_report, wall, cpu = repaired(removed)
    if fit_report:
        cost.update(fit_seconds=round(wall, 1), fit_cpu_seconds=round(cpu, 1), fit_tokens=fit_report["tokens"])
        log(f"{kind.name} fit: held-out error (relative) " + ", ".join(
            f"{i}: {v['heldout_relative_error']:.3f}" for i, v in fit_report["layers"].items()))
    c0 = time.process_time()
    history = heal(lm, replacements, data.train, data.val, config.heal, progress,
                   state_path=state if config.heal.steps else None, save_every=save_every, resume=resume)
    cost["heal_seconds"] = round(history.seconds, 1)
    cost["heal_cpu_seconds"] = round(time.process_time() - c0, 1)
    cost["heal_tokens"] = history.tokens * history.processes
    if not PartialState().is_main_process:  # under `accelerate launch`, one process exports
        return None
    settings = {"replace": config.replace, "data": config.data, "data_source": data.source, "fit": asdict(config.fit) if fit_report else None}
    healing = {**asdict(config.heal), "tokens": cost["heal_tokens"], "processes": history.processes,
               "seconds": cost["heal_seconds"], "train_rows": 0 if data.train is None else len(data.train),
               "validation": history.validation,
               "final_train_loss": history.steps[-1]["loss"] if history.steps else None}
    folder = export_checkpoint(lm, replacements, out, provenance={**provenance, **settings, "fit_report": fit_report,
                                                                   "healing": healing, "repair_cost": cost},
                               overwrite=overwrite, extra=_healing_files(history, config, removed, lm.spec))
    state.unlink(missing_ok=True)  # exported: the healing state is no longer needed
    shutil.rmtree(_budget_work(out), ignore_errors=True)  # and the budget's answers
    return {"out": str(folder), "removed_attention": removed, "replacements": config.replace,
            "healing_steps": config.heal.steps, "tokens": history.tokens,
            "seconds": cost["heal_seconds"], "validation": history.validation, "repair_cost": cost}


def _budget_work(out: Path) -> Path:
    return out.parent / f".{out.name}.budget"


def _budget_cut(lm: LoadedModel, config: ShrinkConfig, order: list[int], repaired, out: Path, progress=None,
                log=print) -> tuple[list[int], dict]:
    """The first k layers of ``order`` that the budget allows, and the choice's record."""
    import hashlib

    from nose.shrink.budget import choose_cut, heldout_accuracy

    attention = lm.num_layers - len(lm.absent_attention())
    accuracy = intact = None
    if config.budget.max_drop is not None:
        made = json.dumps([lm.weights_sha256, config.replace, asdict(config.fit), config.data, config.seed])
        key = hashlib.sha256(made.encode()).hexdigest()[:12]
        accuracy, intact = heldout_accuracy(lm, config.budget, lambda layers: repaired(layers)[0], _budget_work(out),
                                            key, progress, log)
    k, record = choose_cut(order, attention, config.budget, accuracy, intact)
    log(f"budget: k = {k} of the order {order} (KV cache kept {record['kv_kept']:.0%}"
        + (f", held-out accuracy kept {record['scores'][str(k)]['kept']:.1%})" if "scores" in record else ")"))
    return order[:k], record


def _healing_files(history: HealHistory, config: ShrinkConfig, removed: list[int], model_id: str):
    """Writes healing.json and healing_curve.png into the checkpoint before it is published."""
    if not history.steps:
        return None

    def write(folder: Path) -> None:
        from nose.shrink.heal_plots import plot_healing

        record = asdict(history) | {"loss_name": config.heal.loss}
        (folder / "healing.json").write_text(json.dumps(record, indent=2))
        plot_healing(record, folder / "healing_curve.png", f"{model_id}: remove {removed}, {config.heal.loss}")

    return write
