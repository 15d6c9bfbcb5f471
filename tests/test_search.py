import pytest
import torch

from nose.testing.naive_search import naive_search
from nose.errors import NoseError
from nose.model.loading import from_module
from nose.model.switches import SwitchedAttention
from nose.data.calibration import build_calibration
from nose.search.config import SearchConfig
from nose.search.run import run_search
from nose.search.record import read_record
from nose.testing import tiny_loaded, tiny_model


def assert_matches_oracle(fast, naive):
    assert fast["order"] == naive["order"]
    for k, step in enumerate(fast["steps"]):
        assert step["base_value"] == pytest.approx(naive["steps"][k]["base"], abs=1e-6)
        te = {c["layer"]: c["score"] for c in step["candidates"]}
        assert te.keys() == naive["steps"][k]["candidates"].keys()
        for i, value in te.items():
            assert value == pytest.approx(naive["steps"][k]["candidates"][i], abs=1e-6)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("mode,target", [("skip", "final"), ("double", "final"), ("thesis", "final"),
                                         ("skip", "logits"), ("skip", "layer:3")])
def test_fast_search_equals_naive_oracle(family, mode, target, tok, calib):
    lm = tiny_loaded(family, tok)
    fast = run_search(lm, calib, SearchConfig(steps=3, mode=mode, target=target, bootstrap=0, batch_size=4))
    naive = naive_search(lm, calib, 3, mode=mode, target=target, batch_size=4)
    assert_matches_oracle(fast, naive)
    if target == "final":  # the prefix cache saves work and never computes logits
        assert fast["work"]["head_forwards"] == 0
        assert fast["work"]["layer_forwards"] < naive["work"]["layer_forwards"]


def test_padding_is_excluded_from_the_search(tok, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, n in enumerate([1, 25, 2, 14]):
        (folder / f"f{i}.py").write_text(f"value_{i} = {i} * 3\nprint(value_{i})\n" * n)
    cal = build_calibration(tok, str(folder), samples=4, seq_len=64, pack=False)
    assert (cal.attention_mask == 0).any()
    lm = tiny_loaded("llama", tok)
    fast = run_search(lm, cal, SearchConfig(steps=2, bootstrap=0, batch_size=3))
    assert_matches_oracle(fast, naive_search(lm, cal, 2, batch_size=3))
    cal.input_ids[cal.attention_mask == 0] = 7  # other pad ids: same result
    again = run_search(lm, cal, SearchConfig(steps=2, bootstrap=0, batch_size=3))
    assert [s["score"] for s in again["steps"]] == pytest.approx([s["score"] for s in fast["steps"]], abs=1e-9)


def test_candidates_are_scored_from_the_same_state_and_model_is_restored(tok, calib):
    lm = tiny_loaded("llama", tok)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    record = run_search(lm, calib, SearchConfig(steps=2, bootstrap=0))
    assert not any(isinstance(m, SwitchedAttention) for m in lm.model.modules())
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    # step 2's base entropy is step 1's entropy of the winner: S grew by exactly that layer
    first, second = record["steps"]
    winner = next(c for c in first["candidates"] if c["layer"] == first["selected"])
    assert second["base_value"] == pytest.approx(winner["value"], abs=1e-9)
    assert second["removed_before"] == [first["selected"]]
    assert 0 not in record["order"]


def test_bootstrap_intervals_and_separation(tok, calib):
    lm = tiny_loaded("qwen2", tok)
    rec = run_search(lm, calib, SearchConfig(steps=2, bootstrap=300, seed=3))
    for step in rec["steps"]:
        for c in step["candidates"]:
            lo, hi = c["ci95"]
            assert lo <= hi
        assert isinstance(step["separated"], bool) and 0.0 <= step["p_win"] <= 1.0
        assert step["runner_up"] != step["selected"]
        assert step["runner_up_score"] >= step["score"]
    again = run_search(lm, calib, SearchConfig(steps=2, bootstrap=300, seed=3))
    assert [s["ci95"] for s in again["steps"]] == [s["ci95"] for s in rec["steps"]]


def test_protect_and_allow_layer0(tok, calib):
    lm = tiny_loaded("llama", tok)
    rec = run_search(lm, calib, SearchConfig(steps=5, protect=[1], protect_layer0=False, bootstrap=0))
    assert sorted(rec["order"]) == [0, 2, 3, 4, 5]
    assert rec["settings"]["protect"] == [1]


@pytest.mark.parametrize("kwargs,message", [
    (dict(steps=6), "--steps 6 is larger than the 5 candidate layers"),
    (dict(steps=2, protect=[9]), "--protect layer index 9 is out of range"),
    (dict(steps=2, target="layer:6"), "target layer 6 is out of range"),
    (dict(steps=2, target="middle"), "unknown target 'middle'"),
    (dict(steps=2, mode="zero"), "unknown --replace 'zero'"),
    (dict(steps=0), "--steps must be at least 1"),
])
def test_config_errors(kwargs, message, tok, calib):
    lm = tiny_loaded("llama", tok)
    with pytest.raises(NoseError, match=message):
        run_search(lm, calib, SearchConfig(**kwargs))


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tok, calib, tmp_path):
    lm = tiny_loaded("qwen2", tok)
    full = run_search(lm, calib, SearchConfig(steps=3, bootstrap=50), out_dir=tmp_path / "full")
    run_search(lm, calib, SearchConfig(steps=1, bootstrap=50), out_dir=tmp_path / "part")
    partial = read_record(tmp_path / "part")
    assert len(partial["steps"]) == 1
    resumed = run_search(lm, calib, SearchConfig(steps=3, bootstrap=50), out_dir=tmp_path / "part",
                          resume=partial)
    assert resumed["order"] == full["order"]
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in full["steps"]]
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in resumed["steps"]] == strip
    assert read_record(tmp_path / "part")["order"] == full["order"]


def test_resume_refuses_another_model_calibration_or_settings(tok, calib, tmp_path):
    lm = tiny_loaded("llama", tok)
    rec = run_search(lm, calib, SearchConfig(steps=1, bootstrap=0), out_dir=tmp_path)
    other = from_module(tiny_model("llama", seed=1, vocab_size=len(tok)), tok)
    with pytest.raises(NoseError, match="cannot resume: the search file is for model"):
        run_search(other, calib, SearchConfig(steps=2, bootstrap=0), resume=rec)
    cal2 = build_calibration(tok, "stdlib", samples=6, seq_len=48, seed=9)
    with pytest.raises(NoseError, match="other calibration tokens"):
        run_search(lm, cal2, SearchConfig(steps=2, bootstrap=0), resume=rec)
    with pytest.raises(NoseError, match="--mode was 'skip'"):
        run_search(lm, calib, SearchConfig(steps=2, bootstrap=0, mode="double"), resume=rec)


def test_resume_with_fewer_steps_keeps_every_saved_step(tok, calib, tmp_path):
    lm = tiny_loaded("llama", tok)
    full = run_search(lm, calib, SearchConfig(steps=3, bootstrap=0), out_dir=tmp_path)
    again = run_search(lm, calib, SearchConfig(steps=1, bootstrap=0), out_dir=tmp_path, resume=full)
    assert again["order"] == full["order"] and len(again["steps"]) == 3
    assert read_record(tmp_path)["order"] == full["order"]
    one_shot = run_search(lm, calib, SearchConfig(steps=4, criterion="last"), out_dir=tmp_path / "last")
    assert len(run_search(lm, calib, SearchConfig(steps=2, criterion="last"), resume=one_shot)["steps"]) == 4


def test_resume_refuses_another_dtype_and_keeps_the_provenance(tok, calib, tmp_path):
    lm = tiny_loaded("llama", tok)
    first = run_search(lm, calib, SearchConfig(steps=1, bootstrap=0), out_dir=tmp_path)
    moved = dict(first, model=dict(first["model"], dtype="bfloat16"))
    with pytest.raises(NoseError, match="made with dtype bfloat16, now float32; pass --dtype bfloat16"):
        run_search(lm, calib, SearchConfig(steps=2, bootstrap=0), resume=moved)
    renamed = dict(first, model=dict(first["model"], id="the-original-id"))
    resumed = run_search(lm, calib, SearchConfig(steps=2, bootstrap=0), resume=renamed)
    assert resumed["model"]["id"] == "the-original-id"  # the file's provenance is not overwritten
    assert [r["model"]["id"] for r in resumed["resumed"]] == [lm.provenance()["id"]]
