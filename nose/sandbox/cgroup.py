"""Per-sample caps on the sum of a sandboxed program's processes and memory, through a cgroup.

Resource limits (``setrlimit``) are per process (address space, file size) or per user
(processes): a program that forks three times gets three address spaces, and a fork bomb in one
sandbox used up the process count of every sandbox running as the same user. A cgroup counts
everything one sample starts together: ``pids.max`` caps its processes and threads, the memory
limit their summed memory, and since tmpfs pages are charged to the cgroup of the process that
writes them, the program's writable folder (a tmpfs) counts against the same cap.

cgroup v2 is used where the toolkit's own cgroup delegates the ``memory`` and ``pids``
controllers to children, else the v1 hierarchies mounted at ``/sys/fs/cgroup/{pids,memory}``
when they are writable (root in a VM or a privileged container). Where neither can be had
(an ordinary user, most containers), :func:`create` returns None and the per-process limits
alone hold; the sandbox records which (``Isolation.describe``).

Groups are named ``nose-<pid>-<n>`` under the toolkit's own cgroup; ones whose toolkit process
died (a killed evaluation) are emptied and removed by the next process that makes a group.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from nose.files import process_alive

MOUNT = Path("/sys/fs/cgroup")
_serial = itertools.count()


@dataclass(frozen=True)
class SampleGroup:
    """One sample's cgroup: a folder per hierarchy (one for v2, ``pids`` and ``memory`` for v1)."""

    folders: tuple[Path, ...]

    def enter(self) -> None:
        """Move the calling process into the group. Runs in the child between fork and exec, so
        it uses bare system calls only (no Python-level locks another thread could hold)."""
        pid = str(os.getpid()).encode()
        for folder in self.folders:
            fd = os.open(folder / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def remove(self, wait_s: float = 2.0) -> None:
        """Kill whatever is left in the group, then remove it (retried while the kernel reaps)."""
        for folder in self.folders:
            _empty_and_remove(folder, wait_s)


def _empty_and_remove(folder: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        except OSError:
            return  # already gone
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            folder.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # left for the stale-group cleanup of a later process
            time.sleep(0.005)


def _own_paths() -> dict[str, str]:
    """Controller name (``""`` for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") if parts[1] else [""]:
                paths[name] = parts[2]
    return paths


def _v2_parent(own: dict[str, str]) -> tuple[Path, ...] | None:
    for mount in (MOUNT, MOUNT / "unified"):
        if "" not in own or not (mount / "cgroup.controllers").exists():
            continue
        parent = mount / own[""].lstrip("/")
        try:
            delegated = set((parent / "cgroup.subtree_control").read_text().split())
        except OSError:
            continue
        if {"memory", "pids"} <= delegated and os.access(parent, os.W_OK):
            return (parent,)
    return None


def _v1_parents(own: dict[str, str]) -> tuple[Path, ...] | None:
    parents = []
    for name in ("pids", "memory"):
        parent = MOUNT / name / own.get(name, "/").lstrip("/")
        if not (parent / "cgroup.procs").exists() or not os.access(parent, os.W_OK):
            return None
        parents.append(parent)
    return tuple(parents)


@functools.lru_cache(maxsize=None)
def parents() -> tuple[Path, ...] | None:
    """The folders sample groups are made in, or None where no cgroup can be made. Cached; the
    first call also removes the groups of dead toolkit processes."""
    own = _own_paths()
    found = _v2_parent(own) or _v1_parents(own)
    if found is None:
        return None
    for parent in found:
        _remove_stale(parent)
    probe = SampleGroup(tuple(p / f"nose-{os.getpid()}-probe" for p in found))
    try:
        for folder in probe.folders:
            folder.mkdir(exist_ok=True)
    except OSError:
        return None
    finally:
        probe.remove()
    return found


def _remove_stale(parent: Path) -> None:
    for folder in parent.glob("nose-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except ValueError:
            continue
        if not process_alive(pid):
            _empty_and_remove(folder, wait_s=0.5)


def create(processes: int, memory_bytes: int) -> SampleGroup | None:
    """A new group capped at ``processes`` tasks and ``memory_bytes`` (no swap), or None where
    cgroups cannot be had here (see the module docstring)."""
    found = parents()
    if found is None:
        return None
    name = f"nose-{os.getpid()}-{next(_serial)}"
    group = SampleGroup(tuple(p / name for p in found))
    try:
        for folder in group.folders:
            folder.mkdir()
        for folder in group.folders:
            _write_limits(folder, processes, memory_bytes)
    except OSError:
        group.remove()
        raise
    return group


def _write_limits(folder: Path, processes: int, memory_bytes: int) -> None:
    settings = [("pids.max", processes),  # v1 pids and v2
                ("memory.max", memory_bytes), ("memory.swap.max", 0),  # v2
                ("memory.limit_in_bytes", memory_bytes), ("memory.memsw.limit_in_bytes", memory_bytes)]  # v1
    for name, value in settings:
        if (folder / name).exists():
            (folder / name).write_text(str(value))
