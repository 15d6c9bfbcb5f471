"""The closed-form linear replacement: sequential ridge fits against a naive computation."""

import pytest
import torch

from nose.errors import NoseError
from nose.model.replacements import FeatureLinear, Linear
from nose.model.switches import attention_switched
from nose.data.calibration import build_calibration
from nose.replace.ridge import FitConfig, fit_linear
from nose.testing import tiny_loaded


@torch.no_grad()
def naive_pairs(lm, calib, layer, earlier: dict, heldout_every: int, previous_mlp: bool = False):
    """(LN1(x), Attn(LN1(x))) of ``layer`` for every real token, from full forwards with the
    earlier replacements switched in; split into fit rows and held-out rows. ``previous_mlp``:
    the features are the previous layer's MLP activation (its down-projection's input) instead of
    LN1(x) (a folded replacement)."""
    decoder = lm.adapter.layers_of(lm.model)
    seen = {}
    h1 = decoder[layer].self_attn.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(n=kwargs.get("hidden_states", args[0] if args else None), a=out[0]),
        with_kwargs=True)
    h2 = decoder[layer - 1].mlp.down_proj.register_forward_hook(
        lambda m, args, out: seen.update(m=args[0])) if previous_mlp else None
    fit, held = ([], []), ([], [])
    try:
        with attention_switched(lm.model, earlier):
            for start in range(calib.samples):
                ids, mask = calib.input_ids[start:start + 1], calib.attention_mask[start:start + 1]
                lm.model(input_ids=ids, attention_mask=mask)
                keep = mask[0].bool()
                part = held if start % heldout_every == heldout_every - 1 else fit
                part[0].append(seen["m" if previous_mlp else "n"][0][keep].double())
                part[1].append(seen["a"][0][keep].double())
    finally:
        h1.remove()
        if h2 is not None:
            h2.remove()
    return [(torch.cat(x), torch.cat(y)) if x else None for x, y in (fit, held)]


def ridge(x, y, alpha):
    a = x.T @ x
    lam = alpha * torch.trace(a) / a.shape[0]
    return torch.linalg.solve(a + lam * torch.eye(a.shape[0], dtype=a.dtype), x.T @ y).T


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_sequential_fit_equals_a_naive_ridge_solution(family, tok, tmp_path):
    folder = tmp_path / "docs"  # rows of unequal length: padding must not enter the fit
    folder.mkdir()
    for i, n in enumerate([2, 9, 4, 12, 6, 3, 8, 5]):
        (folder / f"f{i}.py").write_text(f"value_{i} = {i} * 3\nprint(value_{i})\n" * n)
    calib = build_calibration(tok, str(folder), samples=8, seq_len=64, pack=False)
    assert (calib.attention_mask == 0).any()
    lm = tiny_loaded(family, tok)
    config = FitConfig(samples=8, batch_size=3, heldout_every=4, alphas=(1e-3,))
    fitted, report = fit_linear(lm, [4, 2], calib, config)
    assert sorted(fitted) == [2, 4] and set(report["layers"]) == {"2", "4"}
    w2 = ridge(*(torch.cat(t) for t in zip(*naive_pairs(lm, calib, 2, {}, 4))), 1e-3)
    torch.testing.assert_close(fitted[2].linear_attn.weight.double(), w2, rtol=1e-4, atol=1e-5)
    # layer 4 sees layer 2's replacement: the naive pairs for it come from the switched model
    w4 = ridge(*(torch.cat(t) for t in zip(*naive_pairs(lm, calib, 4, {2: Linear(w2.float())}, 4))), 1e-3)
    torch.testing.assert_close(fitted[4].linear_attn.weight.double(), w4, rtol=1e-4, atol=1e-5)
    for layer in report["layers"].values():
        assert layer["alpha"] == 1e-3 and 0.0 < layer["heldout_relative_error"] < 1.0


@torch.no_grad()
def stream_pairs(lm, calib, layer, earlier: dict):
    """(LN1(x), x* + Attn(LN1(x*)) − x) of ``layer`` for every real token: x from full forwards with
    the earlier replacements switched in, x* from the intact model."""
    decoder = lm.adapter.layers_of(lm.model)
    seen = {}
    hooks = [decoder[layer].register_forward_pre_hook(
                 lambda m, args, kwargs: seen.update(x=kwargs.get("hidden_states", args[0] if args else None)),
                 with_kwargs=True),
             decoder[layer].self_attn.register_forward_hook(
                 lambda m, args, kwargs, out: seen.update(a=out[0]), with_kwargs=True)]
    normed, target = [], []
    try:
        for start in range(calib.samples):
            ids, mask = calib.input_ids[start:start + 1], calib.attention_mask[start:start + 1]
            keep = mask[0].bool()
            lm.model(input_ids=ids, attention_mask=mask)
            goal = (seen["x"] + seen["a"])[0][keep].double()
            with attention_switched(lm.model, earlier):
                lm.model(input_ids=ids, attention_mask=mask)
            x = seen["x"][0][keep]
            normed.append(lm.adapter.attn_norm_of(decoder[layer])(x).double())
            target.append(goal - x.double())
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(normed), torch.cat(target)


def test_stream_target_fits_the_intact_stream(tok, calib):
    """target=stream: the first replaced layer sees no drift (same W as the attention target); a
    later one is fitted to bring the repaired stream back to the intact one."""
    lm = tiny_loaded("qwen2", tok)
    config = FitConfig(samples=6, heldout_every=3, alphas=(1e-3,), target="stream")
    fitted, _ = fit_linear(lm, [1, 3], calib, config)
    plain, _ = fit_linear(lm, [1], calib, FitConfig(samples=6, heldout_every=3, alphas=(1e-3,)))
    torch.testing.assert_close(fitted[1].linear_attn.weight, plain[1].linear_attn.weight, rtol=1e-4, atol=1e-5)
    w3 = ridge(*stream_pairs(lm, calib, 3, {1: fitted[1]}), 1e-3)
    torch.testing.assert_close(fitted[3].linear_attn.weight.double(), w3, rtol=1e-4, atol=1e-5)
    attention_target, _ = fit_linear(lm, [1, 3], calib, FitConfig(samples=6, heldout_every=3, alphas=(1e-3,)))
    assert not torch.allclose(attention_target[3].linear_attn.weight, fitted[3].linear_attn.weight, atol=1e-4)


def test_ridge_strength_is_chosen_on_held_out_rows(tok, calib):
    lm = tiny_loaded("llama", tok)
    fitted, report = fit_linear(lm, [3], calib, FitConfig(samples=6, heldout_every=3))
    (fit_rows, held_rows) = naive_pairs(lm, calib, 3, {}, 3)
    errors = {}
    for alpha in FitConfig().alphas:
        w = ridge(*fit_rows, alpha)
        errors[alpha] = float(((held_rows[1] - held_rows[0] @ w.T) ** 2).sum() / (held_rows[1] ** 2).sum())
    best = min(errors, key=errors.get)
    assert report["layers"]["3"]["alpha"] == best
    assert report["layers"]["3"]["heldout_relative_error"] == pytest.approx(errors[best], rel=1e-6)
    # the fitted map is a better stand-in than nothing: lower KL to the intact model than skip
    ids, mask = calib.input_ids, calib.attention_mask
    with torch.no_grad():
        intact = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask).logits, -1)
        kl = {}
        for name, switch in (("skip", [3]), ("linear", fitted)):
            with attention_switched(lm.model, switch):
                logq = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask).logits, -1)
            kl[name] = float((intact.exp() * (intact - logq)).sum(-1).mean())
    assert kl["linear"] < kl["skip"]


class _Squares(FeatureLinear):
    """Linear in [n, n²]: a replacement whose W is not square (what ``kind`` is for)."""

    kind = "squares-test"

    @staticmethod
    def features(normed, previous_mlp=None):
        return torch.cat([normed, normed ** 2], -1)


def test_fit_regresses_on_the_features_of_the_replacement_kind(tok, calib):
    lm = tiny_loaded("llama", tok)
    config = FitConfig(samples=6, heldout_every=3, alphas=(1e-3,))
    fitted, report = fit_linear(lm, [3], calib, config, kind=_Squares)
    assert isinstance(fitted[3], _Squares)
    normed, out = (torch.cat(t) for t in zip(*naive_pairs(lm, calib, 3, {}, 3)))
    w = ridge(_Squares.features(normed), out, 1e-3)
    assert w.shape == (normed.shape[1], 2 * normed.shape[1])
    torch.testing.assert_close(fitted[3].linear_attn.weight.double(), w, rtol=1e-4, atol=1e-5)
    plain, plain_report = fit_linear(lm, [3], calib, config)
    assert report["layers"]["3"]["heldout_relative_error"] != plain_report["layers"]["3"]["heldout_relative_error"]


def test_fit_reads_every_conversation_of_chat_data_by_default(tok, tmp_path):
    import json

    from nose.shrink.pipeline import fit_rows

    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"translate f{i}"},
                                                     {"role": "assistant", "content": f"def f{i}(): return {i}"}]})
                            + "\n\n" for i in range(70)))  # blank lines are not conversations
    lm = tiny_loaded("llama", tok)
    assert fit_rows(lm, str(chat), FitConfig(seq_len=64), log=print).samples == 70
    assert fit_rows(lm, str(chat), FitConfig(samples=5, seq_len=64), log=print).samples == 5


def test_fit_settings_are_checked(tok, calib):
    lm = tiny_loaded("llama", tok)
    with pytest.raises(NoseError, match="out of range"):
        fit_linear(lm, [9], calib)
    with pytest.raises(NoseError, match="--fit-samples >= 2"):
        fit_linear(lm, [2], calib, FitConfig(samples=1))
    with pytest.raises(NoseError, match="unknown --fit-target 'residual'; choose attention or stream"):
        fit_linear(lm, [2], calib, FitConfig(target="residual"))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_folded_fit_regresses_the_attention_on_the_previous_mlp_activation(family, tok, calib):
    from nose.model.replacements import Folded

    lm = tiny_loaded(family, tok)
    config = FitConfig(samples=6, batch_size=4, heldout_every=1000, alphas=(1e-3,))  # no row held out
    fitted, report = fit_linear(lm, [2, 4], calib, config, kind=Folded)
    assert all(isinstance(r, Folded) for r in fitted.values())
    w2 = ridge(*naive_pairs(lm, calib, 2, {}, 1000, previous_mlp=True)[0], 1e-3)
    torch.testing.assert_close(fitted[2].linear_attn.weight.double(), w2, rtol=1e-4, atol=1e-5)
    # layer 4 is fitted with layer 2's fold in place (fed its MLP activation batch by batch)
    w4 = ridge(*naive_pairs(lm, calib, 4, {2: fitted[2]}, 1000, previous_mlp=True)[0], 1e-3)
    torch.testing.assert_close(fitted[4].linear_attn.weight.double(), w4, rtol=1e-4, atol=1e-5)
    with pytest.raises(NoseError, match="layer 0 has no previous MLP"):
        fit_linear(lm, [0, 2], calib, config, kind=Folded)


def test_candidates_fitted_in_groups_equal_one_pass(tok, calib):
    """fit_each bounds its float64 moments by fitting the candidates in groups (one forward per
    group): the maps and errors do not depend on the grouping."""
    from nose.model.replacements import Folded
    from nose.replace.ridge import fit_each

    lm = tiny_loaded("qwen2", tok)
    config = FitConfig(batch_size=4, heldout_every=3)
    state = {3: Folded(0.05 * torch.randn(64, lm.model.config.intermediate_size))}
    one, e_one = fit_each(lm, [1, 2, 4, 5], calib, state, config, kind=Folded)
    per_candidate = 16 * 128 * (128 + 64)  # bytes of one candidate's moments (intermediate 128, hidden 64)
    grouped, e_grouped = fit_each(lm, [1, 2, 4, 5], calib, state, config, kind=Folded, moment_bytes=per_candidate)
    assert e_one == pytest.approx(e_grouped, rel=1e-9)
    for i in one:
        assert one[i].linear_attn.weight.shape == (64, 128)
        torch.testing.assert_close(grouped[i].linear_attn.weight, one[i].linear_attn.weight, rtol=1e-5, atol=1e-6)
