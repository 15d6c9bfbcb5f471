import copy

import pytest
import torch

from nose.errors import NoseError
from nose.model.loading import from_module
from nose.model.replacements import uniform
from nose.model.switches import SwitchedAttention, attention_switched
from nose.data.calibration import build_calibration
from nose.data.chat import assistant_mask
from nose.shrink.data import TrainingRows, build_training_rows
from nose.data.calibration import trimmed
from nose.shrink.healing import HealConfig, blend_at, heal, loss_value, validation_loss
from nose.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def data():
    tok = tiny_tokenizer()
    cal = build_calibration(tok, "stdlib", samples=12, seq_len=32)
    rows = TrainingRows(cal.input_ids, cal.attention_mask, cal.attention_mask.clone())
    train, val = rows.split(4)
    return tok, train, val


def test_linear_and_epoch_schedules():
    lin = HealConfig(steps=8)
    assert [round(blend_at(s, lin), 4) for s in range(8)] == [0.8333, 0.6667, 0.5, 0.3333, 0.1667, 0.0, 0.0, 0.0]
    ep = HealConfig(steps=8, epochs=4, schedule="epoch")
    assert [blend_at(s, ep) for s in range(8)] == [0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]
    assert [blend_at(s, HealConfig(steps=3, schedule="none")) for s in range(3)] == [0.0, 0.0, 0.0]


def test_kd_healing_lowers_the_kd_loss_of_the_removed_model(data):
    tok, train, val = data
    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    teacher = copy.deepcopy(lm.model)
    cfg = HealConfig(steps=30, loss="kd", lr=3e-3, batch_size=4)
    with attention_switched(lm.model, [2, 3]):
        before = validation_loss(lm, teacher, train, cfg)
    history = heal(lm, uniform([2, 3], "skip"), train, val, cfg)
    with attention_switched(lm.model, [2, 3]):
        after = validation_loss(lm, teacher, train, cfg)
    assert after < 0.8 * before
    assert history.steps[-1]["blend"] == 0.0 and len(history.validation) == 2
    untrained, healed = history.validation  # both at M = 0, on the validation rows
    assert (untrained["epoch"], untrained["step"], healed["epoch"]) == (0, 0, 1)
    assert healed["loss"] < untrained["loss"]
    assert not any(isinstance(m, SwitchedAttention) for m in lm.model.modules())
    # only the MLP and post-attention norm of layers 2 and 3 changed
    for name, p in lm.model.named_parameters():
        changed = not torch.equal(p, teacher.get_parameter(name))
        assert changed == any(name.startswith(f"model.layers.{i}.{part}") for i in (2, 3)
                              for part in ("mlp.", "post_attention_layernorm.")), name


@pytest.mark.parametrize("loss,train", [("ce", "all"), ("ce+kd", "all"), ("gem", "default"), ("kd", "lora")])
def test_other_losses_and_trainables(loss, train, data):
    tok, rows, val = data
    lm = from_module(tiny_model("qwen2", vocab_size=len(tok), intermediate_size=256), tok)
    names = set(lm.model.state_dict())
    history = heal(lm, uniform([1], "double"), rows, val, HealConfig(steps=3, loss=loss, train=train, lr=1e-2))
    assert len(history.steps) == 3 and all(torch.isfinite(torch.tensor(s["loss"])) for s in history.steps)
    assert set(lm.model.state_dict()) == names  # LoRA merged and unloaded: the same tensors as before


def test_lora_changes_only_the_changed_layers_mlp(data):
    tok, rows, val = data
    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    heal(lm, uniform([2], "skip"), rows, val, HealConfig(steps=3, loss="kd", train="lora", lr=1e-2))
    changed = {k for k, v in lm.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.layers.2.mlp.") for k in changed)


def test_chat_rows_supervise_assistant_tokens_only(tmp_path):
    import json

    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "translate int f()"}, {"role": "assistant", "content": "def f(): pass"}]
    ids, mask = assistant_mask(tok, msgs)
    assistant = tok.decode([t for t, m in zip(ids, mask) if m])
    assert "def f(): pass" in assistant and "translate" not in assistant
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps({"messages": msgs}) for _ in range(5)))
    rows = build_training_rows(tok, str(path), samples=4, seq_len=64)
    assert len(rows) == 4 and 0 < int(rows.loss_mask.sum()) < int(rows.attention_mask.sum())
    logits = torch.randn(*rows.input_ids.shape, len(tok))
    cfg = HealConfig(loss="ce")
    only = loss_value(cfg, logits, rows.input_ids, rows.attention_mask, loss_mask=rows.loss_mask)
    every = loss_value(cfg, logits, rows.input_ids, rows.attention_mask)
    assert only.item() != pytest.approx(every.item())


def test_padding_columns_change_neither_the_loss_nor_the_cost(tmp_path):
    """Healing cuts each batch to its last real column: the same loss as on the full padded rows."""
    import json

    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "translate int f()"}, {"role": "assistant", "content": "def f(): pass"}]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps({"messages": msgs}) for _ in range(5)))
    rows = build_training_rows(tok, str(path), samples=4, seq_len=128)
    real = int(rows.attention_mask.sum(1).max())
    assert real < 128 and trimmed(rows.input_ids, rows.attention_mask)[0].shape[1] == real
    lm = from_module(tiny_model("llama", vocab_size=len(tok)), tok)
    teacher = copy.deepcopy(lm.model)
    with torch.no_grad():  # teacher differs, so the KD loss is not zero
        teacher.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    cfg = HealConfig(loss="kd", batch_size=4)
    ids, mask = rows.input_ids, rows.attention_mask
    with torch.no_grad():
        full = loss_value(cfg, lm.model(input_ids=ids, attention_mask=mask).logits, ids, mask,
                          teacher(input_ids=ids, attention_mask=mask).logits)
    assert full.item() > 0
    assert validation_loss(lm, teacher, rows, cfg) == pytest.approx(full.item(), rel=1e-5)


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
        heal(lm, uniform([2], "skip"), train, val, HealConfig(steps=2))
    assert not any(isinstance(m, SwitchedAttention) for m in lm.model.modules())


def test_bad_settings():
    for kw, msg in [(dict(loss="mse"), "unknown loss"), (dict(schedule="cosine"), "unknown schedule"),
                    (dict(train="bitfit"), "unknown --train"), (dict(alpha=2.0), "--alpha")]:
        with pytest.raises(NoseError, match=msg):
            HealConfig(**kw).validate()


def test_resume_equals_an_uninterrupted_run(data, tmp_path, monkeypatch):
    import nose.shrink.healing as healing

    tok, rows, val = data
    cfg = HealConfig(steps=6, loss="kd", lr=1e-2, batch_size=2)
    full = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    heal(full, uniform([2], "skip"), rows, val, cfg, state_path=tmp_path / "a.pt", save_every=3)

    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    real, calls = healing.loss_value, []

    def killed_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # the process dies in step 5; the state saved after step 3 survives
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(healing, "loss_value", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        heal(lm, uniform([2], "skip"), rows, val, cfg, state_path=tmp_path / "b.pt", save_every=3)
    monkeypatch.setattr(healing, "loss_value", real)
    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)  # a new process
    history = heal(lm, uniform([2], "skip"), rows, val, cfg, state_path=tmp_path / "b.pt", save_every=3, resume=True)
    assert [s["step"] for s in history.steps] == [1, 2, 3, 4, 5, 6]
    for (name, p), q in zip(full.model.named_parameters(), lm.model.parameters()):
        assert torch.equal(p, q), name
    other = HealConfig(steps=6, loss="ce", batch_size=2)
    with pytest.raises(NoseError, match="cannot resume healing .* other settings"):
        heal(lm, uniform([2], "skip"), rows, val, other, state_path=tmp_path / "b.pt", resume=True)
    with pytest.raises(NoseError, match="cannot resume healing .* other replacements"):
        heal(lm, uniform([2], "double"), rows, val, cfg, state_path=tmp_path / "b.pt", resume=True)
    with pytest.raises(NoseError, match="cannot resume healing .* other data"):
        heal(lm, uniform([2], "skip"), val, val, cfg, state_path=tmp_path / "b.pt", resume=True)
    retrained = from_module(tiny_model("llama", seed=5, vocab_size=len(tok), intermediate_size=256), tok)
    with pytest.raises(NoseError, match="cannot resume healing .* other model"):
        heal(retrained, uniform([2], "skip"), rows, val, cfg, state_path=tmp_path / "b.pt", resume=True)
    from nose.shrink.healing import HealHistory

    torch.save({"step": 1, "history": HealHistory()}, tmp_path / "old.pt")  # an object: weights_only refuses it
    with pytest.raises(NoseError, match="cannot resume healing .* not a healing state nose can read"):
        heal(lm, uniform([2], "skip"), rows, val, cfg, state_path=tmp_path / "old.pt", resume=True)


@pytest.mark.parametrize("train", ["default", "lora"])
def test_an_error_before_training_leaves_the_model_as_it_came(data, monkeypatch, train):
    import nose.shrink.healing as healing

    tok, rows, val = data
    lm = from_module(tiny_model("llama", vocab_size=len(tok), intermediate_size=256), tok)
    lm.model.get_parameter("model.embed_tokens.weight").requires_grad_(False)  # a frozen tensor stays frozen
    grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    names, before = set(lm.model.state_dict()), {k: v.clone() for k, v in lm.model.state_dict().items()}

    def broken(*args, **kwargs):
        raise RuntimeError("optimizer could not be built")
    monkeypatch.setattr(healing.torch.optim, "AdamW", broken)
    with pytest.raises(RuntimeError, match="optimizer could not be built"):
        heal(lm, uniform([2], "skip"), rows, val, HealConfig(steps=3, loss="kd", train=train))
    assert set(lm.model.state_dict()) == names and not any(isinstance(m, SwitchedAttention) for m in lm.model.modules())
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == grads
