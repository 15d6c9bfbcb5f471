"""A GGUF file that stock llama.cpp loads, made by llama.cpp's own converter from a checkpoint.

nose's exports are DeciLM checkpoints; llama.cpp's converter maps them to its ``deci``
architecture (per-layer head counts, ``no_op`` and linear-attention blocks, biases) and every
other checkpoint to its own architecture. Three gaps in the converter are closed here, in the
converter's process and with the converter's own code, never by hand-writing what it does:

- its DECI class writes a vocabulary only for Llama 3's 128,256-token tokenizer or a SentencePiece Llama
  tokenizer; any other byte-level BPE vocabulary (SmolLM2, Qwen2.5, deepseek-coder) goes through
  the converter's GPT-2 BPE path, the one its other classes use, which also picks the
  pre-tokenizer by the tokenizer's own behaviour (so prompt token ids equal the tokenizer's);
- its Llama and Qwen2 classes (intact models, which exports are measured against) import
  ``sentencepiece`` before they look for a SentencePiece model, and fall back to BPE only when
  there is none; that check is made first, so a byte-level BPE model needs no ``sentencepiece``;
- for checkpoints with ``block_configs`` its DECI class writes no rope scaling but llama3's; linear scaling
  (the design card's model: ×4) is written the way its generic models write it. Other kinds
  are refused rather than silently dropped.

The conversion runs in a child interpreter with the converter's ``gguf-py`` first on its path,
so it never meets another ``gguf`` package installed beside nose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nose.errors import NoseError
from nose.files import check_output_dir, read_json, remove_stale_temporaries

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
MAGIC = b"GGUF"

CONVERT = r'''
import runpy, sys
src, model, out, outtype = sys.argv[1:5]
sys.path[:0] = [src + "/gguf-py", src]
import conversion.deci as deci
from conversion.base import TextModel, gguf

Deci = deci.DeciModel
llama_vocab = Deci.set_vocab
deci_parameters = Deci.set_gguf_parameters


def set_vocab(self):
    if self.hparams.get("vocab_size", 128256) == 128256 or (self.dir_model / "tokenizer.model").exists():
        return llama_vocab(self)
    self._set_vocab_gpt2()


def set_gguf_parameters(self):
    deci_parameters(self)
    if "block_configs" not in self.hparams:
        return  # the DeciLM-7B branch runs the generic code, rope scaling included
    rope = self.rope_parameters.get("full_attention", self.rope_parameters)
    kind = (rope.get("rope_type") or "default").lower()
    if kind == "linear":
        self.gguf_writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        self.gguf_writer.add_rope_scaling_factor(rope["factor"])
    elif kind not in ("default", "llama3"):
        raise SystemExit(f"error: rope scaling {kind!r} is not written by llama.cpp's DECI converter")


sentencepiece_vocab = TextModel._create_vocab_sentencepiece


def create_vocab_sentencepiece(self):
    # the converter's own contract (Llama's and Qwen2's set_vocab fall back to BPE on it) before it imports
    # sentencepiece, which a byte-level BPE model never needs
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError(f"File not found: {self.dir_model / 'tokenizer.model'}")
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        raise SystemExit("error: this model has a SentencePiece tokenizer; pip install sentencepiece")
    return sentencepiece_vocab(self)


TextModel._create_vocab_sentencepiece = create_vocab_sentencepiece
Deci.set_vocab = set_vocab
Deci.set_gguf_parameters = set_gguf_parameters
sys.argv = ["convert_hf_to_gguf.py", model, "--outfile", out, "--outtype", outtype]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
'''


def _ffn_width_llamacpp(ffn_mult: float, hidden: int) -> int:
    """The MLP width llama.cpp's DECI converter derives from ``ffn_mult`` (rounded up to 256)."""
    width = int(2 * ffn_mult * hidden / 3)
    return width if width % 256 == 0 else width + 256 - width % 256


def check_convertible(model: Path) -> dict:
    """The checkpoint's config, refused early where llama.cpp would read it wrong."""
    config_path = Path(model) / "config.json"
    if not config_path.is_file():
        raise NoseError(f"{model} is not a checkpoint folder (no config.json); pass a nose export or a "
                        "transformers model folder")
    config = read_json(config_path, "a model config")
    if not isinstance(config, dict):
        raise NoseError(f"{config_path} is not a model config (not a JSON object)")
    if "block_configs" in config:
        hidden = config["hidden_size"]
        for i, block in enumerate(config["block_configs"]):
            mult = block.get("ffn", {}).get("ffn_mult")
            width = config.get("intermediate_size")
            if mult is not None and width and _ffn_width_llamacpp(mult, hidden) != width:
                raise NoseError(f"{model}: layer {i}'s MLP width {width} is not what llama.cpp's DECI converter "
                                f"derives from ffn_mult (it rounds 2/3·ffn_mult·hidden up to a multiple of 256: "
                                f"{_ffn_width_llamacpp(mult, hidden)}); such a model cannot be served as deci")
    return config


def check_gguf_target(out: Path, outtype: str, overwrite: bool) -> None:
    """Refuse, before any work, a GGUF target nose must not write or replace."""
    if outtype not in OUTTYPES:
        raise NoseError(f"--outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    out = Path(out)
    if out.suffix != ".gguf":
        raise NoseError(f"--out {out}: name the file *.gguf")
    if out.exists():
        if out.is_dir() or not overwrite:
            raise NoseError(f"{out} exists; pass --overwrite to replace it" if not out.is_dir()
                            else f"{out} is a folder; name a .gguf file")
        with open(out, "rb") as f:
            if f.read(4) != MAGIC:
                raise NoseError(f"{out} is not a GGUF file; --overwrite replaces only GGUF files")
    check_output_dir(out.parent)


def write_gguf(model: Path, out: Path, outtype: str = "f16", overwrite: bool = False, log=print) -> Path:
    """Convert ``model`` (a checkpoint folder) to ``out``; written beside it and renamed at the end."""
    from nose.engines.llamacpp import source

    out = Path(out)
    check_gguf_target(out, outtype, overwrite)
    check_convertible(model)
    src = source(log)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # a killed conversion's file
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    log(f"converting {model} to {out} ({outtype}) with llama.cpp's converter")
    try:
        done = subprocess.run([sys.executable, "-c", CONVERT, str(src), str(model), str(tmp), outtype],
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            why = next((line for line in reversed(lines) if line.startswith("error:")), None) or \
                "\n".join(lines[-6:])
            raise NoseError(f"llama.cpp's converter could not convert {model}: {why}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def describe(path: Path) -> dict:
    """Architecture, per-layer head counts and tensor names of a GGUF file (llama.cpp's reader)."""
    from nose.engines.llamacpp import source

    src = source()
    script = ("import json, sys; sys.path.insert(0, sys.argv[1] + '/gguf-py'); from gguf import GGUFReader\n"
              "r = GGUFReader(sys.argv[2]); arch = bytes(r.fields['general.architecture'].parts[-1]).decode()\n"
              "def field(k):\n"
              "    f = r.fields.get(k)\n"
              "    return None if f is None else [f.parts[i].tolist()[0] for i in f.data]\n"
              "print(json.dumps({'arch': arch, 'heads': field(arch + '.attention.head_count'),\n"
              "  'kv_heads': field(arch + '.attention.head_count_kv'),\n"
              "  'rope_scaling': field(arch + '.rope.scaling.factor'),\n"
              "  'tensors': {t.name: t.tensor_type.name for t in r.tensors}}))")
    done = subprocess.run([sys.executable, "-c", script, str(src), str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise NoseError(f"could not read {path} as GGUF: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)
