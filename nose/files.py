"""Writing result files safely: atomic JSON and output folders checked before any work."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from nose.errors import NoseError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_permissions(path: Path) -> None:
    """Give a file (0666) or folder tree (0777 for folders) the user's umask, as open() would;
    temp files and folders start private (0600/0700)."""
    mask = _umask()
    path = Path(path)
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for child in path.iterdir():
            publish_permissions(child)
    else:
        os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", sync: bool = False):
    """Open a temp file beside ``path`` for writing and rename it over ``path`` when the block
    ends without an error (the temp file is removed otherwise), so readers and a later run never
    see half a file. ``sync``: flush it to the disk before the rename (an append log's rewrite)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        publish_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that readers never see half a file (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        json.dump(data, f, indent=2)
        f.write("\n")


NUMBER = (int, float)


def check_shape(value, shape, where: str) -> None:
    """Check decoded JSON against a shape, raising a one-line NoseError at the first mismatch.

    A shape is a type or tuple of types (``bool`` never passes for ``int``), ``[shape]`` for a
    list of such items, or ``{key: shape}`` for an object that has those keys (a key ending in
    ``?`` may be missing); ``where`` names the value in the message (``search.json: order[2]``).
    """
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise NoseError(f"{where} should be an object, not {_json_kind(value)}")
        for key, inner in shape.items():
            name, optional = key.rstrip("?"), key.endswith("?")
            if name not in value:
                if optional:
                    continue
                raise NoseError(f"{where} has no {name!r}")
            check_shape(value[name], inner, f"{where}.{name}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise NoseError(f"{where} should be a list, not {_json_kind(value)}")
        for k, item in enumerate(value):
            check_shape(item, shape[0], f"{where}[{k}]")
    else:
        types = shape if isinstance(shape, tuple) else (shape,)
        if not isinstance(value, types) or (type(value) is bool and int in types and bool not in types):
            wanted = " or ".join(_KINDS.get(t, t.__name__) for t in types)
            raise NoseError(f"{where} should be {wanted}, not {_json_kind(value)} {json.dumps(value)[:40]}")


_KINDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "an object",
          list: "a list", type(None): "null"}  # bool first: it is an int too


def _json_kind(value) -> str:
    return next((word for t, word in _KINDS.items() if isinstance(value, t)), type(value).__name__)


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a file the user named, or a one-line NoseError (missing, a folder,
    unreadable, not UTF-8). ``what`` says what the file should be, for the message."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise NoseError(f"{path} does not exist; expected {what}") from None
    except IsADirectoryError:
        raise NoseError(f"{path} is a folder, not {what}") from None
    except OSError as e:
        raise NoseError(f"cannot read {path} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise NoseError(f"{path} is not UTF-8 text (byte {e.start}); expected {what}") from None


def read_json(path: Path, what: str):
    """Decoded JSON of a file the user named, or a one-line NoseError (as :func:`read_text`, or
    not JSON)."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise NoseError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); expected {what}") from None


def jsonl_records(path: Path, what: str):
    """(line number, object) for each non-blank line of a JSONL file the user named, with a
    one-line NoseError for a line that is not UTF-8, not JSON or not an object."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise NoseError(f"{path}:{lineno} is not UTF-8 text (byte {e.start}); expected {what}") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise NoseError(f"{path}:{lineno} is not valid JSON ({e.msg}); expected {what}") from None
            if not isinstance(record, dict):
                raise NoseError(f"{path}:{lineno} is JSON {_json_kind(record)}, not an object; expected {what}")
            yield lineno, record


def read_json_file(path: Path, default_name: str, fmt: str, what: str, shape: dict | None = None) -> dict:
    """Read a result file (or ``default_name`` inside a folder), check its ``format`` and that it
    has ``shape`` (see :func:`check_shape`)."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.exists():
        raise NoseError(f"no {default_name} at {path}; pass a folder written by {what}")
    data = read_json(path, f"a {default_name} written by {what}")
    if not isinstance(data, dict):
        raise NoseError(f"{path} is not a {what} file (JSON {_json_kind(data)}, expected an object with "
                        f"format {fmt})")
    if data.get("format") != fmt:
        raise NoseError(f"{path} is not a {what} file (format {data.get('format')!r}, expected {fmt})")
    check_shape(data, shape or {}, path.name if path.name == default_name else str(path))
    return data


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (whoever owns it); for cleaning up after killed runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> None:
    """Temporaries beside ``out`` (``.NAME.tmp-PID…`` or ``.NAME.old-PID…``, files or folders)
    left by writes whose process was killed."""
    out = Path(out)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, pid = stale.name[len(out.name) + 2:].split("-")[:2]
        if kind in ("tmp", "old") and pid.isdigit() and not process_alive(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def check_output_dir(path: Path) -> None:
    """Fail early, creating nothing, if ``path`` cannot become a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoseError(f"output folder {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    real = os.path.realpath(probe)
    for top in PSEUDO_FILESYSTEMS:
        if real == top or real.startswith(top + "/"):
            raise NoseError(f"output folder {path} lies in {top}, a kernel pseudo-filesystem, not storage; "
                            "choose another --out")
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise NoseError(f"output folder {path} is not writable ({probe} does not allow writing); choose another --out")
