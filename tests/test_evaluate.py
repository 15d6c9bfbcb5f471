import json

import pytest
from typer.testing import CliRunner

import nose.evaluate.run as run_module
from nose.cli.app import app
from nose.errors import NoseError
from nose.tasks.java_python.benchmark import load_benchmark, select
from nose.model.generation import GenerationConfig
from nose.tasks.java_python.prompt import PROMPT
from nose.evaluate.run import EvalConfig, evaluate
from nose.model.loading import load_model

IDS = ["l1-000", "l2-001", "l3-000", "l4-001"]
runner = CliRunner()


@pytest.fixture
def tiny_lm(saved_tiny):
    return load_model(str(saved_tiny("llama")))


def run(bench, lm, out, ids=IDS, **gen):
    samples = select(load_benchmark(bench), ids=ids)
    return evaluate(lm, samples, PROMPT, GenerationConfig(max_new_tokens=6, batch_size=2, **gen),
                    EvalConfig(efficiency=False), out, str(bench))


def test_results_and_samples_files(tiny_lm, tmp_path, tiny_bench):
    res = run(tiny_bench, tiny_lm, tmp_path)
    assert res["metrics"]["samples"] == 4 and set(res["metrics"]["ca_by_type"]) == {"token", "syntax", "library", "algorithm"}
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == IDS
    for r in lines:
        assert {"prompt", "outputs", "codes", "verdicts", "errors", "bleu", "generation_seconds"} <= set(r)
        assert r["verdicts"][0] in {"passed", "wrong", "error", "timeout", "no_function"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["generation"]["max_new_tokens"] == 6 and saved["versions"]["transformers"]
    assert "Translate the following Java function" in saved["prompt"]["template"]


def test_resume_generates_only_what_is_missing(tiny_lm, tmp_path, monkeypatch, tiny_bench):
    first = run(tiny_bench, tiny_lm, tmp_path)
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    calls = []
    real = run_module.generate_transformers
    monkeypatch.setattr(run_module, "generate_transformers",
                        lambda model, tok, prompts, cfg, **kw: calls.append(len(prompts)) or real(model, tok, prompts, cfg, **kw))
    again = run(tiny_bench, tiny_lm, tmp_path)
    assert sum(calls) == 3
    assert again["metrics"]["ca_percent"] == first["metrics"]["ca_percent"]
    assert len(path.read_text().splitlines()) == 4
    with pytest.raises(NoseError, match="other settings"):
        run(tiny_bench, tiny_lm, tmp_path, seed=5)


def test_sampling_needs_temperature_and_gives_pass_at_k(tiny_lm, tmp_path, tiny_bench):
    with pytest.raises(NoseError, match="--temperature above 0"):
        run(tiny_bench, tiny_lm, tmp_path / "a", n=3)
    res = run(tiny_bench, tiny_lm, tmp_path / "b", ids=IDS[:2], n=3, temperature=0.8)
    assert set(res["metrics"]["pass_at_k"]) == {"1"}
    rec = json.loads((tmp_path / "b" / "samples.jsonl").read_text().splitlines()[0])
    assert len(rec["outputs"]) == 3


def cli(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_cli_bad_inputs(saved_tiny, tmp_path, tiny_bench):
    model = saved_tiny("llama")
    cases = [
        (["--benchmark", tmp_path / "nope"], "does not exist"),
        (["--benchmark", tmp_path], "not in the G-TransEval layout"),
        (["--benchmark", tiny_bench, "--ids", "l1-000,l7-001"], "unknown sample ids: l7-001"),
        (["--benchmark", tiny_bench, "--workers", "0"], "--workers must be at least 1"),
        (["--benchmark", tiny_bench, "--model", tmp_path / "missing-model"], "does not exist"),
        (["--benchmark", tiny_bench, "--drop-attention", "9"], "--drop-attention layer index 9 is out of range"),
    ]
    for args, message in cases:
        out = tmp_path / "never"
        res = cli("--model", model, *args, "--out", out)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr
        assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = cli("--model", model, "--benchmark", tiny_bench, "--out", blocker / "x")
    assert res.exit_code == 2 and "not writable" in res.stderr


def test_cli_evaluate_and_report(saved_tiny, tmp_path, tiny_bench):
    model = saved_tiny("llama")
    base = tmp_path / "base"
    res = cli("--model", model, "--benchmark", tiny_bench, "--ids", "l1-000,l2-001", "--max-new-tokens", 4,
              "--out", base, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["samples"] == 2
    dropped = tmp_path / "dropped"
    res = cli("--model", model, "--benchmark", tiny_bench, "--ids", "l1-000,l2-001", "--max-new-tokens", 4,
              "--out", dropped, "--drop-attention", "2,3")
    assert res.exit_code == 0, res.output
    assert json.loads((dropped / "results.json").read_text())["removed_attention"] == [2, 3]
    rep = runner.invoke(app, ["report", str(base), str(dropped), "--names", "base,k=2", "--out",
                              str(tmp_path / "rep"), "--json"])
    assert rep.exit_code == 0, rep.output
    table = json.loads(rep.stdout)
    rows = {r["metric"]: r for r in table["rows"]}
    kv = rows["KV cache [bytes/token]"]
    assert kv["values"][1] == kv["values"][0] * 4 / 6 and kv["delta_percent"][1] == pytest.approx(-100 / 3)
    assert rows["attention parameters [M]"]["delta_percent"][1] == pytest.approx(-100 / 3)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| metric | base | k=2 (Δ%) |" in md and (tmp_path / "rep" / "ca_by_type.png").exists()
    bad = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "no results.json" in bad.stderr


def test_a_kill_while_resuming_loses_no_finished_sample(tiny_lm, tmp_path, monkeypatch, tiny_bench):
    run(tiny_bench, tiny_lm, tmp_path)
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines) + "\n" + lines[0][:20])  # a torn tail: resume rewrites the file
    real, calls = run_module.json.dumps, []

    def killed(obj, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed half-way through the rewrite
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(run_module.json, "dumps", killed)
    with pytest.raises(KeyboardInterrupt):
        run_module.read_done(path, (json.loads(lines[0])["settings_hash"],))
    monkeypatch.setattr(run_module.json, "dumps", real)
    assert path.read_text().splitlines()[:4] == lines  # every finished sample is still there


def no_generation(monkeypatch):
    monkeypatch.setattr(run_module, "generate_transformers",
                        lambda *a, **k: pytest.fail("a finished sample was generated again"))


def test_a_moved_model_reuses_its_finished_run(saved_tiny, tmp_path, monkeypatch, tiny_bench):
    import shutil

    first_dir = saved_tiny("llama")
    first = run(tiny_bench, load_model(str(first_dir)), tmp_path / "out")
    moved = shutil.copytree(first_dir, tmp_path / "elsewhere")
    no_generation(monkeypatch)
    again = run(tiny_bench, load_model(str(moved)), tmp_path / "out")
    assert again["resumed_samples"] == 4 and again["metrics"] == first["metrics"]
    assert again["settings_hash"] == first["settings_hash"]


def test_a_run_hashed_with_the_model_folder_still_resumes(tiny_lm, tmp_path, monkeypatch, tiny_bench):
    first = run(tiny_bench, tiny_lm, tmp_path)
    samples = select(load_benchmark(tiny_bench), ids=IDS)
    gen = GenerationConfig(max_new_tokens=6, batch_size=2)
    current, earlier = run_module.run_digests(tiny_lm, samples, PROMPT, gen, EvalConfig(efficiency=False))
    assert current == first["settings_hash"] != earlier
    path = tmp_path / "samples.jsonl"
    path.write_text(path.read_text().replace(current, earlier))  # as nose wrote it before
    no_generation(monkeypatch)
    assert run(tiny_bench, tiny_lm, tmp_path)["resumed_samples"] == 4
    assert {json.loads(x)["settings_hash"] for x in path.read_text().splitlines()} == {current}


def test_vllm_backend_refuses_what_it_cannot_honour(saved_tiny, tmp_path, tiny_bench):
    from nose.model.replacements import Linear
    from nose.shrink.export import export_checkpoint

    lm = load_model(str(saved_tiny("llama", intermediate_size=256)))
    with pytest.raises(NoseError, match="in-memory changes .* would be ignored"):
        evaluate(lm, select(load_benchmark(tiny_bench), ids=IDS[:1]), PROMPT,
                 GenerationConfig(backend="vllm"), EvalConfig(drop_attention=[2], efficiency=False), tmp_path / "a",
                 str(tiny_bench))
    import torch

    folder = export_checkpoint(lm, {2: Linear(torch.eye(64))}, tmp_path / "linear")
    with pytest.raises(NoseError, match=r"vLLM cannot serve this checkpoint: layers \[2\] are linear"):
        evaluate(load_model(str(folder)), select(load_benchmark(tiny_bench), ids=IDS[:1]), PROMPT,
                 GenerationConfig(backend="vllm"), EvalConfig(efficiency=False), tmp_path / "b", str(tiny_bench))


def test_generation_leaves_the_tokenizer_as_it_was(tiny_lm):
    from nose.model.generation import generate_transformers

    tok = tiny_lm.tokenizer
    tok.pad_token = None  # a tokenizer without a pad token (llama's own has none)
    tok.padding_side = "right"
    out = generate_transformers(tiny_lm.model, tok, ["def f(", "for i in range(10):"], GenerationConfig(max_new_tokens=3))
    assert len(out) == 2 and all(len(o) == 1 for o in out)
    assert tok.pad_token is None and tok.padding_side == "right"


def test_stop_at_code_decodes_linearly_not_quadratically(tiny_lm):
    """The stop check decodes a row only when a backtick token arrives, not every step."""
    import torch

    from nose.model.generation import CodeBlockClosed

    tok = tiny_lm.tokenizer
    text = "```python\ndef f(x):\n" + "    x = x + 1\n" * 60 + "    return x\n```\nThat is all."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decoded, real = [], tok.decode

    def counting(token_ids, *args, **kwargs):
        decoded.append(len(token_ids))
        return real(token_ids, *args, **kwargs)

    tok.decode = counting
    try:
        stop = CodeBlockClosed(tok, prompt_len=1)
        closed_at = None
        for t in range(2, len(ids) + 2):
            row = torch.tensor([[0] + ids[:t - 1]])
            if stop(row, None)[0] and closed_at is None:
                closed_at = t - 1
    finally:
        del tok.decode
    assert real(ids[:closed_at]).endswith("```")  # it stops right at the closing fence
    assert sum(decoded) < 4 * len(ids)  # a full decode per step would be about len(ids)² / 2 tokens


def test_the_run_reads_a_task_only_through_its_interface():
    """A toy task (its own extraction, tested function, program and verdict) goes through the same
    testing as G-TransEval: a second benchmark needs no change to the run."""
    from dataclasses import replace
    from types import SimpleNamespace

    from nose.evaluate.run import test_outputs
    from nose.sandbox import Limits
    from nose.tasks import JAVA_PYTHON

    toy = replace(JAVA_PYTHON, name="toy", extract=lambda raw: raw.strip("`"), entry_point=lambda code, s: "f",
                  program=lambda code, entry, s: code + f"\nprint({entry}({s.arg}))",
                  verdict=lambda o: "no_function" if o is None else ("passed" if o.stdout.strip() == "42" else "wrong"),
                  reference=lambda s: "def f(x):\n    return 2 * x")
    samples = [SimpleNamespace(id="t1", type=1, level="toy", arg=21), SimpleNamespace(id="t2", type=1, level="toy", arg=1)]
    records = test_outputs(samples, [["```def f(x):\n    return 2 * x```"]] * 2, Limits(wall_s=5), 2, task=toy)
    assert [r["verdicts"] for r in records] == [["passed"], ["wrong"]]
    assert records[0]["codes"] == ["def f(x):\n    return 2 * x"] and records[0]["bleu"] == pytest.approx(100.0)
