"""Writing result files safely: atomic JSON and output folders checked before any work."""

from __future__ import annotations

import json
import os
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


def write_json_atomic(path: Path, data: dict) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        publish_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_file(path: Path, default_name: str, fmt: str, what: str) -> dict:
    """Read a result file (or ``default_name`` inside a folder) and check its ``format``."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.exists():
        raise NoseError(f"no {default_name} at {path}; pass a folder written by {what}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NoseError(f"{path} is not valid JSON ({e.msg})") from None
    if data.get("format") != fmt:
        raise NoseError(f"{path} is not a {what} file (format {data.get('format')!r}, expected {fmt})")
    return data


def check_output_dir(path: Path) -> None:
    """Fail early, creating nothing, if ``path`` cannot become a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoseError(f"output folder {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise NoseError(f"output folder {path} is not writable ({probe} does not allow writing); choose another --out")
