"""``search.json``: the search's result file, written atomically after every step.

Shape (``format: nose.search/2``): ``tool``, ``created``, ``model`` (id, family, layers,
weights sha256, dtype, device), ``calibration`` (source, samples, seq_len, token-id sha256),
``settings`` (criterion, mode, target, steps, protect, seed, bootstrap, batch_size, screen), ``score``
(the criterion's kind, score name and unit; lower is removed first), ``steps`` (one record
each, see :mod:`nose.search.steps`), ``order`` (selected layers in selection order),
``complete`` and ``versions``. Every criterion writes this shape. A search resumes from it when
model, calibration and settings (all but ``steps``) match.

Version 1 (before the criteria) named the score ``te`` and the state's value ``base_entropy``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from nose.errors import NoseError
from nose.files import read_json_file
from nose.provenance import tool, versions


FORMAT = "nose.search/2"
FILENAME = "search.json"
SHAPE = {"model": {"id": str, "weights_sha256": str, "num_layers": int},
         "settings": {"criterion": str, "mode": str, "protect": [int]},
         "calibration": {"token_ids_sha256": str}, "score": {"name": str, "unit": str},
         "steps": [{"selected": int}], "order": [int]}  # what readers of a search file use
# Settings that must match for a resumed search to give the same result.
RESUME_KEYS = ("criterion", "mode", "target", "protect", "seed", "bootstrap", "batch_size", "screen")
OLD_SETTINGS = {"screen": 0}  # what files written before a setting existed ran with


def new_record(model: dict, calibration: dict, settings: dict, score: dict) -> dict:
    return {"format": FORMAT,
            "tool": tool(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model, "calibration": calibration, "settings": settings,
            "score": score, "steps": [], "order": [], "complete": False, "versions": versions()}


def read_record(path: Path) -> dict:
    """A ``search.json`` (or the one inside a folder)."""
    return read_json_file(path, FILENAME, FORMAT, "nose search", SHAPE)


def check_resumable(previous: dict, model: dict, calibration: dict, settings: dict) -> None:
    """Refuse to resume a search made with another model, calibration or settings."""
    if previous["model"]["weights_sha256"] != model["weights_sha256"]:
        raise NoseError(f"cannot resume: the search file is for model {previous['model']['id']} "
                        f"(weights {previous['model']['weights_sha256'][:12]}), not {model['id']} "
                        f"(weights {model['weights_sha256'][:12]})")
    for key in ("dtype", "device"):
        if previous["model"].get(key) != model.get(key):
            raise NoseError(f"cannot resume: the search file was made with {key} {previous['model'].get(key)}, "
                            f"now {model.get(key)}; pass --{key} {previous['model'].get(key)}")
    if previous["calibration"]["token_ids_sha256"] != calibration["token_ids_sha256"]:
        raise NoseError("cannot resume: the search file was made with other calibration tokens "
                        f"({previous['calibration']['source']}, {previous['calibration']['samples']} x "
                        f"{previous['calibration']['seq_len']}); use the same --calibration, --samples, "
                        "--seq-len and --seed")
    for key in RESUME_KEYS:
        before = previous["settings"].get(key, OLD_SETTINGS.get(key))
        if before != settings.get(key):
            raise NoseError(f"cannot resume: --{key.replace('_', '-')} was {before!r} "
                            f"in the search file, now {settings.get(key)!r}")
