"""Shared fixtures: tiny random models of each supported family, built from a config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests import the oracle from benchmarks/



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
    from nose.search.calibration import build_calibration

    return build_calibration(tok, "stdlib", samples=6, seq_len=48)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
