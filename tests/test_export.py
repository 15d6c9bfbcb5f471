import json
import warnings

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from nose.errors import NoseError
from nose.model.loading import from_module, load_model
from nose.model.replacements import Double, Folded, Linear, Skip, Thesis
from nose.model.switches import attention_switched
from nose.shrink.export import export_checkpoint, ffn_mult_for, find_multiple, removed_bytes
from nose.testing import tiny_model


def make(family, tok, **kw):
    model = tiny_model(family, vocab_size=len(tok), intermediate_size=256, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)  # non-zero q/k/v biases, so dropping one would show
    return from_module(model, tok)


def tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


@pytest.mark.parametrize("family,tied", [("llama", False), ("llama", True), ("qwen2", False)])
@pytest.mark.parametrize("mode,removed", [("skip", [2, 4]), ("double", [1, 3])])
def test_export_reload_parity_and_cache(family, tied, mode, removed, tok, tmp_path):
    lm = make(family, tok, tie_word_embeddings=tied)
    ids = torch.randint(0, len(tok), (2, 9))
    with torch.no_grad(), attention_switched(lm.model, removed, mode):
        want = lm.model(ids).logits
    folder = export_checkpoint(lm, removed, tmp_path / "out", mode)
    back = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    with torch.no_grad():
        got = back(ids).logits
        cached = back.generate(ids, max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = back.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False, pad_token_id=0)
    if mode == "skip":
        assert torch.equal(got, want)
    else:  # folding is exact up to the final RMSNorm's epsilon
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(cached, uncached)
    via_nose = load_model(str(folder))
    assert via_nose.adapter.family == "nemotron-nas" and via_nose.num_layers == 6


def test_safetensors_hold_exactly_the_expected_tensors(tok, tmp_path):
    lm = make("llama", tok)
    removed = [1, 4]
    folder = export_checkpoint(lm, removed, tmp_path / "out", "skip")
    saved = tensors(folder)
    original = lm.model.state_dict()
    dropped = {k for k in original if any(k.startswith(f"model.layers.{i}.{part}")
                                          for i in removed for part in ("self_attn.", "input_layernorm."))}
    assert set(saved) == set(original) - dropped
    assert all(torch.equal(saved[k], original[k]) for k in saved)
    before = sum(t.numel() * t.element_size() for t in original.values())
    after = sum(t.numel() * t.element_size() for t in saved.values())
    assert before - after == removed_bytes(lm, removed) > 0
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["DeciLMForCausalLM"] and cfg["model_type"] == "nemotron-nas"
    assert cfg["rope_theta"] == 10000.0
    for i, block in enumerate(cfg["block_configs"]):
        att = block["attention"]
        assert set(att) == {"n_heads_in_group", "no_op", "replace_with_linear"}
        assert att["no_op"] == (i in removed) and att["replace_with_linear"] is False
        assert att["n_heads_in_group"] == (None if i in removed else 2)
        ffn = block["ffn"]
        assert find_multiple(int(2 * ffn["ffn_mult"] * 64 / 3), 256) == 256 and ffn["no_op"] is False
    meta = json.loads((folder / "nose.json").read_text())
    assert meta["removed_attention"] == removed and meta["attention_layers"] == "6 -> 4"
    assert (folder / "tokenizer.json").exists() and (folder / "generation_config.json").exists()


def test_tied_embeddings_and_qwen2_biases_are_expressed_exactly(tok, tmp_path):
    tied = export_checkpoint(make("llama", tok, tie_word_embeddings=True), [2], tmp_path / "tied", "skip")
    assert "lm_head.weight" not in tensors(tied)
    assert json.loads((tied / "config.json").read_text())["tie_word_embeddings"] is True
    q = export_checkpoint(make("qwen2", tok), [2], tmp_path / "qwen2", "skip")
    saved = tensors(q)
    assert json.loads((q / "config.json").read_text())["attention_bias"] is True
    assert torch.equal(saved["model.layers.1.self_attn.o_proj.bias"], torch.zeros(64))
    assert "model.layers.2.self_attn.q_proj.bias" not in saved


@pytest.mark.parametrize("intermediate,hidden", [(4864, 896), (1536, 576), (11008, 4096), (8960, 1536)])
def test_ffn_mult_round_trips_real_widths(intermediate, hidden):
    mult = ffn_mult_for(intermediate, hidden)
    assert find_multiple(int(2 * mult * hidden / 3), 256) == intermediate


def random_linear(hidden: int, seed: int) -> Linear:
    g = torch.Generator().manual_seed(seed)
    return Linear(torch.randn(hidden, hidden, generator=g) * 0.2)


@pytest.mark.parametrize("family,tied", [("llama", False), ("qwen2", False), ("llama", True)])
def test_linear_replacements_round_trip(family, tied, tok, tmp_path):
    """Linear, thesis, skip and double layers in one export: the checkpoint computes what the
    switched model computes, with and without a KV cache."""
    lm = make(family, tok, tie_word_embeddings=tied)
    replacements = {1: Double(), 2: random_linear(64, 0), 3: Skip(), 4: Thesis(), 5: random_linear(64, 1)}
    ids = torch.randint(0, len(tok), (2, 9))
    with torch.no_grad(), attention_switched(lm.model, replacements):
        want = lm.model(ids).logits
    folder = export_checkpoint(lm, replacements, tmp_path / "out")
    back = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, want, rtol=1e-4, atol=1e-4)  # double folding: up to eps
        cached = back.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = back.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    cfg = json.loads((folder / "config.json").read_text())
    blocks = [b["attention"] for b in cfg["block_configs"]]
    assert blocks[0] == {"n_heads_in_group": 2, "no_op": False, "replace_with_linear": False}
    for i in (1, 3):
        assert blocks[i] == {"n_heads_in_group": None, "no_op": True, "replace_with_linear": False}
    for i in (2, 4, 5):
        assert blocks[i] == {"n_heads_in_group": None, "no_op": False, "replace_with_linear": True}
    saved = tensors(folder)
    for i in (2, 4, 5):
        assert saved[f"model.layers.{i}.self_attn.linear_attn.weight"].shape == (64, 64)
        assert f"model.layers.{i}.input_layernorm.weight" in saved  # the linear block reads LN1(x)
        assert not any(k.startswith(f"model.layers.{i}.self_attn.") and "linear_attn" not in k for k in saved)
    assert not any(k.startswith(("model.layers.1.input_layernorm", "model.layers.3.input_layernorm")) for k in saved)
    # double at layer 1 halves every later addition to the residual, linear maps included
    torch.testing.assert_close(saved["model.layers.2.self_attn.linear_attn.weight"],
                               replacements[2].linear_attn.weight / 2)
    torch.testing.assert_close(saved["model.layers.4.self_attn.linear_attn.weight"], torch.eye(64))
    meta = json.loads((folder / "nose.json").read_text())
    assert meta["removed_attention"] == [1, 2, 3, 4, 5] and meta["attention_layers"] == "6 -> 1"
    assert meta["replacements"]["2"]["kind"] == "linear" and len(meta["replacements"]["2"]["weight_sha256"]) == 64
    assert cfg["dtype"] == "float32" and "quantization_config" not in cfg


def test_exported_linear_layers_are_not_searched_again_and_are_counted(tok, tmp_path):
    from nose.evaluate.efficiency import kv_cache_bytes_per_token, macs_analytic, parameter_counts

    lm = make("llama", tok)
    replacements = {2: random_linear(64, 0), 4: Skip()}
    with attention_switched(lm.model, replacements):
        in_memory = parameter_counts(lm.model, lm.adapter)
        kv = kv_cache_bytes_per_token(lm.model, lm.adapter)
        macs = macs_analytic(lm.model, lm.adapter, 16)
    folder = export_checkpoint(lm, replacements, tmp_path / "out")
    back = load_model(str(folder))
    assert back.absent_attention() == [2, 4]
    exported = parameter_counts(back.model, back.adapter)
    assert exported == in_memory and in_memory["replacement_parameters"] == 64 * 64
    assert kv_cache_bytes_per_token(back.model, back.adapter) == kv == 4 * 2 * 2 * 16 * 4  # 4 layers keep K/V
    assert macs_analytic(back.model, back.adapter, 16) == macs
    with attention_switched(lm.model, [2, 4]):
        assert macs - macs_analytic(lm.model, lm.adapter, 16) == 64 * 64 * 16  # hidden² per token


def test_refusals(tok, tmp_path):
    lm = make("llama", tok)
    with pytest.raises(NoseError, match="q_norm/k_norm"):
        export_checkpoint(make("qwen3", tok), [2], tmp_path / "b", "skip")
    with pytest.raises(NoseError, match="MLP width 128 cannot be expressed"):
        export_checkpoint(from_module(tiny_model("llama", vocab_size=len(tok)), tok), [2], tmp_path / "c", "skip")
    with pytest.raises(NoseError, match="repeat"):
        export_checkpoint(lm, [2, 2], tmp_path / "d", "skip")
    with pytest.raises(NoseError, match="out of range"):
        export_checkpoint(lm, [9], tmp_path / "e", "skip")
    with attention_switched(lm.model, [1]), pytest.raises(NoseError, match="restore them before exporting"):
        export_checkpoint(lm, [1], tmp_path / "f", "skip")
    with pytest.warns(UserWarning, match="layer 0's attention is removed"):
        export_checkpoint(lm, [0], tmp_path / "g", "skip")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folders left


def test_existing_folder_is_never_half_overwritten(tok, tmp_path, monkeypatch):
    lm = make("llama", tok)
    out = export_checkpoint(lm, [2], tmp_path / "out", "skip")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(NoseError, match="exists"):
        export_checkpoint(lm, [3], out, "skip")

    import nose.shrink.export as export

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_checkpoint(lm, [3], out, "skip", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.undo()
        export_checkpoint(lm, [3], out, "skip", overwrite=True)
    assert json.loads((out / "nose.json").read_text())["removed_attention"] == [3]


def test_exported_layer0_removal_decodes_incrementally(tok, tmp_path):
    """The shipped remote code advances a removed layer 0's cache slot, under whatever name
    transformers passes the cache (past_key_values up to 5.23, cache from 5.24)."""
    lm = make("llama", tok)
    with pytest.warns(UserWarning, match="layer 0's attention is removed"):
        out = export_checkpoint(lm, [0, 2], tmp_path / "out", "skip")
    model = load_model(str(out)).model
    ids = torch.randint(0, len(tok), (1, 7))
    nxt = torch.tensor([[5]])
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
        step = model(nxt, past_key_values=cache).logits[0, -1]
        full = model(torch.cat([ids, nxt], 1)).logits[0, -1]
    assert cache.get_seq_length() == 8
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_folded_replacements_export_as_ordinary_no_op_checkpoints(family, tok, tmp_path):
    """folded: the exported checkpoint has only no_op blocks and ordinary tensors (W joined the
    previous layer's down-projection) and computes what the switched model computes, also
    beside double (whose folding scales the same down-projections) and linear layers."""
    lm = make(family, tok)
    g = torch.Generator().manual_seed(3)
    folded = {k: Folded(0.05 * torch.randn(64, 256, generator=g)) for k in (2, 4)}  # (hidden, intermediate)
    replacements = {1: Double(), **folded, 5: random_linear(64, 1)}
    ids = torch.randint(0, len(tok), (2, 9))
    with torch.no_grad(), attention_switched(lm.model, replacements):
        want = lm.model(ids).logits
        cached_in_memory = lm.model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    folder = export_checkpoint(lm, replacements, tmp_path / "out")
    back = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, want, rtol=1e-4, atol=1e-4)
        cached = back.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(cached, cached_in_memory)  # the hook-fed map decodes with a KV cache as the fold does
    blocks = [b["attention"] for b in json.loads((folder / "config.json").read_text())["block_configs"]]
    for i in (2, 4):
        assert blocks[i] == {"n_heads_in_group": None, "no_op": True, "replace_with_linear": False}
    saved = tensors(folder)
    assert not any(k.startswith(("model.layers.2.self_attn", "model.layers.4.self_attn")) for k in saved)
    original = lm.model.state_dict()["model.layers.3.mlp.down_proj.weight"]  # layer 3 is after double at 1
    torch.testing.assert_close(saved["model.layers.3.mlp.down_proj.weight"],
                               (original + folded[4].linear_attn.weight.detach()) / 2)
    meta = json.loads((folder / "nose.json").read_text())
    assert meta["replacements"]["2"]["kind"] == "folded"


def test_folding_into_layer_0_is_refused(tok):
    lm = make("llama", tok)
    with pytest.raises(NoseError, match="layer 0 has no previous MLP"):
        with attention_switched(lm.model, {0: Folded(torch.zeros(64, 256))}):
            pass
