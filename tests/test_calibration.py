import json

import pytest
import torch

from nose.errors import NoseError
from nose.data.calibration import build_calibration, iter_documents



def test_stdlib_default_packs_full_rows(tok):
    cal = build_calibration(tok, "stdlib", samples=6, seq_len=40)
    assert cal.input_ids.shape == (6, 40)
    assert bool(cal.attention_mask.all())
    assert cal.documents >= 1 and cal.tokens == 240
    again = build_calibration(tok, "stdlib", samples=6, seq_len=40)
    assert again.sha256() == cal.sha256()
    other_seed = build_calibration(tok, "stdlib", samples=6, seq_len=40, seed=1)
    assert other_seed.sha256() != cal.sha256()


def test_text_jsonl_and_chat_sources(tok, tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("def f(x):\n    return x * 2\n" * 30)
    assert build_calibration(tok, str(txt), samples=2, seq_len=16).samples == 2
    jl = tmp_path / "b.jsonl"
    jl.write_text("\n".join(json.dumps({"body": f"print({i} + {i})\n" * 10}) for i in range(5)))
    with pytest.raises(NoseError, match="neither a 'text' string nor a 'messages' list"):
        build_calibration(tok, str(jl), samples=2, seq_len=16)
    assert build_calibration(tok, str(jl), samples=2, seq_len=16, text_field="body").samples == 2
    chat = tmp_path / "c.jsonl"
    msgs = [{"role": "user", "content": "translate to python"}, {"role": "assistant", "content": "def f(): pass"}]
    chat.write_text("\n".join(json.dumps({"messages": msgs}) for _ in range(3)))
    docs = list(iter_documents(str(chat), tok))
    assert docs[0].startswith("user: translate") and "assistant: def f()" in docs[0]
    bad = tmp_path / "d.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(NoseError, match="d.jsonl:1 is not valid JSON"):
        build_calibration(tok, str(bad))


def test_folder_of_code(tok, tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "m.py").write_text("import os\nprint(os.getcwd())\n" * 20)
    (tmp_path / "src" / "Main.java").write_text("class Main { int f() { return 1; } }\n" * 20)
    (tmp_path / "src" / "data.bin").write_bytes(b"\x00\x01")
    docs = list(iter_documents(str(tmp_path / "src"), tok))
    assert len(docs) == 2


def test_a_gtranseval_clone_gives_its_java_programs(tok, tiny_bench, gtranseval):
    tiny = list(iter_documents(str(tiny_bench), tok))
    assert len(tiny) == 8 and tiny[0].startswith("public static int triple_sum")
    java = list(iter_documents(str(gtranseval), tok))
    assert len(java) == 400 and all("(" in d for d in java)
    cal = build_calibration(tok, str(gtranseval), samples=4, seq_len=64)
    assert cal.samples == 4


def test_no_pack_pads_and_masks(tok, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, n in enumerate([3, 30, 8]):
        (folder / f"f{i}.py").write_text("x = 1\n" * n)
    cal = build_calibration(tok, str(folder), samples=3, seq_len=50, pack=False)
    lengths = cal.attention_mask.sum(1)
    assert cal.samples == 3 and lengths.max() <= 50 and lengths.min() < lengths.max()
    pad = tok.pad_token_id
    assert bool((cal.input_ids[cal.attention_mask == 0] == pad).all())


def test_empty_and_too_short_sources_fail_clearly(tok, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoseError, match="is empty"):
        build_calibration(tok, str(empty))
    short = tmp_path / "short.txt"
    short.write_text("x = 1")
    with pytest.raises(NoseError, match="fewer than --seq-len 128"):
        build_calibration(tok, str(short), seq_len=128)
    with pytest.raises(NoseError, match="does not exist"):
        build_calibration(tok, str(tmp_path / "missing"))


def test_fewer_rows_than_asked_is_a_warning(tok, tmp_path):
    short = tmp_path / "s.txt"
    short.write_text("print('hello world')\n" * 12)
    said = []
    cal = build_calibration(tok, str(short), samples=50, seq_len=16, log=said.append)
    assert 1 <= cal.samples < 50 and "fewer than --samples 50" in said[0]
    assert isinstance(cal.input_ids, torch.Tensor)
