"""llama.cpp's own converter reads nose's exports: per-layer head counts, linear-attention blocks.

The converter (``convert_hf_to_gguf.py``, its ``conversion`` package and ``gguf-py``) comes from
the llama-cpp-python 0.3.36 sdist on PyPI (no compilation), fetched once into the nose cache.
One override, stated here and in the README: that converter's DECI class writes a vocabulary
only for Llama 3's 128,256-token tokenizer or a SentencePiece-style Llama tokenizer, so for
SmolLM2's byte-level BPE its ``set_vocab`` is pointed at the converter's own GPT-2 BPE path,
the one it uses for every other byte-level BPE model. Everything the test checks (blocks,
head counts, tensors) is the converter's unmodified code.
"""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SDIST = "llama-cpp-python==0.3.36"
CONVERT = '''
import json, runpy, sys
src, export, gguf_path = sys.argv[1:4]
sys.path[:0] = [src + "/gguf-py", src]
import conversion.deci as deci
deci.DeciModel.set_vocab = lambda self: self._set_vocab_gpt2()  # see the test module's docstring
sys.argv = ["convert_hf_to_gguf.py", export, "--outfile", gguf_path, "--outtype", "f32"]
try:
    runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
from gguf import GGUFReader
r = GGUFReader(gguf_path)
field = lambda k: [int(r.fields[k].parts[i][0]) for i in r.fields[k].data]
print("GGUF " + json.dumps({"arch": bytes(r.fields["general.architecture"].parts[-1]).decode(),
                  "heads": field("deci.attention.head_count"), "kv_heads": field("deci.attention.head_count_kv"),
                  "tensors": sorted(t.name for t in r.tensors)}))
'''


@pytest.fixture(scope="module")
def converter() -> Path:
    """The vendored llama.cpp converter of the llama-cpp-python sdist, extracted once."""
    from nose.model.presets import cache_root

    root = cache_root() / "llama.cpp-0.3.36"
    if not (root / "convert_hf_to_gguf.py").exists():
        download = cache_root() / "downloads"
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--quiet", "-d", str(download), SDIST], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        tarball = next(download.glob("llama_cpp_python-0.3.36.tar.gz"))
        prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
        with tarfile.open(tarball) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(prefix) and (
                m.name == prefix + "convert_hf_to_gguf.py" or m.name.startswith((prefix + "conversion/",
                                                                                  prefix + "gguf-py/")))]
            for m in members:
                m.name = m.name[len(prefix):]
            tf.extractall(root, members=members, filter="data")
    return root


def test_llamacpp_converter_reads_removed_and_linear_layers(converter, tmp_path):
    from nose.model.loading import load_model
    from nose.model.replacements import Linear, Skip
    from nose.shrink.export import export_checkpoint

    smol = load_model("smollm2-135m")
    g = torch.Generator().manual_seed(0)
    export = export_checkpoint(smol, {20: Skip(), 24: Skip(), 27: Linear(torch.randn(576, 576, generator=g) * 0.02)},
                               tmp_path / "export")
    config = json.loads((export / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"  # llama.cpp refused gguf before
    done = subprocess.run([sys.executable, "-c", CONVERT, str(converter), str(export), str(tmp_path / "m.gguf")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    gguf = json.loads(done.stdout.rpartition("GGUF ")[2].splitlines()[0])  # stdout also holds the converter's prints
    assert gguf["arch"] == "deci"
    assert gguf["heads"] == [0 if i in (20, 24) else 9 for i in range(30)]  # linear attention keeps n_head
    assert gguf["kv_heads"] == [0 if i in (20, 24, 27) else 3 for i in range(30)]  # and stores no K/V
    tensors = set(gguf["tensors"])
    assert "blk.27.attn_output.weight" in tensors and "blk.27.attn_norm.weight" in tensors
    assert not {f"blk.27.attn_{t}.weight" for t in "qkv"} & tensors
    assert not any(t.startswith(("blk.20.attn", "blk.24.attn")) for t in tensors)
    assert "blk.19.attn_q.weight" in tensors


def test_preset_folders_describe_plain_weights():
    from nose.model.presets import PRESETS, materialize

    config = json.loads((materialize(PRESETS["smollm2-135m"]) / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
