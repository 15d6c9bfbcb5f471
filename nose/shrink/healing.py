"""Annealed healing: fade the chosen attention sublayers out while the rest learns to cope.

The removed layers run with blend M (DESIGN.md): ``h = x + M·Attn(LN1(x)) + (1 − M)·R(x)``, R each
layer's replacement (skip, double, or a fitted linear map, :mod:`nose.replace.ridge`).
Schedules of M over the training steps:

- ``linear`` (default): M falls from 1 to 0 over the first 75 % of the steps, then stays 0;
- ``epoch`` (thesis eq. 4.1, as read here): constant within an epoch, ``M = 1 − (e + 1)/E`` for
  epoch e of E, so the last epoch trains the final structure (M = 0);
- ``none``: M = 0 from the first step, every step trains the final structure. Fading attention
  out pays when the replacement starts far from it (skip); a fitted linear map starts close
  (reports/repair.md), and annealing then spends most steps on structures that are not kept.

Losses (per predicted token, padding excluded): ``ce`` (next-token cross-entropy), ``kd``
(KL(teacher ‖ student) of next-token distributions at temperature T, × T²; the teacher is a
frozen copy of the original model), ``ce+kd`` (``(1 − α)·ce + α·kd``, α = 0.2 by default) and
``gem`` (GEM, Li et al. 2024, β = 0.7, linear h: ``−Σ_v q_v (log p_y − log p_v)`` with
``q = softmax(z / β)`` held constant).

Trainable parameters: ``default`` — the replacements' own weights (a linear W) and the MLP and
post-attention norm of the layers that lose attention; ``replacements`` — only the former;
``all``; ``lora`` — peft LoRA adapters on those layers' MLP projections (merged into the
weights when training ends) and the replacements. fp32 on CPU; on CUDA, bf16 autocast over fp32 master weights.
Training runs through accelerate: ``accelerate launch --multi_gpu -m nose shrink ...`` (or
``torchrun --nproc_per_node N -m nose shrink ...``) trains one replica per process (DDP, each on
its own shard of the data order) and the main process exports. Gradients are
clipped; a non-finite loss or gradient stops training with an error (and nothing is exported).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from nose.errors import NoseError
from nose.files import atomic_file
from nose.model.loading import LoadedModel
from nose.model.replacements import Replacement, describe_all
from nose.model.switches import AttentionSwitch
from nose.data.calibration import trimmed
from nose.shrink.data import TrainingRows

LOSSES = ("ce", "kd", "ce+kd", "gem")
SCHEDULES = ("linear", "epoch", "none")
TRAINABLE = ("default", "replacements", "all", "lora")


@dataclass
class HealConfig:
    steps: int = 60  # optimizer steps; 0 = surgery only. 60 × 4 transcripts: ~30 min on 2 cores (0.5B)
    epochs: int = 1  # passes are cut into this many epochs (validation after each)
    schedule: str = "linear"
    loss: str = "kd"
    alpha: float = 0.2  # weight of kd in ce+kd
    temperature: float = 2.0  # kd temperature
    beta: float = 0.7  # gem
    train: str = "default"  # default | replacements | all | lora (see trainable_parameters)
    lora_rank: int = 16
    lr: float = 1e-5  # measured on held-out transcripts: 1e-4 harms a linear repair (reports/repair.md)
    batch_size: int = 4
    grad_clip: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise NoseError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise NoseError(f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        if self.train not in TRAINABLE:
            raise NoseError(f"unknown --train {self.train!r}; choose {', '.join(TRAINABLE)}")
        if self.steps < 0 or self.epochs < 1 or self.batch_size < 1:
            raise NoseError("--steps must be 0 or more, --epochs and --batch-size at least 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise NoseError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0 or self.beta <= 0:
            raise NoseError("--temperature and --beta must be positive")
        if not 0.0 < self.lr <= 1.0:  # NaN fails too
            raise NoseError(f"--lr must lie in (0, 1] (AdamW learning rates are around 1e-5), got {self.lr}")


def blend_at(step: int, config: HealConfig) -> float:
    """M for optimizer step ``step`` (0-based) of ``config.steps``."""
    if config.schedule == "none":
        return 0.0
    if config.schedule == "linear":
        ramp = 0.75 * config.steps
        return max(0.0, 1.0 - (step + 1) / ramp) if ramp > 0 else 0.0
    epoch = min(config.epochs - 1, step * config.epochs // max(config.steps, 1))
    return 1.0 - (epoch + 1) / config.epochs


def _next_token(mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """(B, T−1) bool: positions that predict a next token which counts."""
    return (mask[:, :-1] * target_mask[:, 1:]).bool()


def loss_value(config: HealConfig, logits, ids, mask, teacher_logits=None, loss_mask=None) -> torch.Tensor:
    """The healing loss. ``mask``: real tokens (kd uses all); ``loss_mask``: the tokens ``ce`` and
    ``gem`` learn (assistant turns of chat data; default: all real tokens)."""
    logits = logits.float()
    sup = _next_token(mask, mask if loss_mask is None else loss_mask)
    z, y = logits[:, :-1][sup], ids[:, 1:][sup]
    if config.loss == "gem":
        logp = F.log_softmax(z, -1)
        q = F.softmax(z.detach() / config.beta, -1)
        return -(q * (logp.gather(-1, y[:, None]) - logp)).sum(-1).mean()
    ce = F.cross_entropy(z, y) if config.loss in ("ce", "ce+kd") else None
    if config.loss == "ce":
        return ce
    t = config.temperature
    every = _next_token(mask, mask)
    kd = F.kl_div(F.log_softmax(logits[:, :-1][every] / t, -1),
                  F.log_softmax(teacher_logits.float()[:, :-1][every] / t, -1), log_target=True,
                  reduction="batchmean") * t * t
    return kd if config.loss == "kd" else (1 - config.alpha) * ce + config.alpha * kd


def trainable_parameters(lm: LoadedModel, replacements: dict[int, Replacement], which: str) -> list[torch.nn.Parameter]:
    """What healing trains: ``default`` the replacements (a linear W) and the MLP and post-attention
    norm of the changed layers; ``replacements`` only the former; ``lora`` the adapters (see
    :func:`add_lora`) and the replacements; ``all`` everything."""
    own = [p for r in replacements.values() for p in r.parameters()]
    if which == "all":
        return list(lm.model.parameters()) + own
    if which == "lora":
        return [p for name, p in lm.model.named_parameters() if "lora_" in name] + own
    if which == "replacements":
        return own
    layers = lm.adapter.layers_of(lm.model)
    return own + [p for i in sorted(replacements) for name in (lm.adapter.mlp, lm.adapter.mlp_norm)
                  for p in layers[i].get_submodule(name).parameters()]


def add_lora(lm: LoadedModel, layers: list[int], rank: int):
    """Inject LoRA adapters (peft) into the MLP projections of the changed layers."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise NoseError("--train lora needs peft: pip install peft") from None
    decoder = lm.adapter.layers_of(lm.model)
    targets = [f"{lm.adapter.layers}.{i}.{lm.adapter.mlp}.{name}" for i in layers
               for name, mod in decoder[i].get_submodule(lm.adapter.mlp).named_children()
               if isinstance(mod, torch.nn.Linear)]
    return get_peft_model(lm.model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                               target_modules=targets))


@dataclass
class HealHistory:
    steps: list[dict] = field(default_factory=list)  # step, blend, loss, grad_norm
    validation: list[dict] = field(default_factory=list)  # epoch, step, blend, loss; epoch 0: before training
    seconds: float = 0.0
    tokens: int = 0  # seen by this process
    processes: int = 1  # data-parallel replicas (accelerate launch)


def _batches(rows: TrainingRows, batch: int, seed: int):
    """Endless shuffled batches of (ids, attention mask, loss mask); the order depends on the seed only."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(rows), generator=g)
        for k in range(0, len(order) - batch + 1 if len(order) >= batch else 1, batch):
            sel = order[k:k + batch]
            yield rows.input_ids[sel], rows.attention_mask[sel], rows.loss_mask[sel]


def rows_sha256(rows: TrainingRows) -> str:
    h = hashlib.sha256()
    for t in (rows.input_ids, rows.attention_mask, rows.loss_mask):
        h.update(t.contiguous().numpy().astype("<i8").tobytes())
    return h.hexdigest()


def _save_state(path: Path, step: int, params, opt, history: HealHistory, fingerprint: dict) -> None:
    """Trainable weights, optimizer and history, atomically; plain tensors and Python values only,
    so :func:`_load_state` can read it with ``weights_only=True``."""
    with atomic_file(path, "wb") as f:
        torch.save({"step": step, "params": [p.detach().cpu() for p in params], "optimizer": opt.state_dict(),
                    "history": asdict(history), "fingerprint": fingerprint}, f)


def _load_state(path: Path, params, opt, fingerprint: dict) -> tuple[int, HealHistory]:
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # a file from an older nose, or not a healing state at all
        raise NoseError(f"cannot resume healing from {path}: not a healing state nose can read ({e}); "
                        "remove it and start over") from None
    if state.get("fingerprint") != fingerprint:
        old = state.get("fingerprint") or {}
        what = [k for k in fingerprint if old.get(k) != fingerprint[k]] or ["format"]
        raise NoseError(f"cannot resume healing from {path}: it was made with other {', '.join(what)}; "
                        "remove it or use the same model, data, layers and options")
    with torch.no_grad():
        for p, saved in zip(params, state["params"]):
            p.copy_(saved.to(p.device))
    opt.load_state_dict(state["optimizer"])
    h = state["history"]
    return state["step"], HealHistory(h["steps"], h["validation"], h["seconds"], h["tokens"], h["processes"])


def _accelerator(lm: LoadedModel, config: HealConfig):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    return Accelerator(cpu=lm.device.type == "cpu", mixed_precision="bf16" if lm.device.type == "cuda" else "no",
                       kwargs_handlers=[DistributedDataParallelKwargs(
                           find_unused_parameters=config.train == "all")])  # removed attention gets no grad


def heal(lm: LoadedModel, replacements: dict[int, Replacement], train: TrainingRows, val: TrainingRows,
         config: HealConfig, progress=None, state_path: Path | None = None, save_every: int = 25,
         resume: bool = False) -> HealHistory:
    """Train in place; on return the model's weights and the replacements are healed and no switch
    is left applied.

    ``state_path``: where trainable weights, optimizer and history are saved every ``save_every``
    steps (atomically); with ``resume`` an existing state there is loaded, after checking that it
    was made for the same model weights, data, layers, replacements and settings, and training
    goes on from its step with the same data order, so the result equals an uninterrupted run.
    Resume in a new process with the model loaded from disk: the KD teacher is copied from the
    model as it is at the call.
    """
    config.validate()
    history = HealHistory()
    if config.steps == 0:
        return history
    model = lm.model
    layers = sorted(replacements)
    fingerprint = {"model": lm.weights_sha256, "data": rows_sha256(train), "layers": layers,
                   "replacements": describe_all(replacements), "settings": asdict(config)}
    accelerator = _accelerator(lm, config)
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if config.loss in ("kd", "ce+kd") else None
    originals = {id(p): p.requires_grad for p in model.parameters()}
    switch = AttentionSwitch(model, replacements, blend=1.0, adapter=lm.adapter)
    peft_model = None
    try:  # everything that changes the model is inside: an error leaves it as it came (LoRA merged at zero)
        peft_model = add_lora(lm, layers, config.lora_rank) if config.train == "lora" else None
        params = trainable_parameters(lm, replacements, config.train)
        model.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        switch.apply()  # the replacements join the model, so data parallelism sees their weights
        if getattr(model, "hf_device_map", None):  # spread over GPUs by --device-map: train it where it is
            train_model, device = model, lm.device
        else:  # one process, or one replica per process under `accelerate launch` (DDP)
            train_model, opt = accelerator.prepare(model, opt)
            device = accelerator.device
            if teacher is not None:
                teacher.to(device)
        history.processes = accelerator.num_processes
        task = progress.add_task("heal", total=config.steps) if progress and accelerator.is_main_process else None
        data = _batches(train, config.batch_size, config.seed + accelerator.process_index)
        start = 0
        if resume and state_path is not None and Path(state_path).exists():
            start, history = _load_state(Path(state_path), params, opt, fingerprint)
            for _ in range(start):
                next(data)
            if task is not None:
                progress.update(task, completed=start)
        t0 = time.perf_counter() - history.seconds
        if start == 0:  # the baseline healing has to beat: the final structure (M = 0), untrained
            switch.set_blend(0.0)
            history.validation.append({"epoch": 0, "step": 0, "blend": 0.0,
                                       "loss": validation_loss(lm, teacher, val, config)})
        model.train()
        steps_per_epoch = math.ceil(config.steps / config.epochs)
        for step in range(start, config.steps):
            m = blend_at(step, config)
            switch.set_blend(m)
            value, norm, tokens = _train_step(train_model, teacher, next(data), device, accelerator, params, opt,
                                              config, step)
            history.tokens += tokens
            history.steps.append({"step": step + 1, "blend": m, "loss": value, "grad_norm": norm})
            if (step + 1) % steps_per_epoch == 0 or step + 1 == config.steps:
                history.validation.append({"epoch": math.ceil((step + 1) / steps_per_epoch), "step": step + 1,
                                           "blend": m, "loss": validation_loss(lm, teacher, val, config)})
            if accelerator.is_main_process and state_path is not None and \
                    ((step + 1) % save_every == 0 or step + 1 == config.steps):
                history.seconds = time.perf_counter() - t0
                _save_state(Path(state_path), step + 1, params, opt, history, fingerprint)
            if task is not None:
                progress.update(task, advance=1, description=f"heal M={m:.2f} loss={value:.3f}")
        history.seconds = time.perf_counter() - t0
    finally:
        switch.restore()
        if peft_model is not None:
            peft_model.merge_and_unload()  # LoRA folded into the base weights, adapters removed
        model.eval()
        for p in model.parameters():
            p.requires_grad_(originals.get(id(p), False))
        for r in replacements.values():
            r.requires_grad_(False)
        del teacher
    return history


def _train_step(train_model, teacher, batch, device, accelerator, params, opt, config: HealConfig,
                step: int) -> tuple[float, float, int]:
    """One optimizer step; (loss, gradient norm, tokens). A non-finite loss or gradient stops
    every process with an error, and nothing is exported."""
    ids, mask, loss_mask = (t.to(device) for t in trimmed(*batch))
    with accelerator.autocast():
        logits = train_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits if teacher else None
        loss = loss_value(config, logits, ids, mask, t_logits, loss_mask)
    bad = accelerator.reduce(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=device), "sum")
    if bad.item() > 0:  # every process stops, not only the one that saw it
        raise NoseError(f"non-finite loss ({loss.item()}) at healing step {step + 1}: training stopped "
                        "and nothing was exported; lower --lr or check the data")
    opt.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    norm = accelerator.clip_grad_norm_(params, config.grad_clip)
    if not torch.isfinite(norm):
        raise NoseError(f"non-finite gradient at healing step {step + 1}: training stopped and nothing "
                        "was exported; lower --lr")
    opt.step()
    return loss.item(), norm.item(), int(mask.sum())


@torch.no_grad()
def validation_loss(lm: LoadedModel, teacher, val: TrainingRows, config: HealConfig) -> float:
    was_training = lm.model.training
    lm.model.eval()
    total, n = 0.0, 0
    for k in range(0, len(val), config.batch_size):
        ids, mask, loss_mask = (t.to(lm.device) for t in trimmed(
            *(t[k:k + config.batch_size] for t in (val.input_ids, val.attention_mask, val.loss_mask))))
        logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        t_logits = teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits if teacher else None
        total += float(loss_value(config, logits, ids, mask, t_logits, loss_mask)) * ids.shape[0]
        n += ids.shape[0]
    lm.model.train(was_training)
    return total / max(n, 1)
