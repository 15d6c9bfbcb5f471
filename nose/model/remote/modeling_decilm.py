"""DeciLM ("nemotron-nas") causal LM for checkpoints written by nose.

A llama model in which a layer's ``block_configs[i]["attention"]`` may declare:

- ``no_op: true``: no attention sublayer and no input norm (their tensors are absent from the
  weights): the layer computes ``h = x; y = h + MLP(LN2(h))``;
- ``replace_with_linear: true``: NVIDIA's "linear attention": ``h = x + W·LN1(x)`` with W the
  tensor ``self_attn.linear_attn.weight`` (hidden × hidden, no bias), the input norm kept.

Neither stores keys or values. Shipped inside every exported checkpoint, so it depends only on
transformers' llama classes.
"""

import torch
from torch import nn
from transformers import LlamaForCausalLM

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # older transformers: caches without per-layer objects
    DynamicLayer = None

from .configuration_decilm import DeciLMConfig


class NoOpAttention(nn.Module):
    """Returns zeros (the residual keeps x). On a dynamic KV cache it appends one placeholder
    slot per token, so the cache length read from layer 0 stays right."""

    is_noop = True  # no attention runs and nothing is cached for it
    replacement_module = None
    reads_input_norm = False

    def __init__(self, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx

    def advance_cache(self, hidden_states, kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("cache"))  # "cache" from transformers 5.24
        if cache is None:
            return
        layers = getattr(cache, "layers", None)
        if layers is not None and self.layer_idx < len(layers) and DynamicLayer is not None \
                and not isinstance(layers[self.layer_idx], DynamicLayer):
            raise ValueError("layers without attention need a dynamic KV cache")
        slot = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[1], 1)
        cache.update(slot, slot, self.layer_idx)

    def forward(self, hidden_states, *args, **kwargs):
        self.advance_cache(hidden_states, kwargs)
        return torch.zeros_like(hidden_states), None


class LinearAttention(NoOpAttention):
    """``W·LN1(x)`` in place of attention; receives ``LN1(x)`` like the attention it replaces."""

    reads_input_norm = True

    def __init__(self, layer_idx, hidden_size):
        super().__init__(layer_idx)
        self.linear_attn = nn.Linear(hidden_size, hidden_size, bias=False)

    @property
    def replacement_module(self):
        return self

    def forward(self, hidden_states, *args, **kwargs):
        self.advance_cache(hidden_states, kwargs)
        return self.linear_attn(hidden_states), None


class DeciLMForCausalLM(LlamaForCausalLM):
    config_class = DeciLMConfig

    def __init__(self, config):
        super().__init__(config)
        for i, block in enumerate(config.block_configs):
            attention = block["attention"]
            layer = self.model.layers[i]
            if attention["no_op"]:
                layer.self_attn = NoOpAttention(i)
                layer.input_layernorm = nn.Identity()
            elif attention.get("replace_with_linear"):
                layer.self_attn = LinearAttention(i, config.hidden_size)
