"""Where each supported model family keeps its decoder layers, attention sublayers and norms.

Every architecture difference the toolkit cares about lives in this table. All families here
are pre-norm decoders whose layer computes ``h = x + Attn(LN1(x)); y = h + MLP(LN2(h))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from nose.errors import NoseError


@dataclass(frozen=True)
class FamilyAdapter:
    """Attribute paths, relative to the causal-LM module (or to one decoder layer)."""

    family: str
    backbone: str = "model"  # the base model: embeddings, layers, final norm
    layers: str = "model.layers"
    final_norm: str = "model.norm"
    head: str = "lm_head"
    attention: str = "self_attn"  # inside a layer
    attn_norm: str = "input_layernorm"  # inside a layer: LN1
    mlp_norm: str = "post_attention_layernorm"  # inside a layer: LN2
    mlp: str = "mlp"  # inside a layer
    attention_projections: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # inside the attention
    attention_out: str = "o_proj"  # inside the attention: what writes to the residual stream
    mlp_out: str = "down_proj"  # inside the MLP: what writes to the residual stream
    per_head_qk_norm: bool = False  # q and k normalized per head (q_norm/k_norm), which DeciLM cannot express

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return _get(model, self.backbone)

    def layers_of(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers)

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return _get(model, self.final_norm)

    def head_of(self, model: nn.Module) -> nn.Module:
        return _get(model, self.head)

    def attention_of(self, layer: nn.Module) -> nn.Module:
        return _get(layer, self.attention)

    def attn_norm_of(self, layer: nn.Module) -> nn.Module:
        return _get(layer, self.attn_norm)

    def last_hidden(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone's final hidden states (B, T, hidden), no KV cache; the inputs are moved to
        the embeddings' device."""
        backbone = self.backbone_of(model)
        device = backbone.get_input_embeddings().weight.device
        return backbone(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                        use_cache=False).last_hidden_state

    def on_mlp_hidden(self, layer: nn.Module, receive):
        """Call ``receive(a)`` with a decoder layer's MLP hidden activation before each forward of
        its down-projection (a: what ``down_proj`` multiplies, intermediate-sized). Returns the
        hook's handle. What a ``folded`` replacement of the next layer reads."""
        down = _get(layer, f"{self.mlp}.{self.mlp_out}")
        return down.register_forward_pre_hook(lambda module, args: receive(args[0]))

    def logits_at(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  positions: torch.Tensor) -> torch.Tensor:
        """(K, V) next-token logits at the K true entries of ``positions`` (B, T): the backbone over
        every token, the head (for a 150k vocabulary a quarter of a 0.5B model's work) only where
        it is read."""
        hidden = self.last_hidden(model, input_ids, attention_mask)
        return self.head_of(model)(hidden[positions.to(hidden.device)])


def _get(module: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        module = getattr(module, name)
    return module


# "nemotron-nas": checkpoints exported by nose shrink (llama layout, some attention no-ops).
ADAPTERS: dict[str, FamilyAdapter] = {
    name: FamilyAdapter(family=name, per_head_qk_norm=name == "qwen3")
    for name in ("llama", "mistral", "qwen2", "qwen3", "nemotron-nas")
}


def first_output(output):
    """The hidden states of a decoder layer's or attention's output (transformers returns a tuple
    in some versions and families, the tensor alone in others)."""
    return output[0] if isinstance(output, tuple) else output


def on_layer_input(layer: nn.Module, receive):
    """Call ``receive(x, kwargs)`` with a decoder layer's input before each of its forwards: the
    residual stream x and the layer's other keyword arguments (mask, rotary tables, cache).
    Returns the hook's handle; ``handle.remove()`` takes it off. The one layer-input hook of the
    switches, the statistics, the prefix runner and the fits."""

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        receive(x, {k: v for k, v in kwargs.items() if k != "hidden_states"})

    return layer.register_forward_pre_hook(hook, with_kwargs=True)


def is_noop_attention(module: nn.Module) -> bool:
    """True for an attention that does not run: removed by an export, or switched fully off."""
    return bool(getattr(module, "is_noop", False))


def supported_families() -> list[str]:
    return sorted(ADAPTERS)


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter for a config's ``model_type``; a clear error for any other family."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise NoseError(
            f"unsupported model family {model_type!r}; supported families: "
            f"{', '.join(supported_families())}"
        ) from None
