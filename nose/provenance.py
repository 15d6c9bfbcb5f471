"""What made a result file: the tool (version and git revision) and the library versions.

Every file nose writes that a later reader should be able to trace (``search.json``,
``results.json``, ``sweep.json``, an export's ``nose.json``) carries these.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from nose import __version__


def tool() -> dict:
    return {"name": "nose-prune", "version": __version__, "git": git_revision()}


def versions() -> dict:
    import numpy
    import torch
    import transformers

    return {"nose-prune": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__}


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


VECTOR_EXTENSIONS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name and widest vector extension, e.g. ``AMD EPYC, AVX-512``: CPU
    timings of the same command differed 3.5× between two of this project's 2-core machines, so
    a CPU timing names its processor."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
            elif key in ("flags", "Features"):
                flags = set(value.split())
                break
    except OSError:
        pass
    widest = next((name for flag, name in VECTOR_EXTENSIONS if flag in flags), None)
    return f"{model}, {widest}" if widest else model


def device_name(device) -> str:
    """A timing's device: the CUDA device's name, or ``cpu (<processor>, N threads)``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu()}, {torch.get_num_threads()} threads)"
