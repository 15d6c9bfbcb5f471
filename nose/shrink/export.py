"""Write a slimmer checkpoint in NVIDIA's DeciLM ("nemotron-nas") layout (DESIGN.md, "Export").

- ``config.json``: the source config plus ``architectures: ["DeciLMForCausalLM"]``,
  ``model_type: "nemotron-nas"``, ``block_configs`` (one per layer; see below), ``rope_theta`` at
  the top level, ``auto_map`` to the remote code shipped beside the weights, and the dtype of
  the tensors actually written. Nothing of the source's storage survives: a GGUF source's
  ``quantization_config`` is dropped (the weights are plain safetensors), and provenance lives
  in ``nose.json`` only.
- blocks, per layer and its :class:`~nose.model.replacements.Replacement`: kept attention
  (``n_heads_in_group`` = heads per KV head); skip or double: ``no_op: true``,
  ``n_heads_in_group: null``, ``replace_with_linear: false`` and neither q/k/v/o tensors nor the
  input norm; linear or thesis: ``no_op: false``, ``n_heads_in_group: null``,
  ``replace_with_linear: true``, the input norm kept and ``self_attn.linear_attn.weight`` = W
  (2I for thesis). Layers an earlier export already replaced keep their block.
- weights: sharded safetensors. Exactness: Qwen2's q/k/v biases are written with
  ``attention_bias: true`` and a zero ``o_proj.bias`` (the layout has one switch for all four);
  tied embeddings stay tied; families the layout cannot express (per-head q/k norms, sliding
  windows) are refused.
- ``folded`` (:class:`~nose.model.replacements.Folded`): layer i's block is ``no_op`` and W is
  added to layer i−1's MLP down-projection, exactly what W·a adds (a: that MLP's activation).
- ``double`` is folded: every addition to the residual stream after a ``double`` layer
  (attention ``o_proj``, MLP ``down_proj``, a linear replacement's W) is divided by
  2^(number of ``double`` layers up to it), so the residual stream is the double model's divided
  by that power of two and the final RMSNorm, scale-free up to its epsilon, gives the same output.
- atomic: written into a temporary folder beside the target (``extra`` adds files there, e.g.
  the healing record) and renamed at the end; an existing target is never touched unless
  ``overwrite``, and then replaced only after the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from nose.errors import NoseError
from nose.files import publish_permissions, remove_stale_temporaries, write_json_atomic
from nose.model.loading import REMOTE_CODE, LoadedModel
from nose.model.replacements import Replacement, describe_all, uniform
from nose.model.switches import SwitchedAttention, check_layer_indices
from nose.provenance import tool, versions

CHECKPOINT_FORMAT = "nose.checkpoint/2"
SHARD_BYTES = 2 * 1024 ** 3


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def ffn_mult_for(intermediate: int, hidden: int) -> float:
    """The ``ffn_mult`` that readers turn back into ``intermediate``, or a clear error."""
    mult = round(intermediate * 3 / (2 * hidden), 6)
    if find_multiple(int(2 * mult * hidden / 3), 256) != intermediate:
        raise NoseError(f"the MLP width {intermediate} cannot be expressed in the DeciLM layout (readers derive "
                        f"find_multiple(int(2*ffn_mult*{hidden}/3), 256), a multiple of 256)")
    return mult


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    theta = theta or getattr(config, "rope_theta", None)
    if theta is None:
        raise NoseError("the model config has no rope_theta; cannot write a checkpoint engines read correctly")
    return float(theta)


def check_target(out: Path, overwrite: bool, source: str | Path | None = None) -> None:
    """Refuse an ``out`` that exists unless ``overwrite``, and even then anything but an export of
    nose's own (a folder with its ``nose.json``), the model being read (``source``) or a folder
    holding the working directory."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise NoseError(f"{out} exists; choose another --out or pass --overwrite")
    real = out.resolve()
    if source is not None:
        src = Path(source).resolve()
        if real == src or real in src.parents or src in real.parents:
            raise NoseError(f"--out {out} is the model being read ({source}) or overlaps it; --overwrite never "
                            "replaces the source model, choose another --out")
    if real == Path.cwd().resolve() or real in Path.cwd().resolve().parents:
        raise NoseError(f"--out {out} holds the working directory; choose another --out")
    if out.is_symlink() or not out.is_dir() or not _is_nose_export(out):
        raise NoseError(f"--out {out} exists and is not a checkpoint nose exported (no nose.json with format "
                        f"{CHECKPOINT_FORMAT.split('/')[0]}/...); --overwrite only replaces nose's own exports, "
                        "choose another --out or remove it yourself")


def _is_nose_export(folder: Path) -> bool:
    try:
        record = json.loads((folder / "nose.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and str(record.get("format", "")).startswith(CHECKPOINT_FORMAT.split("/")[0] + "/")


def check_exportable(lm: LoadedModel, replacements: dict[int, Replacement]) -> None:
    cfg = lm.model.config
    if any(isinstance(m, SwitchedAttention) for m in lm.model.modules()):
        raise NoseError("the model has attention switches applied; restore them before exporting")
    if lm.adapter.per_head_qk_norm or hasattr(lm.adapter.attention_of(lm.adapter.layers_of(lm.model)[0]), "q_norm"):
        raise NoseError("this family normalizes q and k per head (q_norm/k_norm), which the DeciLM layout "
                        "cannot express; export is refused")
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        raise NoseError("this model uses sliding-window attention, which the DeciLM layout cannot express")
    if getattr(cfg, "mlp_bias", False):
        raise NoseError("MLP biases cannot be expressed in the DeciLM layout")
    removed = check_layer_indices(list(replacements), lm.num_layers, what="removed layer")
    if not removed:
        raise NoseError("no layers to remove: pass at least one layer")
    ffn_mult_for(cfg.intermediate_size, cfg.hidden_size)
    if 0 in removed:
        warnings.warn("layer 0's attention is removed: llama.cpp reads the head size from layer 0 and refuses "
                      "such a checkpoint, and vLLM/SGLang may mishandle it", stacklevel=2)


def _attention_bias(lm: LoadedModel) -> bool:
    for layer in lm.adapter.layers_of(lm.model):
        attn = lm.adapter.attention_of(layer)
        if hasattr(attn, lm.adapter.attention_projections[0]):
            return any(getattr(getattr(attn, p, None), "bias", None) is not None
                       for p in lm.adapter.attention_projections)
    return False


def _residual_scales(replacements: dict[int, Replacement], num_layers: int) -> list[float]:
    """Per layer, what additions to the residual stream are divided by to fold ``double``."""
    doubles = [i for i, r in replacements.items() if r.kind == "double"]
    return [2.0 ** sum(1 for d in doubles if d <= i) for i in range(num_layers)]


def export_state_dict(lm: LoadedModel, replacements: dict[int, Replacement]) -> dict[str, torch.Tensor]:
    """The tensors of the exported checkpoint (llama names), folded for ``double``."""
    layers_path, attention = lm.adapter.layers, lm.adapter.attention
    hidden = lm.model.config.hidden_size
    scales = _residual_scales(replacements, lm.num_layers)
    bias = _attention_bias(lm)
    tied = bool(getattr(lm.model.config, "tie_word_embeddings", False))
    out: dict[str, torch.Tensor] = {}

    def scaled(t: torch.Tensor, scale: float) -> torch.Tensor:
        return t if scale == 1.0 else (t.to(torch.float64) / scale).to(t.dtype)

    for name, tensor in lm.model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        if tied and name == "lm_head.weight":
            continue
        if name.startswith(layers_path + "."):
            idx = int(name[len(layers_path) + 1:].split(".")[0])
            local = name[len(layers_path) + 1 + len(str(idx)) + 1:]
            if idx in replacements and (local.startswith(attention + ".") or (
                    local.startswith(lm.adapter.attn_norm + ".") and not replacements[idx].exported_as_linear)):
                continue
            if local.startswith((f"{attention}.{lm.adapter.attention_out}.", f"{lm.adapter.mlp}.{lm.adapter.mlp_out}.",
                                 f"{attention}.linear_attn.")):
                t = scaled(t, scales[idx])
        out[name] = t
    for i, r in sorted(replacements.items()):
        if r.folds_into_previous_mlp:  # h_i = h_{i-1} + (D + W)·a: the map joins layer i-1's down-projection
            key = f"{layers_path}.{i - 1}.{lm.adapter.mlp}.{lm.adapter.mlp_out}.weight"
            # D was divided by layer i-1's double-fold scale above; W·a adds to the same stream
            down = out[key].to(torch.float64)
            out[key] = (r.fold_into(down * scales[i - 1]) / scales[i - 1]).to(out[key].dtype).contiguous()
        if r.exported_as_linear:
            w = r.export_weight(hidden).detach().to("cpu", next(iter(out.values())).dtype).contiguous()
            out[f"{layers_path}.{i}.{attention}.linear_attn.weight"] = scaled(w, scales[i])
    if bias:
        for i, layer in enumerate(lm.adapter.layers_of(lm.model)):
            key = f"{layers_path}.{i}.{attention}.{lm.adapter.attention_out}.bias"
            weight = out.get(f"{layers_path}.{i}.{attention}.{lm.adapter.attention_out}.weight")
            if weight is not None and key not in out:
                out[key] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return dict(sorted(out.items()))


def _block(heads_per_kv: int | None, replacement: Replacement | None, previous: dict | None) -> dict:
    if replacement is None:
        return previous or {"n_heads_in_group": heads_per_kv, "no_op": False, "replace_with_linear": False}
    linear = replacement.exported_as_linear
    return {"n_heads_in_group": None, "no_op": not linear, "replace_with_linear": linear}


def export_config(lm: LoadedModel, replacements: dict[int, Replacement], dtype: torch.dtype) -> dict:
    cfg = lm.model.config
    d = cfg.to_dict()
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    mult = ffn_mult_for(cfg.intermediate_size, cfg.hidden_size)
    previous = getattr(cfg, "block_configs", None) or []
    blocks = [{"attention": _block(heads // kv, replacements.get(i), previous[i]["attention"] if previous else None),
               "ffn": {"ffn_mult": mult, "no_op": False, "replace_with_linear": False}}
              for i in range(lm.num_layers)]
    for key in ("layer_types", "use_sliding_window", "sliding_window", "max_window_layers", "_name_or_path",
                "quantization_config", "torch_dtype"):
        d.pop(key, None)
    d.update({"architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas", "block_configs": blocks,
              "rope_theta": rope_theta(cfg), "attention_bias": _attention_bias(lm), "mlp_bias": False,
              "dtype": str(dtype).removeprefix("torch."),
              "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig",
                           "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"}})
    return d


def write_shards(state: dict[str, torch.Tensor], folder: Path, shard_bytes: int = SHARD_BYTES) -> list[str]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    if len(shards) == 1:
        save_file(shards[0], folder / "model.safetensors", metadata={"format": "pt"})
        return ["model.safetensors"]
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": {}}
    for fname, shard in zip(names, shards):
        save_file(shard, folder / fname, metadata={"format": "pt"})
        index["weight_map"].update({k: fname for k in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names


def export_checkpoint(lm: LoadedModel, replacements: dict[int, Replacement] | list[int], out: Path,
                      mode: str = "skip", provenance: dict | None = None, overwrite: bool = False,
                      shard_bytes: int = SHARD_BYTES, extra=None) -> Path:
    """Export ``lm`` with the attention of the replaced layers taken out; returns the folder.

    ``replacements``: ``{layer: Replacement}``, or a layer list that all get ``mode``.
    ``extra``: ``extra(folder)`` writes more files into the checkpoint before it is published.
    """
    if not isinstance(replacements, dict):
        replacements = uniform(check_layer_indices(replacements, lm.num_layers, what="removed layer"), mode)
    check_exportable(lm, replacements)
    removed = sorted(replacements)
    out = Path(out)
    check_target(out, overwrite, source=lm.source.get("path"))
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-{os.getpid()}-"))
    try:
        state = export_state_dict(lm, replacements)
        files = write_shards(state, tmp, shard_bytes)
        dtype = next(iter(state.values())).dtype
        (tmp / "config.json").write_text(json.dumps(export_config(lm, replacements, dtype), indent=2, default=str))
        for f in REMOTE_CODE.glob("*.py"):
            shutil.copy(f, tmp / f.name)
        if lm.tokenizer is not None:
            lm.tokenizer.save_pretrained(tmp)
        if getattr(lm.model, "generation_config", None) is not None:
            lm.model.generation_config.save_pretrained(tmp)
        before = lm.num_layers - len(lm.absent_attention())
        write_json_atomic(tmp / "nose.json", {
            "format": CHECKPOINT_FORMAT, "tool": tool(), "versions": versions(), "source_model": lm.provenance(), "removed_attention": removed,
            "replacements": describe_all(replacements),
            "attention_layers": f"{before} -> {before - len(removed)}", "files": files, **(provenance or {})})
        if extra is not None:
            extra(tmp)
        publish_permissions(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}-0")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def removed_bytes(lm: LoadedModel, removed: list[int]) -> int:
    """Bytes of the tensors that an export without folding drops (q/k/v/o and input norms)."""
    layers = lm.adapter.layers_of(lm.model)
    total = 0
    for i in removed:
        for module in (lm.adapter.attention_of(layers[i]), lm.adapter.attn_norm_of(layers[i])):
            total += sum(p.numel() * p.element_size() for p in module.parameters())
    return total
