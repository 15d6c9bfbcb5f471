"""Run a search with any criterion and keep its ``search.json`` current.

Greedy criteria write the file after every step and resume from it; one-shot criteria are
cheap and are recomputed on ``--resume`` (after the same compatibility checks).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nose.files import write_json_atomic
from nose.model.loading import LoadedModel
from nose.data.calibration import CalibrationSet
from nose.search.config import SearchConfig
from nose.search.criteria import CRITERIA
from nose.search.greedy import greedy_steps
from nose.search.oneshot import oneshot_steps
from nose.search.record import FILENAME, check_resumable, new_record


def run_search(lm: LoadedModel, calib: CalibrationSet, config: SearchConfig, out_dir: Path | None = None,
               resume: dict | None = None, progress=None) -> dict:
    """Run (or continue) a search; returns the search record (see record.py).

    ``out_dir``: when given, ``search.json`` is rewritten there after every step.
    ``resume``: a previous record; its steps are kept, all of them (a ``config.steps`` below their
    number selects nothing more), a greedy search continues from them, and its model provenance
    stays; each resume is logged under ``resumed`` with the provenance of the model that did it.
    ``progress``: a ``rich.progress.Progress`` to report on, or None for silence.
    """
    absent = lm.absent_attention()
    target = config.validate(lm.num_layers, absent)
    candidates = config.candidates(lm.num_layers, target, absent)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if resume is not None and len(resume["steps"]) > config.steps:
        config = replace(config, steps=len(resume["steps"]))
    settings = config.settings()
    criterion = CRITERIA[config.criterion]
    record = new_record(lm.provenance(), calib.describe(), settings, criterion.record())
    greedy = criterion.greedy
    if resume is not None:
        check_resumable(resume, record["model"], record["calibration"], settings)
        record["resumed"] = resume.get("resumed", []) + [{"at": record["created"], "model": record["model"]}]
        record["created"] = resume.get("created", record["created"])
        record["model"] = resume["model"]
        if greedy:
            record["steps"] = list(resume["steps"])

    def save(complete: bool) -> None:
        record["order"] = [s["selected"] for s in record["steps"]]
        record["complete"] = complete
        if out_dir is not None:
            write_json_atomic(Path(out_dir) / FILENAME, record)

    n_batches = calib.batch_count(config.batch_size)
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
        task = progress.add_task(f"{config.criterion} scores", total=n_batches) if progress else None
        work = {"layer_forwards": 0, "head_forwards": 0}
        record["steps"] = oneshot_steps(lm, calib, config, candidates, criterion.rank,
                                        (lambda: progress.advance(task)) if task is not None else (lambda: None), work)
        record["work"] = work
    save(True)
    return record
