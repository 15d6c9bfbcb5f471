"""Behaviour the architecture work must not change: a search, two exports (skip and linear) and an
evaluation of a tiny random model give the same order and scores, byte-identical tensors and the
same generations and verdicts as the revision recorded in ``tests/data/unchanged.json``.

The golden file was written by this module run as a script against that revision
(``python tests/test_unchanged.py --write`` with the revision's ``nose`` first on ``PYTHONPATH``);
it drives the CLI in subprocesses, so the same code measures any revision.

Tensors are compared byte for byte, except the fitted linear maps: their float64 ridge solve is
rounded to float32, and a last-bit difference in the CPU's BLAS (another machine, the same revision)
flips some of those roundings. They are held to a fingerprint (norm and eight fixed random
projections) within 1e-5 of the norm instead, far below what a change of data, layer, order or
ridge strength moves.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "unchanged.json"
REPLACE = {"skip": ["--replace", "skip"], "linear": ["--replace", "linear"]}


def nose(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nose", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "NOSE_CACHE": os.environ.get("NOSE_CACHE", tempfile.gettempdir())})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


FITTED = "linear_attn.weight"


def tensors_sha256(folder: Path) -> dict:
    """Each tensor's sha256 (16 hex digits), or for a fitted map its fingerprint (module docstring)."""
    import torch
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        for name, t in sorted(load_file(f).items()):
            if name.endswith(FITTED):
                w = t.double().flatten()
                r = torch.randn(8, w.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                out[name] = {"norm": float(w.norm()), "projections": (r @ w).tolist()}
            else:
                out[name] = hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]
    return out


def same_tensors(now: dict, golden: dict) -> bool:
    if now.keys() != golden.keys():
        return False
    for name, g in golden.items():
        if isinstance(g, str):
            if now[name] != g:
                return False
        else:
            tol = 1e-5 * g["norm"]
            values = [now[name]["norm"], *now[name]["projections"]]
            if any(abs(a - b) > tol for a, b in zip(values, [g["norm"], *g["projections"]])):
                return False
    return True


def measure(work: Path, replace: dict[str, list[str]]) -> dict:
    from nose.testing import save_tiny, write_tiny_benchmark

    model = save_tiny(work / "tiny", "llama", intermediate_size=256)
    bench = write_tiny_benchmark(work / "bench")
    # the search's settings spelled out: the revision's defaults (nose, skip, stdlib) are no longer nose's
    search = json.loads(nose("search", "--model", model, "--out", work / "s", "--steps", 3, "--samples", 4,
                             "--seq-len", 32, "--criterion", "nose", "--replace", "skip", "--calibration", "stdlib",
                             "--json"))
    result = {"search": {"order": search["order"], "scores": [round(s["score"], 6) for s in search["steps"]]}}
    for kind, args in replace.items():
        out = work / f"export-{kind}"
        nose("shrink", "--model", model, "--layers", "2,3", *args, "--steps", 0, "--data", "stdlib",
             "--fit-samples", 8, "--fit-seq-len", 32, "--out", out)
        result[f"export_{kind}"] = tensors_sha256(out)
    nose("evaluate", "--model", model, "--benchmark", bench, "--max-new-tokens", 24, "--no-efficiency",
         "--drop-attention", "2", "--out", work / "e")
    records = [json.loads(line) for line in (work / "e" / "samples.jsonl").read_text().splitlines()]
    result["evaluate"] = {r["id"]: {"verdicts": r["verdicts"],
                                    "outputs_sha256": hashlib.sha256(json.dumps(r["outputs"]).encode()).hexdigest()[:16]}
                          for r in sorted(records, key=lambda r: r["id"])}
    return result


def test_search_exports_and_evaluation_are_unchanged(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    now = measure(tmp_path, REPLACE)
    assert now["search"]["order"] == golden["result"]["search"]["order"]
    assert now["search"]["scores"] == golden["result"]["search"]["scores"]
    for kind in REPLACE:
        assert same_tensors(now[f"export_{kind}"], golden["result"][f"export_{kind}"]), (
            kind, now[f"export_{kind}"], golden["result"][f"export_{kind}"])
    assert now["evaluate"] == golden["result"]["evaluate"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    # the revision's own spelling of the two replacements (before the --replace vocabulary: none + --mode skip)
    old = {"skip": ["--replace", "none", "--mode", "skip"], "linear": ["--replace", "linear"]}
    with tempfile.TemporaryDirectory() as work:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(os.environ.get("PYTHONPATH", ".").split(":")[0])).stdout.strip()
        GOLDEN.write_text(json.dumps({"revision": revision, "args": old, "result": measure(Path(work), old)},
                                     indent=1) + "\n")
