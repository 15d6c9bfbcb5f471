"""Calibration text for the search: where it comes from and how it becomes token rows.

Sources (``source`` argument / ``--calibration``):

- ``stdlib`` (default, exists on every machine): the ``.py`` files of the running interpreter's
  standard library, in an order shuffled by the seed.
- a ``.jsonl`` file: each record's ``text_field`` (default ``text``), or its ``messages`` (chat
  turns, rendered with the tokenizer's chat template when it has one).
- any other text file: one document.
- a clone of PolyEval/G-TransEval (a folder holding ``G-TransEval/Type1/Java.test`` or
  ``Type1/Java.test``): every Java program of Types 1–4, one document each.
- any other folder: its source files (by extension), recursively, shuffled by the seed.

Packing (default): documents are tokenized without special tokens, each cut to its first
``seq_len`` tokens (so the rows span many documents; a single text file is not cut), joined with the EOS token and cut into
``samples`` rows of ``seq_len`` tokens; no padding. Without packing each document
is one row, truncated to ``seq_len`` and right-padded; the mask marks the real tokens.
Documents are read lazily until enough tokens are collected.
"""

from __future__ import annotations

import hashlib
import json
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from nose.errors import NoseError

SOURCE_EXTENSIONS = {".py", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".js", ".ts", ".go",
                     ".rs", ".rb", ".kt", ".scala", ".swift", ".php", ".sh", ".lua", ".r", ".jl"}


@dataclass
class CalibrationSet:
    """Token rows for calibration; ``attention_mask`` marks the counted tokens."""

    input_ids: torch.Tensor  # (N, T) int64
    attention_mask: torch.Tensor  # (N, T) int64, 1 = real token
    source: str
    documents: int
    packed: bool

    @property
    def samples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    def sha256(self) -> str:
        """Hash of the exact token ids and mask used (recorded in search.json)."""
        h = hashlib.sha256()
        h.update(self.input_ids.contiguous().numpy().astype("<i8").tobytes())
        h.update(self.attention_mask.contiguous().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.samples, batch_size):
            yield (self.input_ids[start:start + batch_size],
                   self.attention_mask[start:start + batch_size])

    def describe(self) -> dict:
        return {"source": self.source, "samples": self.samples, "seq_len": self.seq_len,
                "tokens": self.tokens, "documents": self.documents, "packed": self.packed,
                "token_ids_sha256": self.sha256()}


def _gtranseval_root(folder: Path) -> Path | None:
    for root in (folder / "G-TransEval", folder):
        if (root / "Type1" / "Java.test").exists():
            return root
    return None


def iter_documents(source: str, tokenizer=None, seed: int = 0, text_field: str = "text") -> Iterator[str]:
    """Yield the documents of ``source`` in a fixed order (see module docstring)."""
    if source == "stdlib":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
        yield from _read_files(files, seed)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise NoseError(f"calibration source {source} does not exist; pass a file, a folder or 'stdlib'")
    if path.is_dir():
        root = _gtranseval_root(path)
        if root is not None:
            for k in (1, 2, 3, 4):
                test = root / f"Type{k}" / "Java.test"
                if test.exists():
                    yield from (line.strip() for line in test.read_text(encoding="utf-8").splitlines() if line.strip())
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SOURCE_EXTENSIONS)
        yield from _read_files(files, seed)
        return
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, tokenizer, text_field)
        return
    yield path.read_text(encoding="utf-8", errors="replace")


def _read_files(files: list[Path], seed: int) -> Iterator[str]:
    random.Random(seed).shuffle(files)
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            yield text


def _jsonl_documents(path: Path, tokenizer, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise NoseError(f"{path}:{lineno} is not valid JSON ({e.msg})") from None
            if isinstance(record.get("messages"), list):
                yield _render_chat(record["messages"], tokenizer)
            elif isinstance(record.get(text_field), str):
                yield record[text_field]
            else:
                raise NoseError(f"{path}:{lineno} has neither a {text_field!r} string nor a 'messages' list; "
                                "set --text-field to the field that holds the text")


def _render_chat(messages: list, tokenizer) -> str:
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def build_calibration(tokenizer, source: str = "stdlib", samples: int = 32, seq_len: int = 256,
                      seed: int = 0, pack: bool = True, text_field: str = "text", log=print) -> CalibrationSet:
    if samples < 1 or seq_len < 2:
        raise NoseError(f"need --samples >= 1 and --seq-len >= 2 (got {samples}, {seq_len})")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    docs = 0
    rows: list[list[int]] = []
    stream: list[int] = []
    want = samples * seq_len
    # Many-document sources give at most one row per document, so rows span many documents.
    single_file = source != "stdlib" and Path(source).is_file() and Path(source).suffix != ".jsonl"
    cap = None if single_file else seq_len
    for text in iter_documents(source, tokenizer, seed, text_field):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        docs += 1
        if pack:
            stream.extend(ids[:cap])
            if eos is not None:
                stream.append(eos)
            if len(stream) >= want:
                break
        else:
            rows.append(ids[:seq_len])
            if len(rows) >= samples:
                break
    if docs == 0:
        raise NoseError(f"calibration source {source} is empty: it holds no text")
    if pack:
        if len(stream) < seq_len:
            raise NoseError(f"calibration source {source} has {len(stream)} tokens, fewer than --seq-len "
                            f"{seq_len}; add text or lower --seq-len")
        rows = [stream[i * seq_len:(i + 1) * seq_len] for i in range(min(samples, len(stream) // seq_len))]
    if len(rows) < samples:
        log(f"warning: calibration source {source} gives {len(rows)} samples, fewer than --samples {samples}")
    width = seq_len if pack else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, :len(row)] = torch.tensor(row)
        mask[k, :len(row)] = 1
    return CalibrationSet(ids, mask, source, docs, pack)
