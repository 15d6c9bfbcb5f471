import pytest
import torch

from nose.errors import NoseError
from nose.model.adapters import adapter_for
from nose.model.switches import SwitchedAttention, attention_switched
from nose.testing import tiny_model

LAYER = 2


def run_capturing(model, ids):
    """Forward the model; return (input x, kwargs, output y) of decoder layer LAYER."""
    adapter = adapter_for(model.config.model_type)
    layer = adapter.layers_of(model)[LAYER]
    seen = {}

    def pre(module, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    def post(module, args, kwargs, output):
        seen["y"] = output[0] if isinstance(output, tuple) else output

    h1 = layer.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = layer.register_forward_hook(post, with_kwargs=True)
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    finally:
        h1.remove()
        h2.remove()
    return seen


def expected_output(model, x, kwargs, mode, m):
    """y = h + MLP(LN2(h)), h = x + M·Attn(LN1 x) + (1 − M)·R(x), written out by hand."""
    layer = adapter_for(model.config.model_type).layers_of(model)[LAYER]
    with torch.no_grad():
        normed = layer.input_layernorm(x)
        attn = layer.self_attn(normed, **kwargs)[0]
        r = {"skip": torch.zeros_like(x), "double": x, "thesis": 2 * normed}[mode]
        h = x + m * attn + (1 - m) * r
        return h + layer.mlp(layer.post_attention_layernorm(h))


@pytest.mark.parametrize("mode", ["skip", "double", "thesis"])
@pytest.mark.parametrize("blend", [0.0, 0.3, "tensor"])
def test_each_mode_matches_its_formula(family, mode, blend):
    model = tiny_model(family)
    ids = torch.randint(0, 512, (2, 9))
    m = torch.linspace(0, 1, model.config.hidden_size) if blend == "tensor" else blend
    with attention_switched(model, [LAYER], mode, blend=m):
        seen = run_capturing(model, ids)
    want = expected_output(model, seen["x"], seen["kwargs"], mode, m)
    torch.testing.assert_close(seen["y"], want, rtol=1e-5, atol=1e-5)


def test_skip_at_zero_is_exactly_the_residual():
    model = tiny_model("llama")
    ids = torch.randint(0, 512, (1, 5))
    with attention_switched(model, [LAYER], "skip"):
        seen = run_capturing(model, ids)
    layer = model.model.layers[LAYER]
    with torch.no_grad():
        want = seen["x"] + layer.mlp(layer.post_attention_layernorm(seen["x"]))
    assert torch.equal(seen["y"], want)


def test_blend_one_is_the_original_model_bit_for_bit():
    model = tiny_model("qwen2")
    ids = torch.randint(0, 512, (2, 8))
    with torch.no_grad():
        base = model(ids).logits
        with attention_switched(model, [0, 3], "double", blend=1.0):
            same = model(ids).logits
    assert torch.equal(base, same)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m), len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()])


def assert_identical(model, snap):
    state, structure = snapshot(model)
    assert structure == snap[1]
    assert state.keys() == snap[0].keys()
    for k in state:
        assert torch.equal(state[k], snap[0][k]), k


@pytest.mark.parametrize("mode", ["skip", "double", "thesis"])
def test_model_is_bit_identical_after_scope_and_after_exception(mode):
    model = tiny_model("llama")
    ids = torch.randint(0, 512, (1, 6))
    before = snapshot(model)
    with torch.no_grad():
        logits = model(ids).logits
        with attention_switched(model, [0, 1, 4], mode):
            assert isinstance(model.model.layers[1].self_attn, SwitchedAttention)
            model(ids)
        assert_identical(model, before)
        with pytest.raises(RuntimeError, match="boom"):
            with attention_switched(model, [2, 5], mode, blend=0.5):
                model(ids)
                raise RuntimeError("boom")
        assert_identical(model, before)
        assert torch.equal(model(ids).logits, logits)


def test_failed_apply_leaves_nothing_switched():
    model = tiny_model("llama")
    before = snapshot(model)
    with pytest.raises(NoseError, match="out of range"):
        attention_switched(model, [1, 99]).apply()
    with pytest.raises(NoseError, match="repeat"):
        attention_switched(model, [1, 1]).apply()
    with attention_switched(model, [3]):
        with pytest.raises(NoseError, match="already switched"):
            attention_switched(model, [2, 3]).apply()
        assert not isinstance(model.model.layers[2].self_attn, SwitchedAttention)
        assert isinstance(model.model.layers[3].self_attn, SwitchedAttention)
    assert_identical(model, before)


def test_bad_mode_and_blend_are_refused():
    model = tiny_model("llama")
    with pytest.raises(NoseError, match="unknown switch mode 'zero'"):
        attention_switched(model, [1], "zero")
    with pytest.raises(NoseError, match=r"\[0, 1\]"):
        attention_switched(model, [1], blend=1.5)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", ["skip", "double", "thesis"])
@pytest.mark.parametrize("layers", [[0], [0, 2, 5], [1, 3, 4]])
def test_greedy_generation_with_cache_equals_without(family, mode, layers):
    model = tiny_model(family)
    ids = torch.randint(0, 512, (2, 7))
    with attention_switched(model, layers, mode):
        cached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_incremental_forward_with_layer0_off_keeps_positions():
    """transformers reads the cache length from layer 0; a skipped layer 0 must still advance it."""
    model = tiny_model("llama")
    ids = torch.randint(0, 512, (1, 7))
    nxt = torch.tensor([[5]])
    with attention_switched(model, [0, 3], "skip"), torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
        step = model(nxt, past_key_values=cache).logits[0, -1]
        full = model(torch.cat([ids, nxt], 1)).logits[0, -1]
        assert cache.get_seq_length() == 8
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
