"""Annealed healing: fade the chosen attention sublayers out while the rest learns to cope.

The removed layers run with blend M (DESIGN.md): ``h = x + M·Attn(LN1(x)) + (1 − M)·R(x)``.
Schedules of M over the training steps:

- ``linear`` (default): M falls from 1 to 0 over the first 75 % of the steps, then stays 0;
- ``epoch`` (thesis eq. 4.1, as read here): constant within an epoch, ``M = 1 − (e + 1)/E`` for
  epoch e of E, so the last epoch trains the final structure (M = 0).

Losses (per predicted token, padding excluded): ``ce`` (next-token cross-entropy), ``kd``
(KL(teacher ‖ student) of next-token distributions at temperature T, × T²; the teacher is a
frozen copy of the original model), ``ce+kd`` (``(1 − α)·ce + α·kd``, α = 0.2 by default) and
``gem`` (GEM, Li et al. 2024, β = 0.7, linear h: ``−Σ_v q_v (log p_y − log p_v)`` with
``q = softmax(z / β)`` held constant).

Trainable parameters: ``default`` — the MLP and post-attention norm of the layers that lose
attention; ``all``. fp32 on CPU; on CUDA, bf16 autocast over fp32 master weights. Gradients are
clipped; a non-finite loss or gradient stops training with an error (and nothing is exported).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nose.errors import NoseError
from nose.model.loading import LoadedModel
from nose.model.switches import AttentionSwitch

LOSSES = ("ce", "kd", "ce+kd", "gem")
SCHEDULES = ("linear", "epoch")
TRAINABLE = ("default", "all")


@dataclass
class HealConfig:
    steps: int = 100  # optimizer steps; 0 = surgery only
    epochs: int = 1  # passes are cut into this many epochs (validation after each)
    schedule: str = "linear"
    loss: str = "kd"
    alpha: float = 0.2  # weight of kd in ce+kd
    temperature: float = 2.0  # kd temperature
    beta: float = 0.7  # gem
    train: str = "default"
    lr: float = 1e-4
    batch_size: int = 4
    grad_clip: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise NoseError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise NoseError(f"unknown schedule {self.schedule!r}; choose linear or epoch")
        if self.train not in TRAINABLE:
            raise NoseError(f"unknown --train {self.train!r}; choose default or all")
        if self.steps < 0 or self.epochs < 1 or self.batch_size < 1:
            raise NoseError("--steps must be 0 or more, --epochs and --batch-size at least 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise NoseError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0 or self.beta <= 0:
            raise NoseError("--temperature and --beta must be positive")


def blend_at(step: int, config: HealConfig) -> float:
    """M for optimizer step ``step`` (0-based) of ``config.steps``."""
    if config.schedule == "linear":
        ramp = 0.75 * config.steps
        return max(0.0, 1.0 - (step + 1) / ramp) if ramp > 0 else 0.0
    epoch = min(config.epochs - 1, step * config.epochs // max(config.steps, 1))
    return 1.0 - (epoch + 1) / config.epochs


def _shift(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """Predicting logits (N, V), their targets (N,), for the counted next tokens."""
    keep = (mask[:, 1:] * mask[:, :-1]).bool()
    return logits[:, :-1][keep], ids[:, 1:][keep], keep


def loss_value(config: HealConfig, logits, ids, mask, teacher_logits=None) -> torch.Tensor:
    z, y, keep = _shift(logits.float(), ids, mask)
    if config.loss == "gem":
        logp = F.log_softmax(z, -1)
        q = F.softmax(z.detach() / config.beta, -1)
        return -(q * (logp.gather(-1, y[:, None]) - logp)).sum(-1).mean()
    ce = F.cross_entropy(z, y) if config.loss in ("ce", "ce+kd") else None
    if config.loss == "ce":
        return ce
    t = config.temperature
    zt = teacher_logits.float()[:, :-1][keep]
    kd = F.kl_div(F.log_softmax(z / t, -1), F.log_softmax(zt / t, -1), log_target=True,
                  reduction="batchmean") * t * t
    return kd if config.loss == "kd" else (1 - config.alpha) * ce + config.alpha * kd


def trainable_parameters(lm: LoadedModel, removed: list[int], which: str) -> list[torch.nn.Parameter]:
    if which == "all":
        params = list(lm.model.parameters())
    else:
        layers = lm.adapter.layers_of(lm.model)
        params = [p for i in removed for name in (lm.adapter.mlp, lm.adapter.mlp_norm)
                  for p in layers[i].get_submodule(name).parameters()]
    return params


@dataclass
class HealHistory:
    steps: list[dict] = field(default_factory=list)  # step, blend, loss, grad_norm
    validation: list[dict] = field(default_factory=list)  # epoch, step, blend, loss
    seconds: float = 0.0
    tokens: int = 0


def _batches(ids: torch.Tensor, mask: torch.Tensor, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(ids.shape[0], generator=g)
        for k in range(0, len(order) - batch + 1 if len(order) >= batch else 1, batch):
            sel = order[k:k + batch]
            yield ids[sel], mask[sel]


def heal(lm: LoadedModel, removed: list[int], mode: str, train: tuple[torch.Tensor, torch.Tensor],
         val: tuple[torch.Tensor, torch.Tensor], config: HealConfig, progress=None) -> HealHistory:
    """Train in place; on return the model's weights are healed and no switch is left applied."""
    config.validate()
    history = HealHistory()
    if config.steps == 0:
        return history
    model = lm.model
    device = lm.device
    teacher = None
    if config.loss in ("kd", "ce+kd"):
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    params = trainable_parameters(lm, removed, config.train)
    originals = {id(p): p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    steps_per_epoch = math.ceil(config.steps / config.epochs)
    task = progress.add_task("heal", total=config.steps) if progress else None
    data = _batches(*train, config.batch_size, config.seed)
    t0 = time.perf_counter()
    switch = AttentionSwitch(model, removed, mode, blend=1.0, adapter=lm.adapter)
    try:
        switch.apply()
        model.train()
        for step in range(config.steps):
            m = blend_at(step, config)
            switch.set_blend(m)
            ids, mask = (t.to(device) for t in next(data))
            with autocast:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits if teacher else None
                loss = loss_value(config, logits, ids, mask, t_logits)
            if not torch.isfinite(loss):
                raise NoseError(f"non-finite loss ({loss.item()}) at healing step {step + 1}: training stopped "
                                "and nothing was exported; lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            if not torch.isfinite(norm):
                raise NoseError(f"non-finite gradient at healing step {step + 1}: training stopped and nothing "
                                "was exported; lower --lr")
            opt.step()
            value = loss.item()
            history.tokens += int(mask.sum())
            history.steps.append({"step": step + 1, "blend": m, "loss": value, "grad_norm": norm.item()})
            if (step + 1) % steps_per_epoch == 0 or step + 1 == config.steps:
                history.validation.append({"epoch": len(history.validation) + 1, "step": step + 1, "blend": m,
                                           "loss": validation_loss(lm, teacher, val, config)})
            if progress:
                progress.update(task, advance=1, description=f"heal M={m:.2f} loss={value:.3f}")
    finally:
        switch.restore()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(originals[id(p)])
        del teacher
    history.seconds = time.perf_counter() - t0
    return history


@torch.no_grad()
def validation_loss(lm: LoadedModel, teacher, val: tuple[torch.Tensor, torch.Tensor], config: HealConfig) -> float:
    was_training = lm.model.training
    lm.model.eval()
    total, n = 0.0, 0
    for k in range(0, val[0].shape[0], config.batch_size):
        ids, mask = (t[k:k + config.batch_size].to(lm.device) for t in val)
        logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        t_logits = teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits if teacher else None
        total += float(loss_value(config, logits, ids, mask, t_logits)) * ids.shape[0]
        n += ids.shape[0]
    lm.model.train(was_training)
    return total / max(n, 1)
