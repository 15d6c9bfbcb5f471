"""DeciLM ("nemotron-nas") causal LM for checkpoints written by nose.

A llama model in which every layer whose ``block_configs[i]["attention"]["no_op"]`` is true has
no attention sublayer and no input norm (their tensors are absent from the weights): the layer
computes ``h = x; y = h + MLP(LN2(h))``. Shipped inside every exported checkpoint, so it
depends only on transformers' llama classes.
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

    is_noop = True

    def __init__(self, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states, *args, **kwargs):
        cache = kwargs.get("past_key_values")
        if cache is not None:
            layers = getattr(cache, "layers", None)
            if layers is not None and self.layer_idx < len(layers) and DynamicLayer is not None \
                    and not isinstance(layers[self.layer_idx], DynamicLayer):
                raise ValueError("layers without attention need a dynamic KV cache")
            slot = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[1], 1)
            cache.update(slot, slot, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class DeciLMForCausalLM(LlamaForCausalLM):
    config_class = DeciLMConfig

    def __init__(self, config):
        super().__init__(config)
        for i, block in enumerate(config.block_configs):
            if block["attention"]["no_op"]:
                layer = self.model.layers[i]
                layer.self_attn = NoOpAttention(i)
                layer.input_layernorm = nn.Identity()
