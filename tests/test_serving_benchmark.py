import gc
import json
import weakref

import pytest
import torch

from nose.evaluate.efficiency import kv_cache_bytes_per_token, parameter_counts


SHAPE = dict(model_type="llama", hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0})


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_random_shape_variants_are_real_exports(tmp_path, family, benchmark_script):
    random_shape_models = benchmark_script("serving_speed").random_shape_models
    seen, base = [], None
    shape = dict(SHAPE, model_type=family)
    for name, spec, lm in random_shape_models(shape, [0, 2], "cpu", torch.float32, tmp_path):
        seen.append((name, lm.model.config.model_type, kv_cache_bytes_per_token(lm.model, lm.adapter),
                     parameter_counts(lm.model, lm.adapter)["attention_parameters"]))
        ids = torch.randint(0, 96, (1, 8))
        assert lm.model(input_ids=ids).logits.shape == (1, 8, 96)
        if base is None:
            base = weakref.ref(lm.model)
        else:  # the base is gone once the caller let go: its memory is not in the export's peak
            gc.collect()
            assert base() is None
        del lm
    (n0, type0, kv0, attn0), (n2, type2, kv2, attn2) = seen
    assert (n0, type0, n2, type2) == ("k=0", family, "k=2", "nemotron-nas")
    # DeciLM's one attention_bias switch gives Qwen2's 2 kept layers a zero o_proj bias each
    zero_bias = 2 * SHAPE["hidden_size"] if family == "qwen2" else 0
    assert kv2 * 2 == kv0 and attn2 * 2 == attn0 + 2 * zero_bias
    assert list(tmp_path.iterdir()) == []  # each export is deleted after its measurement


def test_random_shape_checkpoint_converts_with_llamacpp(tmp_path, benchmark_script, monkeypatch):
    """The llama.cpp benchmark's shape mode writes random weights with a vocabulary llama.cpp's
    converter recognises (SmolLM2's: the converter refuses an unknown BPE pre-tokenizer) and an
    embedding grown to hold it; the GGUF keeps the shape's linear rope scaling."""
    from nose.shrink.gguf import describe, write_gguf

    script = benchmark_script("serving_llamacpp")
    monkeypatch.setitem(script.SHAPES, "small-llama", SHAPE)
    folder = script.shape_model("small-llama", tmp_path / "intact")
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == 49152 and config["num_hidden_layers"] == SHAPE["num_hidden_layers"]
    info = describe(write_gguf(folder, tmp_path / "m.gguf", "f16", log=lambda m: None))
    assert info["arch"] == "llama" and info["rope_scaling"] == [4.0]
    assert len(info["tensors"]) == 3 + SHAPE["num_hidden_layers"] * 9  # embedding, final norm, head; 9 per layer


def test_peak_memory_is_the_childs_own_not_its_parents(tmp_path, benchmark_script):
    """llama-bench's peak RSS is read from the child itself: with the parent holding 400 MB, a
    child that touches 50 MB reports about 50 MB (wait4's ru_maxrss reported the parent's 400)."""
    import subprocess
    import sys

    run_measured = benchmark_script("serving_llamacpp").run_measured
    held = bytearray(400 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])  # touch every page: resident in the parent
    child = [sys.executable, "-c", "import time; b = bytearray(50 * 2**20); time.sleep(0.5)"]
    with open(tmp_path / "out", "w") as out:
        code, peak = run_measured(child, out, subprocess.DEVNULL)
    assert code == 0
    assert 50 * 2**20 < peak < 200 * 2**20
    failed, _ = run_measured([sys.executable, "-c", "raise SystemExit(3)"], subprocess.DEVNULL, subprocess.DEVNULL)
    assert failed == 3
    del held


def test_shape_exports_are_written_one_at_a_time(tmp_path, benchmark_script, monkeypatch):
    """Shape mode converts and deletes each export before it writes the next, so the disk holds one
    export at a time (the 6.7B shape's bf16 exports are 12-13 GB each: writing all of them first
    needed 50 GB)."""
    import argparse

    script = benchmark_script("serving_llamacpp")
    monkeypatch.setitem(script.SHAPES, "small-llama", SHAPE)
    checkpoints, real, held = tmp_path / "checkpoints", script.nose, []

    def nose(*args):
        if args[0] == "shrink":  # the exports on disk when the next one is written
            held.append([p.name for p in checkpoints.iterdir() if p.name != "intact" and any(p.iterdir())])
        real(*args)

    monkeypatch.setattr(script, "nose", nose)
    args = argparse.Namespace(shape="small-llama", model=None, k=[(1, None), (2, None)], replace=["skip"])
    files = script.ggufs(script.exports(args, tmp_path), ["f16"], tmp_path, keep_checkpoints=False)
    assert held == [[], []]
    assert sorted(files) == ["intact f16", "k1-skip f16", "k2-skip f16"] and all(p.stat().st_size for p in
                                                                                   files.values())
    assert sorted(p.name for p in checkpoints.iterdir()) == ["intact", "k1-skip", "k2-skip"]
    assert not any((checkpoints / "k2-skip").iterdir())  # converted, deleted, kept as an empty marker


def test_one_prefill_rows_are_the_prefill_and_the_decode_after_it(tmp_path, benchmark_script):
    """llama-batched-bench's JSONL (the line it prints per prompt length) becomes a prefill row and a
    decode-at-that-depth row, summarised like llama-bench's: pp2048 and tg16@2048."""
    script = benchmark_script("serving_llamacpp")
    line = ('{"n_kv_max": 8208, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, '
            '"n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": %d, "tg": 16, "pl": 1, "n_kv": %d, '
            '"t_pp": %f, "speed_pp": 0, "t_tg": %f, "speed_tg": 0, "t": 0, "speed": 0}')
    stdout = "main: n_kv_max = 8208\n" + line % (2048, 2064, 4.0, 2.0) + "\n" + line % (8192, 8208, 32.0, 4.0) + "\n"
    rows = script.batched_rows(stdout)
    assert [(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in rows] == [
        (2048, 0, 0), (0, 16, 2048), (8192, 0, 0), (0, 16, 8192)]
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    run = {"rows": [{**r, "seconds": r["samples_ns"][0] / 1e9} for r in rows], "kv_bytes_per_token": 1, "peak_rss": 1}
    tests = script.summarize([{"m": run}], {"m": gguf})["m"]["tests"]
    assert {k: v["tokens_per_s"] for k, v in tests.items()} == {
        "pp2048": 512.0, "tg16@2048": 8.0, "pp8192": 256.0, "tg16@8192": 4.0}
    with pytest.raises(SystemExit, match="no result"):
        script.batched_rows("error: failed to load\n")


def test_a_stopped_run_is_summarized_from_its_complete_rounds(tmp_path, benchmark_script, monkeypatch):
    """A run stopped inside round 3 resumes with ``--rounds 2`` as a finished two-round run: the
    partial round is kept on disk for a later ``--rounds 3`` and left out of the summary."""
    import argparse

    script = benchmark_script("serving_llamacpp")
    monkeypatch.setattr(script, "build", lambda: "engine")
    monkeypatch.setattr(script, "bench", lambda *a: pytest.fail("a complete round was measured again"))
    args = argparse.Namespace(prompt=[2048], depth=[2048], gen=16, threads=2, one_prefill=True, rounds=2)
    path = tmp_path / "rounds-p2048-d2048-g16-t2-one-prefill.json"
    done = [{"a": {"r": 1}, "b": {"r": 1}}, {"a": {"r": 2}, "b": {"r": 2}}, {"a": {"r": 3}}]
    path.write_text(json.dumps(done))
    assert script.run_rounds({"a": None, "b": None}, args, tmp_path) == done[:2]
    assert json.loads(path.read_text()) == done
