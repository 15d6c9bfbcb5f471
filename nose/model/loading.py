"""Load a causal LM from a preset name, a local folder, a ``.gguf`` file or a hub id.

Order of resolution for ``spec``: a preset name (:mod:`nose.model.presets`); an existing path
(a transformers folder, a folder holding one ``.gguf``, or a ``.gguf`` file); otherwise a
Hugging Face hub id, tried from the local hub cache first and downloaded only when the hub is
reachable. The family is checked from the config before any weights are read.

Defaults: fp32 on CPU, bf16 on CUDA; ``device_map="auto"`` hands placement to accelerate for
models larger than one GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from nose.errors import NoseError
from nose.model.adapters import FamilyAdapter, adapter_for
from nose.model.presets import PRESETS, materialize, sha256_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A model ready for the toolkit, with the provenance that result files record."""

    model: torch.nn.Module
    tokenizer: object
    adapter: FamilyAdapter
    spec: str  # what the user passed
    source: dict = field(default_factory=dict)  # kind, path, ...
    weights_sha256: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.adapter.layers_of(self.model))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def absent_attention(self) -> list[int]:
        """Layers whose attention does not run (removed by an export, or switched off)."""
        from nose.model.adapters import is_noop_attention

        return [i for i, layer in enumerate(self.adapter.layers_of(self.model))
                if is_noop_attention(self.adapter.attention_of(layer))]

    def provenance(self) -> dict:
        return {"id": self.spec, **self.source, "family": self.adapter.family,
                "num_layers": self.num_layers, "weights_sha256": self.weights_sha256,
                "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device)}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoseError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise NoseError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}") from None


def hash_files(files: list[Path]) -> str:
    """sha256 over the names and bytes of the weight files, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
    return h.hexdigest()


def weights_fingerprint(files: list[Path]) -> str:
    """:func:`hash_files`, remembered in ``$NOSE_CACHE/weight-hashes.json`` under the files' paths,
    sizes and modification times, so a 13 GB checkpoint is read once, not at every load; a file
    that changes (size or mtime) is hashed again."""
    from nose.files import write_json_atomic
    from nose.model.presets import cache_root

    stats = sorted((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    store = cache_root() / "weight-hashes.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = hash_files(files)
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(store, known)
        except OSError:  # a read-only cache only costs the next load another read
            pass
    return known[key]


def _weight_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")]


REMOTE_CODE = Path(__file__).parent / "remote"  # the DeciLM modeling code nose ships beside every export

# sha256 of remote-code files that earlier nose versions shipped: their checkpoints stay loadable.
EARLIER_REMOTE_CODE = {
    "modeling_decilm.py": {"d3d56785c34e5549457479bf8aebda6a22f82cd08066eec000df48afc35c7e26"},
}


def _own_remote_code(folder: Path) -> dict:
    """Trust a checkpoint's remote code only when it is, byte for byte, what nose shrink ships now
    or shipped before (:data:`EARLIER_REMOTE_CODE`)."""
    shipped = REMOTE_CODE
    files = sorted(shipped.glob("*.py"))

    def ours(f: Path) -> bool:
        theirs = folder / f.name
        if not theirs.exists():
            return False
        data = theirs.read_bytes()
        return data == f.read_bytes() or hashlib.sha256(data).hexdigest() in EARLIER_REMOTE_CODE.get(f.name, ())

    if files and all(ours(f) for f in files):
        return {"trust_remote_code": True}
    return {}


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve(spec: str, log) -> tuple[str, dict, dict, str]:
    """(path or id to load, extra from_pretrained kwargs, source record, weights sha256)."""
    if spec in PRESETS:
        preset = PRESETS[spec]
        folder = materialize(preset, log)
        return str(folder), {}, {"kind": "preset", "preset": spec, "path": str(folder)}, preset.sha256
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise NoseError(f"{spec} is a file but not a .gguf; pass a model folder (with config.json) or a .gguf file")
            return str(path.parent), {"gguf_file": path.name}, {"kind": "gguf", "path": str(path.resolve())}, \
                sha256_file(path)
        if (path / "config.json").exists():
            return str(path), _own_remote_code(path), {"kind": "folder", "path": str(path.resolve())}, \
                weights_fingerprint(_weight_files(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _resolve(str(ggufs[0]), log)
        raise NoseError(f"{spec} is a folder without config.json (or exactly one .gguf file); "
                        "pass a transformers model folder")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1
    if looks_like_path or not _HUB_ID.match(spec):
        raise NoseError(f"model path {spec} does not exist; pass an existing folder, a .gguf file, "
                        f"a hub id (org/name) or a preset ({', '.join(PRESETS)})")
    return _resolve_hub(spec)


def _resolve_hub(repo_id: str) -> tuple[str, dict, dict, str]:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.py", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        if not _hub_reachable():
            raise NoseError(
                f"{repo_id} is not in the local Hugging Face cache and the hub is not reachable "
                f"(offline); pass a local folder, a .gguf file or a preset ({', '.join(PRESETS)})") from None
        try:
            folder = snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as e:
            raise NoseError(f"could not download {repo_id} from the hub: {str(e).splitlines()[0]}") from None
    folder = Path(folder)
    return str(folder), {}, {"kind": "hub", "path": str(folder)}, weights_fingerprint(_weight_files(folder))


def load_config(spec_path: str, kwargs: dict):
    from transformers import AutoConfig

    if "gguf_file" in kwargs and importlib.util.find_spec("gguf") is None:
        raise NoseError("loading a .gguf file needs the gguf package: pip install 'nose-prune[gguf]'")
    try:
        return AutoConfig.from_pretrained(spec_path, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise NoseError(f"cannot read the model config from {spec_path}: {str(e).splitlines()[0]}") from None


@dataclass
class ModelRef:
    """A resolved model: where its files are and its config, before any weights are read."""

    spec: str
    path: str
    kwargs: dict  # extra from_pretrained arguments (gguf_file)
    source: dict
    weights_sha256: str
    config: object
    adapter: FamilyAdapter

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def absent_attention(self) -> list[int]:
        """Layers whose attention an earlier export removed or replaced (nemotron-nas block_configs)."""
        blocks = getattr(self.config, "block_configs", None) or []
        return [i for i, b in enumerate(blocks) if b["attention"]["no_op"] or b["attention"].get("replace_with_linear")]

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.path, **self.kwargs)
        except (OSError, ValueError) as e:
            raise NoseError(f"cannot load the tokenizer of {self.spec}: {str(e).splitlines()[0]}") from None


def resolve_model(spec: str, log=print) -> ModelRef:
    """Find ``spec``, read its config and check its family; cheap (weights are not read)."""
    path, kwargs, source, digest = _resolve(spec, log)
    config = load_config(path, kwargs)
    return ModelRef(spec, path, kwargs, source, digest, config, adapter_for(config.model_type))


def load_model(spec: "str | ModelRef", dtype: str = "auto", device: str = "auto", device_map: str | None = None,
               tokenizer=None, log=print) -> LoadedModel:
    """Load a model for inference (eval mode, no grad); ``spec`` as in :func:`resolve_model`."""
    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec, log)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    from transformers import AutoModelForCausalLM

    place = {"device_map": device_map} if device_map else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch_dtype, **ref.kwargs, **place)
    except Exception as e:  # corrupt or incomplete weights surface as many exception types
        raise NoseError(f"cannot load model {ref.spec}: {str(e).splitlines()[0]}") from None
    if not device_map:
        model.to(dev)
    model.eval().requires_grad_(False)
    return LoadedModel(model, tokenizer or ref.load_tokenizer(), ref.adapter, ref.spec, ref.source,
                       ref.weights_sha256)


def from_module(model: torch.nn.Module, tokenizer=None, spec: str = "<in-memory>") -> LoadedModel:
    """Wrap a model built in memory (tests, notebooks); its hash is over the state dict."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    model.eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, adapter_for(model.config.model_type), spec,
                       {"kind": "memory"}, h.hexdigest())
