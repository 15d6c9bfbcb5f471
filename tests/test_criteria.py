import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from nose.testing.naive_search import naive_search
from nose.cli.app import app
from nose.errors import NoseError
from nose.data.calibration import build_calibration
from nose.search.config import SearchConfig
from nose.search.criteria import CRITERIA
from nose.replace import ridge
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
    assert rec["settings"]["criterion"] == criterion and rec["score"] == CRITERIA[criterion].record()
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


def assert_equals_oracle(fast, naive, abs_tol=1e-5):
    assert fast["order"] == naive["order"]
    for k, step in enumerate(fast["steps"]):
        assert step["base_value"] == pytest.approx(naive["steps"][k]["base"], abs=abs_tol)
        for c in step["candidates"]:
            assert c["score"] == pytest.approx(naive["steps"][k]["candidates"][c["layer"]], abs=abs_tol)


@pytest.mark.parametrize("criterion", ["loss", "kl", "nose-abs"])
@pytest.mark.parametrize("family,mode", [("llama", "skip"), ("qwen2", "skip"), ("llama", "double")])
def test_greedy_criteria_equal_the_naive_oracle(criterion, family, mode, tok, calib):
    lm = tiny_loaded(family, tok)
    fast = run_search(lm, calib, SearchConfig(steps=3, criterion=criterion, mode=mode, bootstrap=0))
    naive = naive_search(lm, calib, 3, mode=mode, criterion=criterion)
    assert_equals_oracle(fast, naive)
    assert fast["settings"]["target"] == (CRITERIA[criterion].target or "final")
    if criterion == "kl":  # KL of the intact model to itself is zero; removing attention costs some
        assert fast["steps"][0]["base_value"] == pytest.approx(0.0, abs=1e-6)
        assert all(c["score"] > 0 for c in fast["steps"][0]["candidates"])


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    """Chat transcripts of uneven length: a prompt and an answer each."""
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    records = [{"messages": [{"role": "user", "content": f"translate int f{i}(int x) {{ return x * {i}; }}" * (1 + i % 3)},
                             {"role": "assistant", "content": f"def f{i}(x):\n    return x * {i}\n" * (1 + i % 2)}]}
               for i in range(7)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("criterion", ["kl", "loss", "nose"])
def test_answer_only_statistics_equal_the_oracle(criterion, tok, chat_file):
    answer = build_calibration(tok, str(chat_file), samples=7, seq_len=96, count="answer")
    every = build_calibration(tok, str(chat_file), samples=7, seq_len=96, count="all")
    assert 0 < answer.counted_tokens < every.counted_tokens == every.tokens
    assert (answer.attention_mask == 0).any() and answer.sha256() != every.sha256()
    lm = tiny_loaded("llama", tok)
    for cal in (answer, every):
        fast = run_search(lm, cal, SearchConfig(steps=2, criterion=criterion, bootstrap=0, batch_size=3))
        assert_equals_oracle(fast, naive_search(lm, cal, 2, criterion=criterion, batch_size=3))
        assert fast["calibration"]["count"] == cal.count


def test_kl_has_bootstrap_intervals(tok, calib):
    lm = tiny_loaded("qwen2", tok)
    rec = run_search(lm, calib, SearchConfig(steps=2, criterion="kl", bootstrap=100, seed=2))
    for step in rec["steps"]:
        intervals = [c["ci95"] for c in step["candidates"]]
        assert all(0.0 <= lo <= hi for lo, hi in intervals)  # a KL is never negative
        assert len({tuple(i) for i in intervals}) == len(intervals)
        assert isinstance(step["separated"], bool) and 0.0 <= step["p_win"] <= 1.0


def test_replicates_without_counted_tokens_are_left_out_not_zero():
    import numpy as np

    from nose.search.loss import LossStats
    from nose.search.steps import step_record

    stats = LossStats([np.array([2.0, 0.0, 4.0])], [np.array([1.0, 0.0, 2.0])])  # row 1 counts nothing
    w = np.array([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0], [0.0, 1.0, 2.0]])
    boot = stats.bootstrap(w)
    assert boot[0] == 2.0 and np.isnan(boot[1]) and boot[2] == 2.0  # not a loss of 0
    rec = step_record(0, {1: 0.5, 2: 0.7}, {1: np.array([0.4, np.nan, 0.6]), 2: np.array([0.6, np.nan, 0.8])})
    assert rec["ci95"] == pytest.approx([0.405, 0.595]) and rec["p_win"] == 1.0 and rec["separated"]


def test_cli_choices_mirror_the_library():
    """The CLI's enums are written out so that ``nose --help`` starts without importing torch."""
    from nose.cli.common import REPLACE_KINDS, Criterion
    from nose.replace import KINDS

    assert {c.value for c in Criterion} == set(CRITERIA)
    assert list(REPLACE_KINDS) == list(KINDS)


def test_criterion_settings_errors(tok, calib):
    lm = tiny_loaded("llama", tok)
    with pytest.raises(NoseError, match="unknown criterion 'entropy'"):
        run_search(lm, calib, SearchConfig(criterion="entropy"))
    with pytest.raises(NoseError, match="--target applies to --criterion nose or nose-abs only"):
        run_search(lm, calib, SearchConfig(criterion="cosine", target="logits"))
    with pytest.raises(NoseError, match="--target applies to --criterion nose or nose-abs only; kl"):
        run_search(lm, calib, SearchConfig(criterion="kl", target="layer:2"))
    with pytest.raises(NoseError, match="--screen applies to greedy criteria only; cosine"):
        run_search(lm, calib, SearchConfig(criterion="cosine", screen=3))
    with pytest.raises(NoseError, match="--screen must be 0"):
        run_search(lm, calib, SearchConfig(criterion="kl", screen=-1))


def first_rows(cal, n: int):
    """The first ``n`` rows of a calibration set."""
    return dataclasses.replace(cal, input_ids=cal.input_ids[:n], attention_mask=cal.attention_mask[:n],
                               count_mask=cal.count_mask[:n])


@pytest.mark.parametrize("criterion,mode", [("kl", "skip"), ("loss", "skip"), ("kl", "linear")])
def test_screen_scores_every_candidate_on_the_first_batch_and_the_best_on_every_row(criterion, mode, tok, calib):
    lm = tiny_loaded("llama", tok)
    settings = dict(criterion=criterion, mode=mode, bootstrap=0, batch_size=2)
    exact = run_search(lm, calib, SearchConfig(steps=2, **settings))
    screened = run_search(lm, calib, SearchConfig(steps=2, screen=2, **settings))
    assert screened["settings"]["screen"] == 2 and exact["settings"]["screen"] == 0
    whole, step = exact["steps"][0], screened["steps"][0]
    kept = {c["layer"]: c for c in step["candidates"]}
    out = {c["layer"]: c["screen_score"] for c in step["screened_out"]}
    assert len(kept) == 2 and sorted([*kept, *out]) == [c["layer"] for c in whole["candidates"]] == [1, 2, 3, 4, 5]
    assert step["screen_rows"] == 2
    assert max(c["screen_score"] for c in kept.values()) <= min(out.values())
    # the kept candidates read every row exactly as the exact search reads them
    assert all(kept[c["layer"]]["score"] == c["score"] for c in whole["candidates"] if c["layer"] in kept)
    if whole["selected"] in kept:
        assert step["selected"] == whole["selected"]
    if mode == "skip":  # the screen score is the criterion on the first batch's rows alone
        head = run_search(lm, first_rows(calib, 2), SearchConfig(steps=1, **settings))
        screen = {**out, **{i: c["screen_score"] for i, c in kept.items()}}
        for c in head["steps"][0]["candidates"]:
            assert screen[c["layer"]] == pytest.approx(c["score"], rel=1e-6, abs=1e-9)
    # a screen at least as wide as the candidates is the exact step
    wide = run_search(lm, calib, SearchConfig(steps=2, screen=5, **settings))
    assert wide["order"] == exact["order"] and "screened_out" not in wide["steps"][0]


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
    assert bad.exit_code == 2 and "--target applies to --criterion nose or nose-abs only" in bad.stderr
    # a search of another criterion in the same folder is not resumed
    again = runner.invoke(app, ["search", "--model", str(model), "--criterion", "random", "--steps", "3",
                                "--out", str(tmp_path / "cos"), *fast, "--resume"])
    assert again.exit_code == 2 and "--criterion was 'cosine'" in again.stderr


@pytest.mark.parametrize("criterion,family,kind", [("kl", "llama", "linear"), ("nose", "qwen2", "linear"),
                                                   ("loss", "llama", "linear"), ("kl", "qwen2", "folded"),
                                                   ("nose", "llama", "folded")])
def test_fitted_replacements_equal_the_naive_oracle(criterion, family, kind, tok, calib):
    """--replace linear / folded: each candidate scored with its own map, fitted in the search's
    state (folded: fed the previous layer's MLP activation the prefix runner recorded)."""
    lm = tiny_loaded(family, tok)
    fast = run_search(lm, calib, SearchConfig(steps=3, criterion=criterion, mode=kind, bootstrap=0))
    assert_equals_oracle(fast, naive_search(lm, calib, 3, mode=kind, criterion=criterion))
    skip = run_search(lm, calib, SearchConfig(steps=1, criterion=criterion, bootstrap=0))
    linear_scores = {c["layer"]: c["score"] for c in fast["steps"][0]["candidates"]}
    assert any(abs(c["score"] - linear_scores[c["layer"]]) > 1e-4 for c in skip["steps"][0]["candidates"])
    for step in fast["steps"]:  # how well each candidate's attention was fitted
        errors = step["fit_heldout_relative_error"]
        assert set(errors) == {str(c["layer"]) for c in step["candidates"]}
        assert all(0 <= e < 1.5 for e in errors.values())


@pytest.mark.parametrize("moment_bytes", [None, 1])
def test_reported_work_counts_every_decoder_layer_forward_of_the_fits(moment_bytes, tok, calib, monkeypatch):
    """search_speed's accounting: the forwards of fit_each's candidate groups (one candidate a
    group at moment_bytes = 1) are counted with the scoring's."""
    if moment_bytes is not None:
        monkeypatch.setattr(ridge, "MOMENT_BYTES", moment_bytes)
    lm = tiny_loaded("qwen2", tok)
    calls = []
    for layer in lm.adapter.layers_of(lm.model):
        layer.register_forward_pre_hook(lambda *_: calls.append(1))
    fast = run_search(lm, calib, SearchConfig(steps=2, criterion="kl", mode="folded", bootstrap=0))
    assert fast["work"]["layer_forwards"] == len(calls)


def test_linear_mode_fits_every_token_while_counting_answers(tok, chat_file):
    cal = build_calibration(tok, str(chat_file), samples=7, seq_len=96, count="answer")
    lm = tiny_loaded("llama", tok)
    fast = run_search(lm, cal, SearchConfig(steps=2, criterion="kl", mode="linear", bootstrap=0, batch_size=3))
    assert_equals_oracle(fast, naive_search(lm, cal, 2, mode="linear", criterion="kl", batch_size=3))


def test_linear_mode_resumes_with_the_maps_it_scored(tok, calib, tmp_path):
    lm = tiny_loaded("llama", tok)
    full = run_search(lm, calib, SearchConfig(steps=3, criterion="kl", mode="linear", bootstrap=0))
    partial = run_search(lm, calib, SearchConfig(steps=1, criterion="kl", mode="linear", bootstrap=0))
    resumed = run_search(lm, calib, SearchConfig(steps=3, criterion="kl", mode="linear", bootstrap=0),
                         resume=partial)
    assert resumed["order"] == full["order"]
    for a, b in zip(resumed["steps"][1:], full["steps"][1:]):
        assert [c["score"] for c in a["candidates"]] == pytest.approx([c["score"] for c in b["candidates"]], abs=1e-6)
    with pytest.raises(NoseError, match="cannot resume"):  # maps fitted another way are another search
        run_search(lm, calib, SearchConfig(steps=2, criterion="kl", bootstrap=0), resume=partial)


def test_linear_mode_needs_a_greedy_criterion(tok, calib):
    lm = tiny_loaded("llama", tok)
    with pytest.raises(NoseError, match="--replace linear applies to greedy criteria only; cosine"):
        run_search(lm, calib, SearchConfig(steps=2, criterion="cosine", mode="linear"))
    result = runner.invoke(app, ["search", "--replace", "bogus"])
    assert result.exit_code == 2 and "unknown --replace 'bogus'; choose one of skip, double, thesis, linear" \
        in result.stderr


def test_a_bad_option_is_named_before_an_existing_output(tmp_path):
    """After the README's first command the default output folder holds a search: a bad option is still
    the error a user sees, not 'search.json exists'."""
    (tmp_path / "search.json").write_text("{}")
    result = runner.invoke(app, ["search", "--replace", "bogus", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown --replace 'bogus'" in result.stderr
