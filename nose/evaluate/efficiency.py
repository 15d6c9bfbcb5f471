"""Efficiency figures of a model, each with its unit and the device it was measured on.

- parameters: total, embedding (input embedding + untied output head), attention (the attention
  modules of layers whose attention is active), replacement (what runs instead of a removed
  attention: a linear replacement's hidden² matrix; skip and double have none);
- compute per forward of ``seq_len`` tokens (batch 1): multiply-accumulates counted by fvcore,
  plus the attention-score matmuls of ``scaled_dot_product_attention``, which fvcore skips
  (handled here: QKᵀ and AV, counted in full although the causal mask makes half of them
  useless); FLOPs = 2 × MACs. Cross-checked against ``torch.utils.flop_counter`` (with the same
  attention rule) and the analytic count;
- weight bytes, KV-cache bytes per token (active attention layers × 2 × kv heads × head dim ×
  dtype size);
- speed: prefill latency of one ``prompt_len`` prompt (median of runs), greedy decode tokens/s
  with a KV cache at batch 1 and a larger batch (timed apart from the prefill), peak memory during
  prefill + decode (CUDA max allocated, or the process's peak RSS sampled every 10 ms on CPU).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time

import torch
import torch.nn as nn

from nose.model.adapters import FamilyAdapter, is_noop_attention
from nose.provenance import device_name


def _unique_params(module: nn.Module) -> dict[int, torch.Tensor]:
    return {id(p): p for p in module.parameters()}


def active_attention_layers(model: nn.Module, adapter: FamilyAdapter) -> list[int]:
    return [i for i, layer in enumerate(adapter.layers_of(model))
            if not is_noop_attention(adapter.attention_of(layer))]


def replacement_modules(model: nn.Module, adapter: FamilyAdapter) -> list[nn.Module]:
    """What runs in place of each removed attention (switched in memory, or exported)."""
    out = []
    for layer in adapter.layers_of(model):
        attn = adapter.attention_of(layer)
        if is_noop_attention(attn) and getattr(attn, "replacement_module", None) is not None:
            out.append(attn.replacement_module)
    return out


def parameter_counts(model: nn.Module, adapter: FamilyAdapter) -> dict:
    total = _unique_params(model)
    emb = _unique_params(model.get_input_embeddings())
    head = model.get_output_embeddings()
    if head is not None:
        emb.update(_unique_params(head))
    attn: dict[int, torch.Tensor] = {}
    layers = adapter.layers_of(model)
    active = active_attention_layers(model, adapter)
    for i in active:
        attn.update(_unique_params(adapter.attention_of(layers[i])))
    replacement: dict[int, torch.Tensor] = {}
    for module in replacement_modules(model, adapter):
        replacement.update(_unique_params(module))
    # a switched-off attention's weights are unused (its replacement's are used), and so is its
    # input norm unless the replacement reads LN1(x): count them out, as an export drops them
    unused: set[int] = set()
    for i, layer in enumerate(layers):
        if i not in active:
            attention = adapter.attention_of(layer)
            unused |= set(_unique_params(attention))
            if not getattr(attention, "reads_input_norm", False):
                unused |= set(_unique_params(adapter.attn_norm_of(layer)))
    unused -= set(replacement)
    n = lambda d: sum(p.numel() for k, p in d.items() if k not in unused)  # noqa: E731
    weight_bytes = sum(p.numel() * p.element_size() for k, p in total.items() if k not in unused)
    return {"parameters": n(total), "embedding_parameters": n(emb), "attention_parameters": n(attn),
            "replacement_parameters": n(replacement), "weight_bytes": weight_bytes}


def kv_cache_bytes_per_token(model: nn.Module, adapter: FamilyAdapter) -> int:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    size = next(model.parameters()).element_size()
    return len(active_attention_layers(model, adapter)) * 2 * kv * head_dim * size


def _sdpa_macs(q_shape, k_shape, v_shape) -> int:
    *batch, tq, d = q_shape
    tk, dv = k_shape[-2], v_shape[-1]
    b = 1
    for x in batch:
        b *= x
    return b * tq * tk * (d + dv)


class _Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits


def macs_fvcore(model: nn.Module, seq_len: int) -> int:
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

    def sdpa(inputs, outputs):
        return _sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]))

    ids = torch.zeros((1, seq_len), dtype=torch.long, device=next(model.parameters()).device)
    analysis = FlopCountAnalysis(_Logits(model), (ids,)).set_op_handle("aten::scaled_dot_product_attention", sdpa)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad():
        return int(analysis.total())


def flops_torch(model: nn.Module, seq_len: int) -> int:
    """FLOPs from torch's own counter, with the CPU/GPU SDPA kernels mapped to the same rule."""
    from torch.utils.flop_counter import FlopCounterMode

    def sdpa(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
        return 2 * _sdpa_macs(q_shape, k_shape, v_shape)

    ops = [getattr(torch.ops.aten, name) for name in
           ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
           if hasattr(torch.ops.aten, name)]
    ids = torch.zeros((1, seq_len), dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping={op: sdpa for op in ops}) as counter:
        model(input_ids=ids, use_cache=False)
    return int(counter.get_total_flops())


def macs_analytic(model: nn.Module, adapter: FamilyAdapter, seq_len: int) -> int:
    """Linear layers and attention scores of a pre-norm decoder with a SwiGLU MLP (batch 1); a
    linear replacement adds its hidden² per token."""
    cfg = model.config
    h, inter, heads = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    hd = getattr(cfg, "head_dim", None) or h // heads
    attn_layers = len(active_attention_layers(model, adapter))
    per_token_attn = h * heads * hd * 2 + h * kv * hd * 2
    scores = 2 * heads * hd * seq_len * seq_len
    mlp = 3 * h * inter * seq_len * cfg.num_hidden_layers
    head = h * cfg.vocab_size * seq_len
    replaced = sum(p.numel() for m in replacement_modules(model, adapter) for p in m.parameters()) * seq_len
    return attn_layers * (per_token_attn * seq_len + scores) + mlp + head + replaced


def compute_counts(model: nn.Module, adapter: FamilyAdapter, seq_len: int) -> dict:
    macs = macs_fvcore(model, seq_len)
    return {"seq_len": seq_len, "macs_fvcore": macs, "flops": 2 * macs,
            "flops_torch_counter": flops_torch(model, seq_len),
            "macs_analytic": macs_analytic(model, adapter, seq_len)}


class _PeakRSS:
    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def speed(model: nn.Module, prompt_len: int = 256, new_tokens: int = 32, batches: tuple[int, ...] = (1, 8),
          repeats: int = 3) -> dict:
    """Prefill latency (batch 1) and greedy decode speed per batch size, each the median of ``repeats``.

    Decode is timed on its own: after a prefill that fills the KV cache, ``new_tokens`` single-token
    forwards with the cache (the work of one generation step each), so prefill time never leaks into
    tokens/s. A prefill computes the logits of the last position only, as ``generate`` and serving
    engines do (the vocabulary head over every prompt token is a quarter of a 0.5B model's
    prefill and would dilute the effect of removing attention). Medians keep one slow repeat
    (another process, a page fault) from deciding a ratio. Peak memory covers prefill and decode
    of each batch size.
    """
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)

    def prompt(batch: int) -> torch.Tensor:
        return torch.randint(0, vocab, (batch, prompt_len), generator=g).to(device)

    ids = prompt(1)
    model(input_ids=ids, use_cache=True, logits_to_keep=1)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=True, logits_to_keep=1)
        _sync(device)
        times.append(time.perf_counter() - t0)
    out = {"device": device_name(device), "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
           "prompt_len": prompt_len, "new_tokens": new_tokens, "repeats": repeats,
           "prefill_ms": 1000 * statistics.median(times), "decode_tokens_per_s": {}}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for batch in batches:
        ids = prompt(batch)
        rates = []
        tracker = _PeakRSS() if device.type != "cuda" else contextlib.nullcontext()
        with tracker:
            for _ in range(repeats):
                step = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                cache, nxt = step.past_key_values, step.logits[:, -1:].argmax(-1)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(new_tokens):
                    step = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                    nxt = step.logits[:, -1:].argmax(-1)
                _sync(device)
                rates.append(batch * new_tokens / (time.perf_counter() - t0))
                del cache, step
        out["decode_tokens_per_s"][str(batch)] = statistics.median(rates)
        if device.type != "cuda":
            out.setdefault("peak_rss_bytes", {})[str(batch)] = tracker.peak
    if device.type == "cuda":
        out["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


def measure(model: nn.Module, adapter: FamilyAdapter, seq_len: int = 512, prompt_len: int = 256,
            new_tokens: int = 32, batches: tuple[int, ...] = (1, 8)) -> dict:
    """All efficiency figures; units are in the key names (bytes, ms, tokens_per_s)."""
    return {**parameter_counts(model, adapter),
            "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model, adapter),
            "compute": compute_counts(model, adapter, seq_len),
            "speed": speed(model, prompt_len, new_tokens, batches)}
