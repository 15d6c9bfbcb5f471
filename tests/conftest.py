"""Shared fixtures: tiny random models of each supported family, built from a config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def benchmark_script():
    """Imports a script of benchmarks/ from its file (benchmarks are scripts, not a package)."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(params=["llama", "mistral", "qwen2", "qwen3"])
def family(request):
    return request.param


@pytest.fixture
def saved_tiny(tmp_path):
    """A tiny random model and tokenizer saved as a local folder; returns its path."""

    def make(family: str = "llama", **overrides) -> Path:
        from nose.testing import save_tiny

        return save_tiny(tmp_path / f"tiny-{family}", family, **overrides)

    return make


@pytest.fixture(scope="session")
def tok():
    """The tiny test tokenizer (read-only; shared by every test)."""
    from nose.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def calib(tok):
    """Six packed 48-token rows of standard-library text (read-only)."""
    from nose.data.calibration import build_calibration

    return build_calibration(tok, "stdlib", samples=6, seq_len=48)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


GTRANSEVAL_HOW = ("needs the real G-TransEval: set NOSE_GTRANSEVAL to a clone of PolyEval/G-TransEval, or to a "
                  "folder holding one under original/ (the project's shared copy: ../shared/data/g-transeval)")


@pytest.fixture(scope="session")
def gtranseval() -> Path:
    """The real benchmark clone (upstream layout), from $NOSE_GTRANSEVAL; the test skips without it."""
    import os

    value = os.environ.get("NOSE_GTRANSEVAL")
    if not value:
        if os.environ.get("NOSE_REQUIRE_GTRANSEVAL") == "1":  # CI: these tests must run, not skip
            pytest.fail(f"NOSE_REQUIRE_GTRANSEVAL=1 but NOSE_GTRANSEVAL is not set; {GTRANSEVAL_HOW}")
        pytest.skip(GTRANSEVAL_HOW)
    folder = Path(value).expanduser()
    for root in (folder, folder / "original"):
        if (root / "G-TransEval" / "Type1" / "Java.test").exists():
            return root
    pytest.fail(f"NOSE_GTRANSEVAL={value} holds no G-TransEval clone; {GTRANSEVAL_HOW}")


@pytest.fixture(scope="session")
def gtranseval_records(gtranseval) -> dict:
    """The shared copy's per-sample records (``java_python.jsonl`` beside the clone), by id."""
    import json
    import os

    for path in (gtranseval / "java_python.jsonl", gtranseval.parent / "java_python.jsonl"):
        if path.exists():
            return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
    message = f"no java_python.jsonl beside {gtranseval}; {GTRANSEVAL_HOW}"
    if os.environ.get("NOSE_REQUIRE_GTRANSEVAL") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory) -> Path:
    """Eight samples of our own in G-TransEval's upstream layout (see nose.testing)."""
    from nose.testing import write_tiny_benchmark

    return write_tiny_benchmark(tmp_path_factory.mktemp("tiny-benchmark"))
