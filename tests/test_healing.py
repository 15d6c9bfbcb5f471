import copy

import pytest
import torch

from nose.errors import NoseError
from nose.model.loading import from_module
from nose.model.switches import SwitchedAttention, attention_switched
from nose.search.calibration import build_calibration
from nose.shrink.healing import HealConfig, blend_at, heal, loss_value, validation_loss
from nose.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def data():
    tok = tiny_tokenizer()
    cal = build_calibration(tok, "stdlib", samples=12, seq_len=32)
    return tok, (cal.input_ids[:8], cal.attention_mask[:8]), (cal.input_ids[8:], cal.attention_mask[8:])


def test_linear_and_epoch_schedules():
    lin = HealConfig(steps=8)
    assert [round(blend_at(s, lin), 4) for s in range(8)] == [0.8333, 0.6667, 0.5, 0.3333, 0.1667, 0.0, 0.0, 0.0]
    ep = HealConfig(steps=8, epochs=4, schedule="epoch")
    assert [blend_at(s, ep) for s in range(8)] == [0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]


def test_kd_healing_lowers_the_kd_loss_of_the_removed_model(data):
    tok, train, val = data
    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    teacher = copy.deepcopy(lm.model)
    cfg = HealConfig(steps=30, loss="kd", lr=3e-3, batch_size=4)
    with attention_switched(lm.model, [2, 3]):
        before = validation_loss(lm, teacher, train, cfg)
    history = heal(lm, [2, 3], "skip", train, val, cfg)
    with attention_switched(lm.model, [2, 3]):
        after = validation_loss(lm, teacher, train, cfg)
    assert after < 0.8 * before
    assert history.steps[-1]["blend"] == 0.0 and len(history.validation) == 1
    assert not any(isinstance(m, SwitchedAttention) for m in lm.model.modules())
    # only the MLP and post-attention norm of layers 2 and 3 changed
    for name, p in lm.model.named_parameters():
        changed = not torch.equal(p, teacher.get_parameter(name))
        assert changed == any(name.startswith(f"model.layers.{i}.{part}") for i in (2, 3)
                              for part in ("mlp.", "post_attention_layernorm.")), name


@pytest.mark.parametrize("loss", ["ce", "ce+kd", "gem"])
def test_other_losses_train(loss, data):
    tok, train, val = data
    lm = from_module(tiny_model("qwen2", vocab_size=len(tok), intermediate_size=256), tok)
    history = heal(lm, [1], "double", train, val, HealConfig(steps=3, loss=loss, train="all"))
    assert len(history.steps) == 3 and all(torch.isfinite(torch.tensor(s["loss"])) for s in history.steps)


def test_gem_and_kd_formulas():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    ids = torch.randint(0, 7, (1, 4))
    mask = torch.ones(1, 4, dtype=torch.long)
    z, y = logits[0, :-1], ids[0, 1:]
    logp = torch.log_softmax(z, -1)
    q = torch.softmax(z / 0.7, -1)
    gem = -(q * (logp.gather(-1, y[:, None]) - logp)).sum(-1).mean()
    assert loss_value(HealConfig(loss="gem"), logits, ids, mask) == pytest.approx(gem.item())
    assert loss_value(HealConfig(loss="kd"), logits, ids, mask, logits).item() == pytest.approx(0.0, abs=1e-6)
    ce = torch.nn.functional.cross_entropy(z, y)
    mix = loss_value(HealConfig(loss="ce+kd", alpha=0.2), logits, ids, mask, logits)
    assert mix.item() == pytest.approx(0.8 * ce.item(), rel=1e-5)


def test_nan_guard_fires_and_restores(data):
    tok, train, val = data
    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    with torch.no_grad():
        lm.model.model.layers[2].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(NoseError, match="non-finite loss .* at healing step 1"):
        heal(lm, [2], "skip", train, val, HealConfig(steps=2))
    assert not any(isinstance(m, SwitchedAttention) for m in lm.model.modules())


def test_bad_settings():
    for kw, msg in [(dict(loss="mse"), "unknown loss"), (dict(schedule="cosine"), "unknown schedule"),
                    (dict(train="lora"), "unknown --train"), (dict(alpha=2.0), "--alpha")]:
        with pytest.raises(NoseError, match=msg):
            HealConfig(**kw).validate()
