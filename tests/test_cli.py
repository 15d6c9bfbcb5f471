import json

import pytest
from typer.testing import CliRunner

from nose.cli.app import app

runner = CliRunner()
FAST = ["--samples", "4", "--seq-len", "32", "--bootstrap", "20"]


def invoke(*args):
    return runner.invoke(app, ["search", *map(str, args)])


def test_search_writes_record_and_plots(saved_tiny, tmp_path):
    model = saved_tiny("llama")
    out = tmp_path / "run"
    res = invoke("--model", model, "--out", out, "--steps", 2, *FAST, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert len(summary["order"]) == 2 and 0 not in summary["order"]
    record = json.loads((out / "search.json").read_text())
    assert record["order"] == summary["order"] and record["complete"]
    assert record["calibration"]["samples"] == 4 and len(record["calibration"]["token_ids_sha256"]) == 64
    assert record["model"]["weights_sha256"] and record["versions"]["torch"]
    for png in ("scores.png", "selection_map.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # a finished search is not overwritten by accident; --resume extends it
    again = invoke("--model", model, "--out", out, "--steps", 3, *FAST)
    assert again.exit_code == 2 and "pass --resume" in again.stderr
    more = invoke("--model", model, "--out", out, "--steps", 3, *FAST, "--resume")
    assert more.exit_code == 0, more.output
    assert "step" in more.stdout and "95% interval" in more.stdout
    extended = json.loads((out / "search.json").read_text())
    assert extended["order"][:2] == record["order"] and len(extended["order"]) == 3


def bad(args, message, tmp_path):
    out = tmp_path / "never"
    res = invoke(*args, "--out", out)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert not out.exists()


def test_bad_model_inputs(tmp_path, monkeypatch):
    bad(["--model", tmp_path / "missing"], "does not exist", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    bad(["--model", "org/some-model"], "offline", tmp_path)


def test_unsupported_family(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("gpt2", n_layer=2, n_embd=32, n_head=2, vocab_size=64)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gpt2")
    bad(["--model", tmp_path / "gpt2"], "unsupported model family 'gpt2'", tmp_path)


@pytest.mark.parametrize("args,message", [
    (["--protect", "3,40"], "--protect layer index 40 is out of range"),
    (["--protect", "a,b"], "not a comma-separated list"),
    (["--steps", "9"], "--steps 9 is larger than the 5 candidate layers"),
    (["--target", "layer:12", "--criterion", "nose"], "target layer 12 is out of range"),
    (["--target", "logits"], "--target applies to --criterion nose or nose-abs only"),
])
def test_bad_search_settings(args, message, saved_tiny, tmp_path):
    bad(["--model", saved_tiny("llama"), *FAST, *args], message, tmp_path)


def test_bad_calibration(saved_tiny, tmp_path):
    model = saved_tiny("llama")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(["--model", model, "--calibration", empty], "is empty", tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("x = 1")
    bad(["--model", model, "--calibration", short, "--seq-len", "64"], "fewer than --seq-len 64", tmp_path)


def test_unwritable_output(saved_tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = invoke("--model", saved_tiny("llama"), *FAST, "--out", blocker / "run")
    assert res.exit_code == 2 and "not writable" in res.stderr
    res = invoke("--model", saved_tiny("llama"), *FAST, "--out", blocker)
    assert res.exit_code == 2 and "is not a folder" in res.stderr


def test_resume_from_another_model_or_calibration(saved_tiny, tmp_path):
    out = tmp_path / "run"
    first = invoke("--model", saved_tiny("llama"), "--out", out, "--steps", 1, *FAST)
    assert first.exit_code == 0, first.output
    before = (out / "search.json").read_text()
    other = saved_tiny("qwen2")
    res = invoke("--model", other, "--out", out, "--steps", 2, *FAST, "--resume")
    assert res.exit_code == 2 and "cannot resume: the search file is for model" in res.stderr
    res = invoke("--model", saved_tiny("llama"), "--out", out, "--steps", 2, *FAST, "--seed", 4, "--resume")
    assert res.exit_code == 2 and "other calibration tokens" in res.stderr
    assert (out / "search.json").read_text() == before
    res = invoke("--model", saved_tiny("llama"), "--out", tmp_path / "new", "--resume", *FAST)
    assert res.exit_code == 2 and "no search.json" in res.stderr


def test_progress_prints_lines_where_stderr_is_a_log():
    """A background run's log gets a line per task at most every every_s seconds and when it
    completes (a terminal gets the live bar instead)."""
    import io

    from rich.console import Console

    from nose.cli.common import progress_bar

    log = io.StringIO()
    with progress_bar(Console(file=log, width=200), every_s=3600) as progress:
        task = progress.add_task("fit", total=3)
        progress.advance(task)  # within the hour: no line
        progress.update(task, advance=2)  # complete: one line
        progress.advance(task, 0)  # nothing after the complete line
    assert log.getvalue().splitlines() == ["fit: 3/3 (0 s)"]

    log = io.StringIO()
    with progress_bar(Console(file=log, width=200), every_s=0) as progress:
        task = progress.add_task("files", total=None)
        progress.update(task, completed=5)
        progress.update(task, completed=7)
    assert log.getvalue().splitlines() == ["files: 5 (0 s)", "files: 7 (0 s)"]
