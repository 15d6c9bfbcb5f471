"""k from a budget (nose shrink --max-drop / --kv-budget): the bisection, the KV floor, the CLI."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from nose.cli.app import app
from nose.errors import NoseError
from nose.shrink.budget import Budget, allowance, choose_cut, kv_floor, largest_within, parse_share

runner = CliRunner()


@pytest.mark.parametrize("kept,floor,want", [
    ([1.0, 0.99, 0.97, 0.96, 0.93, 0.90, 0.80, 0.70], 0.95, 4),
    ([1.0, 0.99, 0.97, 0.96, 0.93, 0.90, 0.80, 0.70], 0.60, 8),
    ([0.90, 0.80], 0.95, None),
    ([0.97], 0.95, 1),
])
def test_bisection_finds_the_largest_k_within_the_floor_in_few_scores(kept, floor, want):
    calls = []

    def score(k):
        calls.append(k)
        return kept[k - 1]

    assert largest_within(1, len(kept), score, floor) == want
    assert len(calls) <= len(kept).bit_length() + 1  # log2(steps) + 1 scored models, not all of them


def test_a_drop_budget_records_every_score_and_says_when_no_cut_meets_it():
    order = [9, 3, 5, 7]
    accuracy = {1: 0.60, 2: 0.58, 3: 0.50, 4: 0.40}
    k, record = choose_cut(order, 12, Budget(max_drop=0.05), lambda layers: accuracy[len(layers)], 0.60)
    assert k == 2 and record["k"] == 2 and record["kv_kept"] == pytest.approx(10 / 12)
    assert record["scores"]["2"] == {"layers": [9, 3], "accuracy": 0.58, "kept": pytest.approx(0.58 / 0.60)}
    assert "4" not in record["scores"] or record["scores"]["4"]["kept"] < 0.95
    # with a KV floor of 3 layers, only k >= 3 may be chosen, and k = 3 keeps 83 %
    with pytest.raises(NoseError, match=r"no cut meets the budget: removing the first 3 layers of the order \[9, 3, 5\] "
                                        r"keeps 83.3% .* with --kv-budget"):
        choose_cut(order, 12, Budget(max_drop=0.05, kv_budget=0.75), lambda layers: accuracy[len(layers)], 0.60)
    with pytest.raises(NoseError, match="the intact model passes none of the held-out tests"):
        choose_cut(order, 12, Budget(max_drop=0.05), lambda layers: 0.0, 0.0)


def test_the_allowance_says_when_one_answer_decides_the_budget():
    small = allowance(0.05, 25, 39)
    assert small.startswith("budget: --max-drop 5.0% lets the repaired model lose 1.25 of the 25 held-out tests")
    assert "one answer decides" in small
    assert "one answer decides" not in allowance(0.05, 108, 164)  # 5.4 tests


def test_kv_floor_and_shares():
    assert kv_floor(0.75, 24, list(range(8))) == 6  # 18 of 24 attention layers keep 75 % of the KV cache
    assert kv_floor(0.76, 24, list(range(8))) == 6
    assert kv_floor(None, 24, [1]) == 1 and kv_floor(1.0, 24, [1]) == 1
    with pytest.raises(NoseError, match="--kv-budget 50% needs 12 of the 24 attention layers removed; the search "
                                        "selected 8: run nose search --steps 12"):
        kv_floor(0.5, 24, list(range(8)))
    assert parse_share("5%", "--max-drop") == pytest.approx(0.05) and parse_share("0.05", "--max-drop") == 0.05
    with pytest.raises(NoseError, match="--max-drop takes a share such as 5% or 0.05, got 'five'"):
        parse_share("five", "--max-drop")
    with pytest.raises(NoseError, match="--kv-budget must be above 0 %"):
        Budget(kv_budget=0).validate()


@pytest.fixture
def searched(saved_tiny, tmp_path):
    model = saved_tiny("llama", intermediate_size=256)  # a width the DeciLM layout can express
    res = runner.invoke(app, ["search", "--model", str(model), "--criterion", "kl", "--steps", "3", "--samples", "4",
                              "--seq-len", "32", "--bootstrap", "0", "--calibration", "stdlib",
                              "--out", str(tmp_path / "search")])
    assert res.exit_code == 0, res.output
    return model, tmp_path / "search", json.loads((tmp_path / "search" / "search.json").read_text())["order"]


def test_cli_kv_budget_picks_the_cut_and_records_it(searched, tmp_path):
    model, search, order = searched
    common = ["shrink", "--model", str(model), "--search", str(search), "--replace", "skip", "--steps", "0",
              "--data", "stdlib"]
    res = runner.invoke(app, [*common, "--kv-budget", "70%", "--out", str(tmp_path / "kv")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "kv" / "nose.json").read_text())
    assert meta["removed_attention"] == sorted(order[:2]) and meta["k"] == 2  # ceil(0.3 x 6) = 2 of 6 layers
    assert meta["budget"]["kv_budget"] == pytest.approx(0.7) and meta["budget"]["kv_kept"] == pytest.approx(4 / 6)
    assert meta["search_replace"] == "linear"  # the search's default: the order assumes the repair
    assert "the search scored its order under --replace linear; with --replace skip" in res.stderr
    bad = runner.invoke(app, [*common, "--kv-budget", "30%", "--out", str(tmp_path / "never")])
    assert bad.exit_code == 2 and "--kv-budget 30% needs 5 of the 6 attention layers removed" in bad.stderr
    assert not (tmp_path / "never").exists()
    both = runner.invoke(app, [*common, "--kv-budget", "70%", "--k", "2", "--out", str(tmp_path / "never")])
    assert both.exit_code == 2 and "pass --k or a budget" in both.stderr


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs javac (a JDK) to run the Java")
def test_cli_max_drop_needs_an_intact_model_that_passes_tests(searched, tmp_path):
    """A tiny random model translates nothing: the drop cannot be measured, and no checkpoint is written."""
    model, search, _ = searched
    methods = tmp_path / "methods.jsonl"
    methods.write_text(json.dumps({"name": "addOne", "java": "public static int addOne(int x) { return x + 1; }"}) + "\n")
    res = runner.invoke(app, ["shrink", "--model", str(model), "--search", str(search), "--replace", "skip",
                              "--steps", "0", "--data", "stdlib", "--max-drop", "5%", "--budget-methods", str(methods),
                              "--out", str(tmp_path / "never")], env={"NOSE_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 2, res.output
    assert "the intact model passes none of the held-out tests" in res.stderr
    assert not (tmp_path / "never").exists()
