import json

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.naive_search import naive_search
from nose.cli.app import app
from nose.errors import NoseError
from nose.search.calibration import build_calibration
from nose.search.config import CRITERIA, SearchConfig
from nose.search.run import run_search
from nose.testing import tiny_loaded

STEP_KEYS = {"step", "base_value", "candidates", "selected", "score", "ci95", "runner_up", "runner_up_score",
             "p_win", "separated", "removed_before", "seconds"}
runner = CliRunner()


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_every_criterion_writes_the_same_record_shape(criterion, tok, calib, tmp_path):
    lm = tiny_loaded("qwen2", tok)
    rec = run_search(lm, calib, SearchConfig(steps=3, criterion=criterion, bootstrap=30), out_dir=tmp_path)
    assert json.loads((tmp_path / "search.json").read_text()) == json.loads(json.dumps(rec))
    assert rec["settings"]["criterion"] == criterion and rec["score"] == CRITERIA[criterion]
    assert rec["complete"] and len(rec["order"]) == len(set(rec["order"])) == 3 and 0 not in rec["order"]
    for k, step in enumerate(rec["steps"]):
        assert STEP_KEYS <= set(step)
        layers = [c["layer"] for c in step["candidates"]]
        assert layers == sorted(set(range(1, 6)) - set(rec["order"][:k]))  # every remaining candidate, once
        assert step["removed_before"] == sorted(rec["order"][:k])
        assert step["score"] == min(c["score"] for c in step["candidates"])  # lowest score is removed


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_criteria_are_deterministic_for_a_seed(criterion, tok, calib):
    lm = tiny_loaded("llama", tok)
    cfg = SearchConfig(steps=4, criterion=criterion, bootstrap=20, seed=3)
    first, again = run_search(lm, calib, cfg), run_search(lm, calib, cfg)
    assert first["order"] == again["order"]
    assert [s["ci95"] for s in first["steps"]] == [s["ci95"] for s in again["steps"]]


def test_random_depends_on_its_seed_and_last_is_deepest_first(tok, calib):
    lm = tiny_loaded("llama", tok)
    orders = {tuple(run_search(lm, calib, SearchConfig(steps=5, criterion="random", seed=s))["order"])
              for s in range(6)}
    assert len(orders) > 1 and all(sorted(o) == [1, 2, 3, 4, 5] for o in orders)
    last = run_search(lm, calib, SearchConfig(steps=3, criterion="last", protect=[4]))
    assert last["order"] == [5, 3, 2]


@torch.no_grad()
def direct_cosine(lm, calib) -> dict[int, float]:
    """1 − cos(x, h) averaged over counted tokens, with x the layer input from
    ``output_hidden_states`` and h = x + Attn(LN1(x)) the input of the post-attention norm."""
    layers = lm.adapter.layers_of(lm.model)
    post = {}
    handles = [layer.post_attention_layernorm.register_forward_hook(
        lambda m, args, out, i=i: post.__setitem__(i, args[0])) for i, layer in enumerate(layers)]
    total = {i: 0.0 for i in range(len(layers))}
    count = 0
    try:
        for start in range(0, calib.samples, 2):
            ids, mask = calib.input_ids[start:start + 2], calib.attention_mask[start:start + 2]
            hidden = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            keep = mask.bool()
            for i in range(len(layers)):
                x, h = hidden[i][keep].double(), post[i][keep].double()
                cos = (x * h).sum(-1) / (x.norm(dim=-1) * h.norm(dim=-1))
                total[i] += float((1 - cos).sum())
            count += int(keep.sum())
    finally:
        for h in handles:
            h.remove()
    return {i: v / count for i, v in total.items()}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_cosine_equals_a_direct_computation(family, tok, tmp_path):
    folder = tmp_path / "docs"  # documents of unequal length: padding must not count
    folder.mkdir()
    for i, n in enumerate([1, 20, 3, 9]):
        (folder / f"f{i}.py").write_text(f"value_{i} = {i} * 3\nprint(value_{i})\n" * n)
    cal = build_calibration(tok, str(folder), samples=4, seq_len=64, pack=False)
    assert (cal.attention_mask == 0).any()
    lm = tiny_loaded(family, tok)
    rec = run_search(lm, cal, SearchConfig(steps=5, criterion="cosine", bootstrap=0, batch_size=3))
    direct = direct_cosine(lm, cal)
    for c in rec["steps"][0]["candidates"]:
        assert c["score"] == pytest.approx(direct[c["layer"]], rel=1e-4, abs=1e-7)
    assert rec["order"] == sorted(range(1, 6), key=lambda i: direct[i])


@pytest.mark.parametrize("family,mode", [("llama", "skip"), ("qwen2", "skip"), ("llama", "double")])
def test_loss_equals_the_naive_oracle(family, mode, tok, calib):
    lm = tiny_loaded(family, tok)
    fast = run_search(lm, calib, SearchConfig(steps=3, criterion="loss", mode=mode, bootstrap=0))
    naive = naive_search(lm, calib, 3, mode=mode, criterion="loss")
    assert fast["order"] == naive["order"]
    assert fast["settings"]["target"] == "logits"
    for k, step in enumerate(fast["steps"]):
        assert step["base_value"] == pytest.approx(naive["steps"][k]["base"], abs=1e-5)
        for c in step["candidates"]:
            assert c["score"] == pytest.approx(naive["steps"][k]["candidates"][c["layer"]], abs=1e-5)


def test_cli_choices_mirror_the_library():
    """The CLI's enums are written out so that ``nose --help`` starts without importing torch."""
    from nose.cli.common import Criterion, Mode
    from nose.model.switches import MODES

    assert {c.value for c in Criterion} == set(CRITERIA)
    assert {m.value for m in Mode} == set(MODES)


def test_criterion_settings_errors(tok, calib):
    lm = tiny_loaded("llama", tok)
    with pytest.raises(NoseError, match="unknown criterion 'entropy'"):
        run_search(lm, calib, SearchConfig(criterion="entropy"))
    with pytest.raises(NoseError, match="--target applies to --criterion nose only"):
        run_search(lm, calib, SearchConfig(criterion="cosine", target="logits"))


def test_cli_criterion(saved_tiny, tmp_path):
    model = saved_tiny("llama")
    fast = ["--samples", "4", "--seq-len", "32", "--bootstrap", "20"]
    res = runner.invoke(app, ["search", "--model", str(model), "--criterion", "cosine", "--steps", "3",
                              "--out", str(tmp_path / "cos"), *fast, "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "cos" / "search.json").read_text())
    assert rec["settings"]["criterion"] == "cosine" and json.loads(res.stdout)["order"] == rec["order"]
    bad = runner.invoke(app, ["search", "--model", str(model), "--criterion", "entropy",
                              "--out", str(tmp_path / "never")])
    assert bad.exit_code == 2 and "entropy" in bad.stderr and not (tmp_path / "never").exists()
    bad = runner.invoke(app, ["search", "--model", str(model), "--criterion", "last", "--target", "logits",
                              "--out", str(tmp_path / "never"), *fast])
    assert bad.exit_code == 2 and "--target applies to --criterion nose only" in bad.stderr
    # a search of another criterion in the same folder is not resumed
    again = runner.invoke(app, ["search", "--model", str(model), "--criterion", "random", "--steps", "3",
                                "--out", str(tmp_path / "cos"), *fast, "--resume"])
    assert again.exit_code == 2 and "--criterion was 'cosine'" in again.stderr
