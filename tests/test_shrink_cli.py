import json

import pytest
from typer.testing import CliRunner

from nose.cli.app import app

runner = CliRunner()
SMALL = ["--samples", "8", "--val-samples", "2", "--seq-len", "32", "--batch-size", "2"]


@pytest.fixture
def model(saved_tiny):
    return saved_tiny("llama", intermediate_size=256)


def shrink(*args):
    return runner.invoke(app, ["shrink", *map(str, args)])


def test_shrink_with_healing_writes_a_loadable_checkpoint(model, tmp_path):
    out = tmp_path / "ckpt"
    res = shrink("--model", model, "--layers", "3,2", "--steps", 4, *SMALL, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["removed_attention"] == [2, 3] and summary["tokens"] > 0
    meta = json.loads((out / "nose.json").read_text())
    assert meta["healing"]["steps"] == 4 and meta["healing"]["loss"] == "kd"
    assert meta["replace"] == "folded" and set(meta["fit_report"]["layers"]) == {"2", "3"}  # the default repair
    assert (out / "healing_curve.png").exists()
    search = runner.invoke(app, ["search", "--model", str(out), "--out", str(tmp_path / "s"), "--steps", "3",
                                 "--samples", "4", "--seq-len", "32", "--json"])
    assert search.exit_code == 0, search.output
    assert not {2, 3} & set(json.loads(search.stdout)["order"])  # removed layers are not candidates again


def test_shrink_from_search_file(model, tmp_path):
    s = runner.invoke(app, ["search", "--model", str(model), "--out", str(tmp_path / "s"), "--steps", "3",
                            "--samples", "4", "--seq-len", "32", "--json"])
    order = json.loads(s.stdout)["order"]
    res = shrink("--model", model, "--search", tmp_path / "s", "--k", 2, "--steps", 0, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "c" / "nose.json").read_text())
    assert meta["removed_attention"] == sorted(order[:2]) and meta["k"] == 2
    bad = shrink("--model", model, "--search", tmp_path / "s", "--k", 5, "--steps", 0, "--out", tmp_path / "d")
    assert bad.exit_code == 2 and "--k 5 is out of range" in bad.stderr and not (tmp_path / "d").exists()


@pytest.mark.parametrize("args,message", [
    (["--layers", "2,2"], "repeat"),
    (["--layers", "7"], "out of range"),
    (["--layers", ""], "--layers is empty"),
    (["--layers", "2", "--replace", "linear", "--mode", "double"], "--mode double and --replace linear disagree"),
    (["--layers", "2", "--replace", "quadratic"], "unknown --replace 'quadratic'"),
    (["--layers", "2", "--replace", "linear", "--fit-target", "residual"], "unknown --fit-target 'residual'"),
    (["--layers", "2", "--data", "/nonexistent/data.jsonl"], "does not exist"),
    (["--search", "nowhere"], "--search needs --k"),
    (["--layers", "2", "--loss", "mse"], "unknown loss"),
    ([], "exactly one of --layers and --search"),
])
def test_bad_inputs(args, message, model, tmp_path):
    out = tmp_path / "never"
    res = shrink("--model", model, *args, "--steps", 2, *SMALL, "--out", out)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    assert not out.exists()


def test_search_from_another_model_and_empty_data(model, saved_tiny, tmp_path):
    other = saved_tiny("qwen2", intermediate_size=256)
    runner.invoke(app, ["search", "--model", str(other), "--out", str(tmp_path / "s"), "--steps", "1",
                        "--samples", "4", "--seq-len", "32"])
    res = shrink("--model", model, "--search", tmp_path / "s", "--k", 1, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "search file is for model" in res.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = shrink("--model", model, "--layers", "2", "--data", empty, *SMALL, "--out", tmp_path / "y")
    assert res.exit_code == 2 and "is empty" in res.stderr


def test_a_parameter_free_replacement_means_no_fit(model, tmp_path):
    res = shrink("--model", model, "--layers", "2", "--replace", "double", "--steps", 0, "--out", tmp_path / "d")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "d" / "nose.json").read_text())
    assert meta["replace"] == "double" and not meta["fit_report"]


def test_replace_skip_exports_no_op_blocks(model, tmp_path):
    res = shrink("--model", model, "--layers", "2,3", "--replace", "skip", "--steps", 0, "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    blocks = json.loads((tmp_path / "s" / "config.json").read_text())["block_configs"]
    assert [b["attention"]["no_op"] for b in blocks] == [False, False, True, True] + [False] * (len(blocks) - 4)
    assert not any(b["attention"].get("replace_with_linear") for b in blocks)
    meta = json.loads((tmp_path / "s" / "nose.json").read_text())  # provenance of the export
    assert meta["tool"]["name"] == "nose-prune" and meta["tool"]["version"] and meta["versions"]["torch"]


def test_auto_data_follows_the_chat_template_not_the_name(saved_tiny):
    from nose.data.transcripts import FIT_DATA, data_source
    from nose.model.loading import load_model

    lm = load_model(str(saved_tiny("llama", intermediate_size=256)))
    assert data_source("auto", lm.tokenizer) == "stdlib" and data_source("translate", lm.tokenizer) == "translate"
    lm.spec = "my-coder-model"  # a name with "code" in it no longer decides
    assert data_source("auto", lm.tokenizer) == "stdlib"
    lm.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert data_source("auto", lm.tokenizer) == "translate"  # a search's calibration
    assert data_source("auto", lm.tokenizer, FIT_DATA) == "translate+complete"  # fits and healing


@pytest.mark.parametrize("old,new", [(["--mode", "skip"], "skip"), (["--replace", "none", "--mode", "double"], "double"),
                                     (["--replace", "none"], "skip")])
def test_the_old_spellings_warn_and_mean_what_they_say(model, tmp_path, old, new):
    """--mode skip used to give linear blocks (the default --replace); as an alias it gives skip."""
    res = shrink("--model", model, "--layers", "2", *old, "--steps", 0, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "deprecated" in res.stderr and f"--replace {new}" in res.stderr
    assert json.loads((tmp_path / "o" / "nose.json").read_text())["replace"] == new


def test_unwritable_and_existing_targets(model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = shrink("--model", model, "--layers", "2", "--steps", 0, "--out", blocker / "x")
    assert res.exit_code == 2 and "not writable" in res.stderr
    ok = shrink("--model", model, "--layers", "2", "--steps", 0, "--out", tmp_path / "c")
    assert ok.exit_code == 0, ok.output
    again = shrink("--model", model, "--layers", "3", "--steps", 0, "--out", tmp_path / "c")
    assert again.exit_code == 2 and "exists" in again.stderr


def test_data_parallel_healing_with_two_processes(model, tmp_path):
    """Two CPU processes (gloo DDP through accelerate), launched the way multi-GPU runs are."""
    import subprocess
    import sys
    from pathlib import Path

    torchrun = str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "nose", "shrink", "--device", "cpu",
                           "--model", str(model), "--layers", "2,3", "--steps", "3", *SMALL, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "nose.json").read_text())
    assert meta["healing"]["processes"] == 2 and meta["removed_attention"] == [2, 3]


def test_linear_replacement_is_fitted_healed_and_exported(model, tmp_path):
    """--replace linear: W fitted, trained with the MLPs, exported as linear blocks whose logits
    equal the in-memory repaired model; healing.json is inside the published folder."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lin"
    res = shrink("--model", model, "--layers", "2,4", "--replace", "linear", "--data", "stdlib", "--fit-samples", 8,
                 "--fit-seq-len", 32, "--fit-target", "stream", "--steps", 3, *SMALL, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["replacements"] == "linear" and summary["repair_cost"]["fit_tokens"] > 0
    meta = json.loads((out / "nose.json").read_text())
    assert set(meta["fit_report"]["layers"]) == {"2", "4"} and meta["replace"] == "linear"
    assert meta["fit"]["target"] == "stream"
    assert {r["kind"] for r in meta["replacements"].values()} == {"linear"}
    assert (out / "healing.json").exists() and (out / "healing_curve.png").exists()
    blocks = json.loads((out / "config.json").read_text())["block_configs"]
    assert [b["attention"]["replace_with_linear"] for b in blocks] == [False, False, True, False, True, False]
    back = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    from nose.model.loading import load_model

    exported = load_model(str(out))
    ids = torch.randint(0, 100, (1, 12))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, exported.model(ids).logits)
    assert exported.absent_attention() == [2, 4]



def test_replace_folded_exports_no_op_blocks_that_compute_the_fitted_model(model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from nose.model.loading import load_model
    from nose.model.switches import attention_switched
    from nose.replace.ridge import FitConfig
    from nose.shrink.pipeline import fitter

    out = tmp_path / "f"
    res = shrink("--model", model, "--layers", "2,3", "--replace", "folded", "--steps", 0, "--data", "stdlib",
                 "--fit-samples", 8, "--fit-seq-len", 32, "--out", out)
    assert res.exit_code == 0, res.output
    blocks = [b["attention"] for b in json.loads((out / "config.json").read_text())["block_configs"]]
    assert [b["no_op"] for b in blocks[:4]] == [False, False, True, True] and not any(
        b.get("replace_with_linear") for b in blocks)
    meta = json.loads((out / "nose.json").read_text())
    assert meta["replace"] == "folded" and set(meta["fit_report"]["layers"]) == {"2", "3"}
    lm = load_model(str(model))
    fitted = fitter(lm, "folded", "stdlib", FitConfig(samples=8, seq_len=32))([2, 3])
    ids = torch.randint(0, 90, (2, 7))
    with torch.no_grad(), attention_switched(lm.model, fitted):
        want = lm.model(ids).logits
    back = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, want, rtol=1e-4, atol=1e-4)
    healed = shrink("--model", model, "--layers", "2", "--replace", "folded", "--steps", 2, *SMALL, "--data", "stdlib",
                    "--fit-samples", 8, "--fit-seq-len", 32, "--out", tmp_path / "h")
    assert healed.exit_code == 0, healed.output
