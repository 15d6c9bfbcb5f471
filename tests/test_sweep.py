import json
import shutil

import pytest
from typer.testing import CliRunner

import nose.evaluate.run as run_module
from nose.cli.app import app
from nose.errors import NoseError
from nose.tasks.java_python.benchmark import load_benchmark, select
from nose.model.generation import GenerationConfig
from nose.tasks.java_python.prompt import PROMPT
from nose.evaluate.run import EvalConfig
from nose.evaluate.sweep import Order, sweep
from nose.model.loading import load_model
from nose.data.calibration import build_calibration
from nose.search.config import SearchConfig
from nose.search.run import run_search

IDS = ["l1-000", "l3-001"]
runner = CliRunner()


@pytest.fixture
def setup(saved_tiny, tmp_path):
    """A tiny model folder, its loaded model, and two searches on it (last and random)."""
    path = saved_tiny("llama")
    lm = load_model(str(path))
    calib = build_calibration(lm.tokenizer, "stdlib", samples=4, seq_len=32)
    for criterion in ("last", "random"):
        run_search(lm, calib, SearchConfig(steps=3, criterion=criterion, seed=1), out_dir=tmp_path / criterion)
    return path, lm


def run(bench, lm, orders, out, ks=(1, 2)):
    samples = select(load_benchmark(bench), ids=IDS)
    return sweep(lm, orders, list(ks), samples, PROMPT, GenerationConfig(max_new_tokens=4, batch_size=2),
                 EvalConfig(), out, str(bench))


def counting_generate(monkeypatch) -> list:
    calls = []
    real = run_module.generate_transformers
    monkeypatch.setattr(run_module, "generate_transformers",
                        lambda model, tok, prompts, cfg, **kw: calls.append(len(prompts)) or real(model, tok, prompts, cfg, **kw))
    return calls


def test_order_specs(setup, tmp_path):
    forward = Order.parse(str(tmp_path / "last"))
    assert forward.layers == (5, 4, 3) and forward.label == "last" and not forward.reverse
    back = Order.parse(f"anti={tmp_path / 'last' / 'search.json'}:reverse")
    assert back.layers == (3, 4, 5) and back.label == "anti" and back.reverse
    assert Order.parse(str(tmp_path / "random")).label == "random seed 1"
    with pytest.raises(NoseError, match="no search.json"):
        Order.parse(str(tmp_path / "missing"))


def test_sweep_rows_share_evaluations_and_resume(setup, tmp_path, monkeypatch, tiny_bench):
    _, lm = setup
    orders = [Order.parse(str(tmp_path / "last")), Order.parse(f"{tmp_path / 'last'}:reverse")]
    calls = counting_generate(monkeypatch)
    out = tmp_path / "sweep"
    rec = run(tiny_bench, lm, orders, out)
    assert sum(calls) == 2 * 5  # k=0 once for both orders, then 2 distinct sets per order
    assert rec["complete"] and rec["k"] == [0, 1, 2]
    assert sorted(rec["evals"]) == ["skip-3", "skip-3-4", "skip-4-5", "skip-5", "skip-none"]
    rows = {(r["order"], r["k"]): r for r in rec["rows"]}
    assert len(rows) == 6 and rows[("last", 0)]["eval"] == rows[("last reverse", 0)]["eval"] == "skip-none"
    assert rows[("last", 2)]["layers"] == [5, 4] and rows[("last reverse", 2)]["layers"] == [3, 4]
    flops = [rows[("last", k)]["flops"] for k in (0, 1, 2)]
    params = [rows[("last", k)]["attention_parameters"] for k in (0, 1, 2)]
    assert flops[0] > flops[1] > flops[2] and params[0] * 4 == params[2] * 6
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rec["rows"]))
    for name in rec["evals"]:
        assert (out / "evals" / name / "results.json").exists()
    # a second run reuses every finished evaluation; a removed one is the only one redone
    calls.clear()
    again = run(tiny_bench, lm, orders, out)
    assert calls == [] and again["rows"] == rec["rows"]
    shutil.rmtree(out / "evals" / "skip-3-4")
    samples = select(load_benchmark(tiny_bench), ids=IDS)
    partial = sweep(lm, orders, [1, 2], samples, PROMPT, GenerationConfig(max_new_tokens=4, batch_size=2),
                    EvalConfig(), out, str(tiny_bench), collect_only=True)
    assert calls == [] and partial["missing"] == ["skip-3-4"] and not partial["complete"]
    assert ("last reverse", 2) not in {(r["order"], r["k"]) for r in partial["rows"]} and len(partial["rows"]) == 5
    third = run(tiny_bench, lm, orders, out)
    assert sum(calls) == 2 and third["rows"] == rec["rows"]
    # other generation settings are not mixed with the old files
    with pytest.raises(NoseError, match="other settings"):
        samples = select(load_benchmark(tiny_bench), ids=IDS)
        sweep(lm, orders, [1], samples, PROMPT, GenerationConfig(max_new_tokens=5, batch_size=2),
              EvalConfig(), out, str(tiny_bench))


def cli(*args):
    return runner.invoke(app, ["sweep", *map(str, args)])


def test_cli_sweep_and_errors(setup, tmp_path, tiny_bench):
    path, _ = setup
    common = ["--model", path, "--benchmark", tiny_bench, "--ids", ",".join(IDS), "--max-new-tokens", 3]
    out = tmp_path / "cli"
    res = cli("--criteria", f"{tmp_path / 'last'},{tmp_path / 'random'}", "--k", "1,3", *common, "--out", out)
    assert res.exit_code == 0, res.output
    assert "| k | last | random seed 1 | parameters | FLOPs |" in res.stdout
    assert "| k | random seed 1 − last |" in res.stdout
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert [r["k"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == [0, 1, 3, 0, 1, 3]
    res = cli("--criteria", f"{tmp_path / 'last'},{tmp_path / 'random'}", "--k", "1,3", *common, "--out", out,
              "--collect-only", "--reference", "random seed 1")
    assert res.exit_code == 0 and "| k | last − random seed 1 |" in res.stdout, res.output
    cases = [
        (["--criteria", tmp_path / "last", "--k", "1,4"], "k=4 is larger than the 3 layers in the order of last"),
        (["--criteria", tmp_path / "nothing", "--k", "1"], "no search.json"),
        (["--criteria", f"{tmp_path / 'last'},{tmp_path / 'last'}", "--k", "1"], "share a label"),
        (["--criteria", tmp_path / "last", "--k", "0"], "--k must list positive layer counts"),
        (["--criteria", tmp_path / "last", "--k", "1", "--reference", "nose"], "--reference 'nose' is not one"),
    ]
    for args, message in cases:
        never = tmp_path / "never"
        res = cli(*args, *common, "--out", never)
        assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
        assert not never.exists()
    other = tmp_path / "other-model"
    shutil.copytree(path, other)
    from nose.testing import save_tiny

    save_tiny(other, "llama", seed=7)
    res = cli("--criteria", tmp_path / "last", "--k", "1", *common[2:], "--model", other, "--out", tmp_path / "never")
    assert res.exit_code == 2 and "searched on other weights" in res.stderr


def test_paired_ca_difference():
    from nose.report.sweep_report import paired_ca_difference

    same = {f"s{i}": i % 3 == 0 for i in range(40)}
    assert paired_ca_difference(same, same) == (0.0, 0.0, 0.0)
    better = {k: True for k in same}
    d, lo, hi = paired_ca_difference(better, same)
    assert d == pytest.approx(100 * 26 / 40) and lo < d < hi and lo > 0
    d2, lo2, hi2 = paired_ca_difference(same, better)
    assert d2 == -d and hi2 < 0


def test_sweep_with_linear_replacements_fits_each_layer_set(setup, tmp_path, tiny_bench):
    from nose.replace.ridge import FitConfig
    from nose.shrink.pipeline import fitter

    _, lm = setup
    orders = [Order.parse(str(tmp_path / "last"))]
    fitted = []
    fit = fitter(lm, "linear", "stdlib", FitConfig(samples=4, seq_len=32))
    rec = sweep(lm, orders, [1, 2], select(load_benchmark(tiny_bench), ids=IDS), PROMPT,
                GenerationConfig(max_new_tokens=4, batch_size=2), EvalConfig(), tmp_path / "lin", str(tiny_bench),
                fitter=lambda layers: fitted.append(layers) or fit(layers))
    assert fitted == [[5], [4, 5]] and rec["mode"] == "linear"
    assert sorted(rec["evals"]) == ["linear-4-5", "linear-5", "skip-none"]
    rows = {r["k"]: r for r in rec["rows"]}
    assert rows[0]["replacement_parameters"] == 0 and rows[2]["replacement_parameters"] == 2 * 64 * 64
    saved = json.loads((tmp_path / "lin" / "evals" / "linear-5" / "results.json").read_text())
    assert saved["replacements"]["5"]["kind"] == "linear"
