"""Bad input is one ``error:`` line, never a traceback, and ``--overwrite`` replaces only nose's own.

The fuzz-style test feeds every reader of a file nose is handed (search files, evaluation
results and samples, sweep files, the benchmark's files) empty, truncated, wrong-typed and
mis-encoded variants of a real one and expects a NoseError naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nose.cli.app import app
from nose.cli.common import parse_layers
from nose.errors import NoseError
from nose.tasks.java_python.benchmark import load_benchmark, select
from nose.evaluate.run import read_done
from nose.evaluate.sweep import read_sweep
from nose.report.compare import load_run
from nose.search.record import read_record
from nose.testing import write_tiny_benchmark

runner = CliRunner()


def search_file(tmp_path: Path, saved_tiny) -> Path:
    out = tmp_path / "s"
    res = runner.invoke(app, ["search", "--model", str(saved_tiny("llama", intermediate_size=256)), "--out", str(out), "--steps", "2",
                              "--samples", "4", "--seq-len", "32", "--json"])
    assert res.exit_code == 0, res.output
    return out / "search.json"


def variants(good: dict) -> list[bytes]:
    """Empty, truncated, not UTF-8, JSON of the wrong type, and the object with each top-level
    key dropped or given the wrong type."""
    text = json.dumps(good).encode()
    out = [b"", text[: len(text) // 2], b"\xff\xfe" + text, b"[]", b"null", b"42", b'"search"']
    for key in good:
        if key == "format":
            continue
        out.append(json.dumps({k: v for k, v in good.items() if k != key}).encode())
        wrong = "51" if not isinstance(good[key], str) else 51
        out.append(json.dumps({**good, key: wrong}).encode())
    return out


def check_each(reader, path: Path, good: dict, must_fail: set[str] | None = None) -> None:
    original = path.read_bytes()
    try:
        for variant in variants(good):
            path.write_bytes(variant)
            try:
                reader(path)
            except NoseError as e:
                assert "\n" not in str(e) and str(path.name) in str(e), str(e)
            else:  # a variant that reads is one whose change no reader uses (e.g. "created")
                data = json.loads(variant)
                dropped = set(good) - set(data) | {k for k in good if data.get(k) != good[k]}
                assert not dropped & (must_fail or set()), f"{path.name} accepted a bad {dropped}"
    finally:
        path.write_bytes(original)


def test_search_files_are_checked_at_the_boundary(tmp_path, saved_tiny):
    path = search_file(tmp_path, saved_tiny)
    good = json.loads(path.read_text())
    check_each(read_record, path, good, must_fail={"order", "model", "steps", "settings", "calibration", "score"})
    path.write_text(json.dumps({**good, "order": ["5", 1]}))
    with pytest.raises(NoseError, match=r"order\[0\] should be an integer, not a string"):
        read_record(path)
    path.write_text(json.dumps({**good, "model": None}))
    with pytest.raises(NoseError, match="model should be an object, not null"):
        read_record(path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(RESULTS))
    for args in (["shrink", "--model", str(saved_tiny("llama", intermediate_size=256)), "--search", str(path), "--k", "1"],
                 ["report", str(run), "--search", str(path)], ["search", "--out", str(path.parent), "--resume"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and res.stderr.startswith("error:") and "model should be" in res.stderr, res.output


RESULTS = {"format": "nose.evaluate/1", "metrics": {"samples": 2, "ca_percent": 50.0, "ca_by_type": {
    "token": {"samples": 2, "ca": 50.0}}, "bleu": 10.0, "codebleu": 0.3}, "efficiency": None}


def test_results_samples_and_sweep_files_are_checked(tmp_path):
    results = tmp_path / "results.json"
    good = RESULTS
    results.write_text(json.dumps(good))
    assert load_run(results)["metrics"]["samples"] == 2
    check_each(load_run, results, good, must_fail={"metrics"})
    results.write_text(json.dumps({**good, "metrics": {**good["metrics"], "ca_by_type": {"token": []}}}))
    with pytest.raises(NoseError, match="ca_by_type.token should be an object"):
        load_run(results)
    sweep = tmp_path / "sweep.json"
    good = {"format": "nose.sweep/1", "orders": [{"label": "kl", "criterion": "kl"}], "rows": []}
    sweep.write_text(json.dumps(good))
    check_each(read_sweep, sweep, good, must_fail={"orders", "rows"})
    samples = tmp_path / "samples.jsonl"
    for line in ("[]", "null", '{"id": 3}', '{"id": "l1-000", "settings_hash": "ab", "passed": "yes"}'):
        samples.write_text(line + "\n" + line + "\n")
        with pytest.raises(NoseError, match="samples.jsonl"):
            read_done(samples, ("ab",))
    samples.write_bytes(b"\xff\n")
    with pytest.raises(NoseError, match="samples.jsonl"):
        read_done(samples, ("ab",))


@pytest.mark.parametrize("damage,message", [
    (lambda r: (r / "G-TransEval/Type2/Python.test").unlink(), "Python.test does not exist"),
    (lambda r: (r / "TestRunner/config/l3.json").unlink(), "l3.json does not exist; expected a G-TransEval test config"),
    (lambda r: (r / "TestRunner/config/l2.json").write_text("{"), "l2.json is not valid JSON"),
    (lambda r: (r / "TestRunner/config/l2.json").write_text("[]"), "l2.json should be an object, not a list"),
    (lambda r: (r / "TestRunner/config/l2.json").write_text('{"name": "x"}'), "l2.json has no 'questions'"),
    (lambda r: (r / "G-TransEval/Type1/Java.test").write_bytes(b"\xff\xfe\n"), "Java.test is not UTF-8"),
    (lambda r: _drop_name(r / "TestRunner/config/l1.json"), r"questions\[0\] has no 'name'"),
    (lambda r: ((r / "G-TransEval/Type4/Java.test").unlink(), (r / "G-TransEval/Type4/Java.test").mkdir()),
     "Java.test is a folder"),
])
def test_a_malformed_benchmark_is_one_line(tmp_path, damage, message):
    root = write_tiny_benchmark(tmp_path / "bench")
    load_benchmark(root)
    damage(root)
    with pytest.raises(NoseError, match=message):
        load_benchmark(root)
    res = runner.invoke(app, ["evaluate", "--model", "none", "--benchmark", str(root), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1


def _drop_name(path: Path) -> None:
    data = json.loads(path.read_text())
    del data["questions"][0]["name"]
    path.write_text(json.dumps(data))


def test_layer_lists_and_ids_are_strict(tmp_path):
    assert parse_layers("3, 5,7,") == [3, 5, 7]
    for text in ("2,,4", "+2", "-1", "٣", "2;4", " "):
        with pytest.raises(NoseError, match="not a comma-separated list of layer numbers"):
            parse_layers(text)
    samples = load_benchmark(write_tiny_benchmark(tmp_path / "bench"))
    with pytest.raises(NoseError, match="names l1-000 more than once"):
        select(samples, ["l1-000", "l1-000"])


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "--lr must lie in"),
    (["--lr", "1e38"], "--lr must lie in"),
    (["--lr", "nan"], "--lr must lie in"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--seq-len", "0"], "--seq-len at least 2"),
    (["--fit-seq-len", "0"], "--fit-seq-len must be at least 2"),
    (["--out", "/proc/x"], "lies in /proc, a kernel pseudo-filesystem"),
    (["--out", "/sys/x"], "lies in /sys, a kernel pseudo-filesystem"),
])
def test_shrink_numbers_and_places_are_checked(saved_tiny, tmp_path, args, message):
    args = ["--out", str(tmp_path / "c")] + args
    res = runner.invoke(app, ["shrink", "--model", str(saved_tiny("llama", intermediate_size=256)), "--layers", "2", "--steps", "0", *args])
    assert res.exit_code == 2 and message in res.stderr, res.output


def test_resume_without_a_state_refuses_before_the_fit(saved_tiny, tmp_path):
    res = runner.invoke(app, ["shrink", "--model", str(saved_tiny("llama", intermediate_size=256)), "--layers", "2", "--steps", "4",
                              "--resume", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--resume: no healing state" in res.stderr
    assert "linear fit" not in res.stderr  # refused before the fit ran


def test_overwrite_replaces_only_nose_exports(saved_tiny, tmp_path, monkeypatch):
    model = saved_tiny("llama", intermediate_size=256)
    run = lambda out: runner.invoke(app, ["shrink", "--model", str(model), "--layers", "2", "--steps", "0",  # noqa
                                          "--replace", "skip", "--out", str(out), "--overwrite"])
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    res = run(mine)
    assert res.exit_code == 2 and "not a checkpoint nose exported" in res.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "sub").is_dir()
    before = sorted(p.name for p in model.iterdir())
    res = run(model)
    assert res.exit_code == 2 and "the model being read" in res.stderr
    assert sorted(p.name for p in model.iterdir()) == before
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    res = run(Path("."))
    assert res.exit_code == 2 and "holds the working directory" in res.stderr
    export = tmp_path / "export"
    assert run(export).exit_code == 0 and run(export).exit_code == 0  # its own export: replaced
    res = run(export / "config.json")
    assert res.exit_code == 2 and "is not a folder" in res.stderr


def test_a_killed_export_leaves_temporaries_the_next_run_removes(saved_tiny, tmp_path):
    model, out = saved_tiny("llama", intermediate_size=256), tmp_path / "ckpt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ckpt.tmp-{dead.pid}-abc"
    (stale / "x").mkdir(parents=True)
    alive = tmp_path / f".ckpt.tmp-{os.getpid()}-abc"  # a running export's: kept
    alive.mkdir()
    res = runner.invoke(app, ["shrink", "--model", str(model), "--layers", "2", "--steps", "0", "--replace", "skip",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not stale.exists() and alive.exists() and (out / "nose.json").exists()
    shutil.rmtree(alive)
    # and a real kill: SIGKILL while the export writes, then a clean rerun
    code = ("import sys, time\nimport nose.shrink.export as e\n_w = e.write_shards\n"
            "def slow(*a, **k):\n    r = _w(*a, **k)\n    print('written', flush=True)\n    time.sleep(60)\n    return r\n"
            "e.write_shards = slow\nfrom nose.cli.app import main\nsys.argv = ['nose', 'shrink', '--model', "
            f"{str(model)!r}, '--layers', '3', '--steps', '0', '--replace', 'none', '--out', {str(out)!r}, "
            "'--overwrite']\nmain()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline() == "written\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".ckpt.tmp-*")) and json.loads((out / "nose.json").read_text())["removed_attention"] == [2]
    res = runner.invoke(app, ["shrink", "--model", str(model), "--layers", "3", "--steps", "0", "--replace", "skip",
                              "--out", str(out), "--overwrite"])
    assert res.exit_code == 0 and not list(tmp_path.glob(".ckpt.tmp-*"))
    assert json.loads((out / "nose.json").read_text())["removed_attention"] == [3]


def test_jsonl_inputs_are_checked_line_by_line(tmp_path, tok):
    from nose.data.chat import chat_rows
    from nose.tasks.java_python.corpus import load_methods
    from nose.data.calibration import build_calibration

    readers = {
        "methods": lambda p: load_methods(p),
        "calibration": lambda p: build_calibration(tok, str(p), samples=2, seq_len=16),
        "chat": lambda p: chat_rows(tok, p, samples=2, seq_len=16),
    }
    good = {"methods": '{"name": "add", "java": "int add(int a, int b) { return a + b; }"}',
            "calibration": '{"text": "def add(a, b): return a + b"}',
            "chat": '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}'}
    for name, read in readers.items():
        path = tmp_path / f"{name}.jsonl"
        for bad in (b"[]", b"null", b"{", b"\xff\xfe", b'{"messages": "x"}', b'{"name": 3, "java": []}',
                    b'{"messages": [1, 2]}'):
            path.write_bytes(good[name].encode() + b"\n" + bad + b"\n")
            with pytest.raises(NoseError, match=rf"{name}.jsonl:2 "):
                read(path)
