import pytest

from nose.evaluate.efficiency import (compute_counts, kv_cache_bytes_per_token, macs_analytic, parameter_counts,
                                      speed)
from nose.model.adapters import adapter_for
from nose.model.switches import attention_switched
from nose.testing import TINY, tiny_model


def analytic_params(cfg, attention_layers: int) -> dict:
    """Skipped layers lose their attention and its input norm (an export drops both)."""
    h, inter, heads, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd = h // heads
    attn = h * heads * hd * 2 + h * kv * hd * 2
    if cfg.model_type == "qwen2":
        attn += heads * hd + 2 * kv * hd  # q, k, v biases
    layer_rest = 3 * h * inter + h  # MLP and post-attention norm
    emb = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    return {"attention": attn * attention_layers,
            "total": emb + h + cfg.num_hidden_layers * layer_rest + (attn + h) * attention_layers, "embedding": emb}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_parameter_counts_match_the_formula(family):
    model = tiny_model(family)
    adapter = adapter_for(family)
    counts = parameter_counts(model, adapter)
    want = analytic_params(model.config, TINY["num_hidden_layers"])
    assert counts["parameters"] == want["total"]
    assert counts["attention_parameters"] == want["attention"]
    assert counts["embedding_parameters"] == want["embedding"]
    assert counts["weight_bytes"] == 4 * want["total"]
    with attention_switched(model, [1, 4]):
        off = parameter_counts(model, adapter)
    want_off = analytic_params(model.config, TINY["num_hidden_layers"] - 2)
    assert off["parameters"] == want_off["total"] and off["attention_parameters"] == want_off["attention"]


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_macs_fvcore_torch_and_analytic_agree_including_attention_scores(family):
    model = tiny_model(family)
    adapter = adapter_for(family)
    counts = compute_counts(model, adapter, seq_len=24)
    assert counts["macs_fvcore"] == counts["macs_analytic"]
    assert counts["flops"] == counts["flops_torch_counter"] == 2 * counts["macs_fvcore"]
    # the attention-score matmuls are in: the count grows quadratically in the sequence
    c48 = compute_counts(model, adapter, seq_len=48)["macs_fvcore"]
    assert c48 - 2 * counts["macs_fvcore"] == macs_analytic(model, adapter, 48) - 2 * macs_analytic(model, adapter, 24) > 0
    with attention_switched(model, [0, 2]):
        off = compute_counts(model, adapter, seq_len=24)
    assert off["macs_fvcore"] == off["macs_analytic"] < counts["macs_fvcore"]


def test_kv_cache_bytes_per_token():
    model = tiny_model("llama")
    adapter = adapter_for("llama")
    per_layer = 2 * TINY["num_key_value_heads"] * (TINY["hidden_size"] // TINY["num_attention_heads"]) * 4
    assert kv_cache_bytes_per_token(model, adapter) == TINY["num_hidden_layers"] * per_layer
    with attention_switched(model, [3]):
        assert kv_cache_bytes_per_token(model, adapter) == (TINY["num_hidden_layers"] - 1) * per_layer


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_speed_reports_units_and_device(family):
    model = tiny_model(family)
    with attention_switched(model, [0, 3]):  # decoding through skipped layers' cache placeholders
        speed(model, prompt_len=8, new_tokens=3, batches=(2,), repeats=1)
    out = speed(model, prompt_len=16, new_tokens=4, batches=(1, 2), repeats=1)
    assert out["prefill_ms"] > 0 and set(out["decode_tokens_per_s"]) == {"1", "2"}
    assert all(v > 0 for v in out["decode_tokens_per_s"].values())
    assert out["device"].startswith("cpu") and out["peak_rss_bytes"]["1"] > 0
