import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from nose.errors import NoseError
from nose.model.loading import load_model


def test_local_folder_loads_fp32_eval_with_provenance(saved_tiny):
    path = saved_tiny("qwen2")
    lm = load_model(str(path))
    assert lm.dtype == torch.float32 and lm.device.type == "cpu"
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    prov = lm.provenance()
    assert prov["kind"] == "folder" and prov["family"] == "qwen2" and prov["num_layers"] == 6
    assert len(prov["weights_sha256"]) == 64
    assert load_model(str(path)).weights_sha256 == prov["weights_sha256"]
    assert load_model(str(path), dtype="bfloat16").dtype == torch.bfloat16


def test_missing_path_and_bad_files(tmp_path):
    with pytest.raises(NoseError, match="model path ./nowhere/model does not exist"):
        load_model("./nowhere/model")
    with pytest.raises(NoseError, match="does not exist"):
        load_model(str(tmp_path / "x.gguf"))
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(NoseError, match="is a file but not a .gguf"):
        load_model(str(notes))
    with pytest.raises(NoseError, match="folder without config.json"):
        load_model(str(tmp_path))


def test_hub_id_offline_says_so_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(NoseError, match=r"hub is not reachable \(offline\).*preset"):
        load_model("m-a-p/OpenCodeInterpreter-DS-6.7B")


def test_unsupported_family_is_refused_before_loading_weights(tmp_path):
    cfg = AutoConfig.for_model("gpt2", n_layer=2, n_embd=32, n_head=2, vocab_size=64)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(NoseError, match="unsupported model family 'gpt2'; supported families: llama"):
        load_model(str(tmp_path / "gpt2"))


def test_unknown_dtype_and_unavailable_cuda(saved_tiny):
    path = str(saved_tiny("llama"))
    with pytest.raises(NoseError, match="unknown dtype 'fp8'"):
        load_model(path, dtype="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(NoseError, match="CUDA is not available"):
            load_model(path, device="cuda")


def test_corrupt_weights_fail_with_one_line(saved_tiny):
    path = saved_tiny("llama")
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(NoseError, match="cannot load model .*: Error while deserializing header"):
        load_model(str(path))


def test_weight_hash_is_read_once_and_again_after_a_change(saved_tiny, tmp_path, monkeypatch):
    import os

    import nose.model.loading as loading

    monkeypatch.setenv("NOSE_CACHE", str(tmp_path / "cache"))
    path = saved_tiny("llama")
    reads = []
    real = loading.hash_files
    monkeypatch.setattr(loading, "hash_files", lambda files: reads.append(len(files)) or real(files))
    first = loading.resolve_model(str(path)).weights_sha256
    again = loading.resolve_model(str(path)).weights_sha256
    assert first == again == real(loading._weight_files(path)) and len(reads) == 1
    weights = path / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # touched: hashed again
    assert loading.resolve_model(str(path)).weights_sha256 == first and len(reads) == 2
