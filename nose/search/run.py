"""Run a search with any criterion and keep its ``search.json`` current.

Greedy criteria write the file after every step and resume from it; one-shot criteria are
cheap and are recomputed on ``--resume`` (after the same compatibility checks).
"""

from __future__ import annotations

from pathlib import Path

from nose.files import write_json_atomic
from nose.model.adapters import is_noop_attention
from nose.model.loading import LoadedModel
from nose.search.calibration import CalibrationSet
from nose.search.config import CRITERIA, SearchConfig
from nose.search.greedy import greedy_steps
from nose.search.oneshot import oneshot_steps
from nose.search.record import FILENAME, check_resumable, new_record


def run_search(lm: LoadedModel, calib: CalibrationSet, config: SearchConfig, out_dir: Path | None = None,
               resume: dict | None = None, progress=None) -> dict:
    """Run (or continue) a search; returns the search record (see record.py).

    ``out_dir``: when given, ``search.json`` is rewritten there after every step.
    ``resume``: a previous record; a greedy search keeps its steps and continues from them.
    ``progress``: a ``rich.progress.Progress`` to report on, or None for silence.
    """
    layers = lm.adapter.layers_of(lm.model)
    absent = [i for i, layer in enumerate(layers) if is_noop_attention(lm.adapter.attention_of(layer))]
    target = config.validate(lm.num_layers, absent)
    candidates = config.candidates(lm.num_layers, target, absent)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    settings = config.settings()
    record = new_record(lm.provenance(), calib.describe(), settings, CRITERIA[config.criterion])
    greedy = CRITERIA[config.criterion]["kind"] == "greedy"
    if resume is not None:
        check_resumable(resume, record["model"], record["calibration"], settings)
        record["created"] = resume.get("created", record["created"])
        if greedy:
            record["steps"] = [s for s in resume["steps"] if s["step"] <= config.steps]

    def save(complete: bool) -> None:
        record["order"] = [s["selected"] for s in record["steps"]]
        record["complete"] = complete
        if out_dir is not None:
            write_json_atomic(Path(out_dir) / FILENAME, record)

    n_batches = -(-calib.samples // config.batch_size)
    if greedy:
        done = len(record["steps"])
        task = progress.add_task("search", total=config.steps * n_batches,
                                 completed=done * n_batches) if progress else None
        work: dict = {}
        for entry in greedy_steps(lm, calib, config, target, candidates, [s["selected"] for s in record["steps"]],
                                  work, progress, task):
            record["steps"].append(entry)
            save(len(record["steps"]) == config.steps)
        record["work"] = work
    else:
        needs_pass = config.criterion == "cosine"
        task = progress.add_task("cosine scores", total=n_batches) if progress and needs_pass else None
        record["steps"] = oneshot_steps(lm, calib, config, candidates,
                                        (lambda: progress.advance(task)) if task is not None else (lambda: None))
    save(True)
    return record
