"""Run untrusted generated Python in a separate, limited process (DESIGN.md, "Sandbox").

Each program runs in its own subprocess and temporary folder, as ``python -I -S -B`` (isolated
mode, no site-packages, no bytecode writes) with a minimal environment, in a new session (its
own process group), under resource limits (CPU seconds, address space, file size, open files)
and a wall-clock timeout after which the whole process group is killed. stdout and stderr go to
files in the temporary folder, so the file-size limit also bounds the output. Before the
program runs, a guard installs a ``sys.addaudithook`` hook (which cannot be removed) that
refuses: process creation (fork, exec, spawn, subprocess, os.system), signals to other
processes, sockets, ctypes, and any file write, rename, removal or mode change outside the
temporary folder.

Threat model — this stops: endless loops, memory and disk bombs, fork bombs and child
processes, writes outside the sandbox folder, network use through Python, and reading the
toolkit's environment (secrets are not passed on). It does not stop: reading files that the
user running the toolkit can read, attacks on the kernel or the interpreter itself (a memory
corruption bug), or side channels. It is a guard against careless or runaway model output, not
a security boundary against a determined attacker; run evaluations of untrusted models in a
container or VM for that.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

GUARD = r'''
import os, sys
_root = os.path.realpath(os.getcwd()) + os.sep
_write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_deny = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
         "os.kill", "os.killpg", "pty.spawn", "socket.__new__", "socket.connect", "socket.bind", "socket.sendto",
         "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.setuid", "os.setgid", "os.chroot"}
_path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
                "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

def _inside(path):
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(_root)
    except Exception:
        return False

def _guard(event, args):
    if event == "open":
        path, _, flags = args
        if not isinstance(path, int) and flags and flags & _write and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the sandbox folder is not allowed")
    elif event in _deny:
        raise PermissionError(f"sandbox: {event} is not allowed")
    elif event == "import" and args[0] in ("ctypes", "_ctypes"):
        raise ImportError("sandbox: ctypes is not allowed")
    elif event in _path_events:
        for p in args:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                raise PermissionError(f"sandbox: {event} outside the sandbox folder is not allowed")

sys.addaudithook(_guard)
del _guard
__name__ = "__main__"
exec(compile(open("main.py", encoding="utf-8").read(), "main.py", "exec"), {"__name__": "__main__"})
'''


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # wall clock; the benchmark README uses 10 s (upstream 5 s)
    cpu_s: int = 10  # CPU seconds (RLIMIT_CPU)
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file the program may write, stdout/stderr included (RLIMIT_FSIZE)
    open_files: int = 64  # RLIMIT_NOFILE


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def _limit(limits: Limits):
    def apply():
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _read(path: str, cap: int = 1 << 16) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", errors="replace")


def run_python(code: str, limits: Limits = Limits(), python: str = sys.executable) -> Outcome:
    """Run ``code`` as ``__main__`` in a fresh sandboxed interpreter; never raises for its failures."""
    folder = tempfile.mkdtemp(prefix="nose-sandbox-")
    try:
        with open(os.path.join(folder, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        out_path, err_path = os.path.join(folder, "stdout.txt"), os.path.join(folder, "stderr.txt")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        t0 = time.perf_counter()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([python, "-I", "-S", "-B", "-c", GUARD], cwd=folder, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, preexec_fn=_limit(limits))
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, also on normal exit
                except ProcessLookupError:
                    pass
                proc.wait()
        # the CPU-seconds limit (SIGXCPU) is a timeout as much as the wall clock
        cpu_out = proc.returncode == -signal.SIGXCPU
        return Outcome(None if timed_out or cpu_out else proc.returncode, _read(out_path), _read(err_path),
                       timed_out or cpu_out, time.perf_counter() - t0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_many(programs: list[str], limits: Limits = Limits(), workers: int = 2, on_done=None) -> list[Outcome]:
    """Run programs in parallel (one sandboxed process each); results in input order."""
    if workers < 1:
        from nose.errors import NoseError

        raise NoseError(f"--workers must be at least 1, got {workers}")
    results: list[Outcome | None] = [None] * len(programs)

    def one(k: int) -> None:
        results[k] = run_python(programs[k], limits)
        if on_done:
            on_done(k, results[k])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(programs))))
    return results
