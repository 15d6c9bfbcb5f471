import pytest
import torch.nn as nn
from transformers import AutoConfig, AutoModelForCausalLM

from nose.errors import NoseError
from nose.model.adapters import adapter_for, supported_families
from nose.testing import tiny_model


def test_adapter_finds_layers_attention_and_norms(family):
    model = tiny_model(family)
    adapter = adapter_for(model.config.model_type)
    layers = adapter.layers_of(model)
    assert isinstance(layers, nn.ModuleList) and len(layers) == model.config.num_hidden_layers
    for layer in layers:
        assert "Attention" in type(adapter.attention_of(layer)).__name__
        assert "Norm" in type(adapter.attn_norm_of(layer)).__name__
    assert "Norm" in type(adapter.final_norm_of(model)).__name__
    assert adapter.head_of(model) is model.get_output_embeddings()
    assert adapter.backbone_of(model) is model.get_decoder()


def test_supported_families_cover_the_issue():
    assert {"llama", "mistral", "qwen2", "qwen3"} <= set(supported_families())


def test_unsupported_family_lists_the_supported_ones():
    cfg = AutoConfig.for_model("gpt2", n_layer=2, n_embd=32, n_head=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(NoseError, match=r"unsupported model family .gpt2.*llama, mistral, nemotron-nas, qwen2, qwen3"):
        adapter_for(model.config.model_type)
