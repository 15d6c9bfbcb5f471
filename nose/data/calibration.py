"""Calibration text for the search: where it comes from and how it becomes token rows.

Sources (``source`` argument / ``--calibration``):

- ``stdlib`` (default, exists on every machine): the ``.py`` files of the running interpreter's
  standard library, in an order shuffled by the seed.
- a ``.jsonl`` file: each record's ``text_field`` (default ``text``); or, when its records hold
  ``messages`` (chat JSONL, e.g. the self-distilled transcripts of :mod:`nose.data.transcripts`),
  one row per conversation (see below).
- any other text file: one document.
- a clone of PolyEval/G-TransEval (a folder holding ``G-TransEval/Type1/Java.test`` or
  ``Type1/Java.test``): every Java program of Types 1–4, one document each.
- any other folder: its source files (by extension), recursively, shuffled by the seed.

Packing (default): documents are tokenized without special tokens, each cut to its first
``seq_len`` tokens (so the rows span many documents; a single text file is not cut), joined with the EOS token and cut into
``samples`` rows of ``seq_len`` tokens; no padding. Without packing each document
is one row, truncated to ``seq_len`` and right-padded; the mask marks the real tokens.
Documents are read lazily until enough tokens are collected.

Chat JSONL is never packed: a conversation is one row (rendered with the chat template, cut to
``seq_len``), so an answer always sees its prompt. Rows are sorted by length so that batches
carry little padding. ``count`` decides which tokens the statistics count: ``answer`` (the
assistant's answer tokens, see :mod:`nose.data.chat`) or ``all`` real tokens. Every other source
counts all real tokens.

Counted *positions* depend on the statistic (:class:`Batch`): features of token t count when
token t is counted; a next-token prediction at t (loss, KL) counts when token t is real and
token t + 1 is counted.
"""

from __future__ import annotations

import hashlib
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from nose.data.chat import chat_rows, is_chat_file, is_conversation, render_chat
from nose.errors import NoseError
from nose.files import jsonl_records

SOURCE_EXTENSIONS = {".py", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".js", ".ts", ".go",
                     ".rs", ".rb", ".kt", ".scala", ".swift", ".php", ".sh", ".lua", ".r", ".jl"}


COUNTS = ("answer", "all")


@dataclass
class Batch:
    """Calibration rows of one forward, and the positions whose outputs a statistic reads.

    ``positions`` (B, T) bool is ``count_mask`` for per-token features, or the next-token
    positions (token real, next token counted) for predictions; statistics receive the target's
    outputs at those positions only, flattened to (K, F) in row-major order. ``reference`` holds
    the intact model's next-token log-probs at the positions (K, V) for criteria that compare
    against it (``kl``); it is filled by the search.
    """

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token (what attention sees)
    count_mask: torch.Tensor  # (B, T), 1 = counted token
    positions: torch.Tensor  # (B, T) bool
    reference: torch.Tensor | None = None  # (K, V) float32 log-probs

    @property
    def rows(self) -> torch.Tensor:
        """(K,) the row of each read position."""
        return self.positions.nonzero()[:, 0]

    @property
    def next_tokens(self) -> torch.Tensor:
        """(K,) the token each read position predicts (next-token positions only)."""
        shifted = torch.zeros_like(self.input_ids)
        shifted[:, :-1] = self.input_ids[:, 1:]
        return shifted[self.positions]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


def next_token_positions(attention_mask: torch.Tensor, count_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: position t is real and predicts a counted token t + 1."""
    pos = torch.zeros_like(attention_mask, dtype=torch.bool)
    pos[:, :-1] = attention_mask[:, :-1].bool() & count_mask[:, 1:].bool()
    return pos


def trimmed(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A batch (ids, attention mask, further per-token tensors) without its trailing columns of
    padding only. The model is causal, so the logits of real tokens, and every statistic or loss
    over them, stay the same; a batch of short rows in long ones costs what its tokens cost."""
    real = tensors[1].any(0).nonzero()
    length = int(real.max()) + 1 if len(real) else 1
    return tuple(t[:, :length] for t in tensors)


@dataclass
class CalibrationSet:
    """Token rows for calibration; ``attention_mask`` marks the real tokens, ``count_mask`` the
    tokens statistics count (the same unless a chat source counts answers only)."""

    input_ids: torch.Tensor  # (N, T) int64
    attention_mask: torch.Tensor  # (N, T) int64, 1 = real token
    source: str
    documents: int
    packed: bool
    count_mask: torch.Tensor | None = None  # (N, T) int64; None: every real token counts
    count: str = "all"

    def __post_init__(self):
        if self.count_mask is None:
            self.count_mask = self.attention_mask.clone()

    @property
    def samples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def counted_tokens(self) -> int:
        return int(self.count_mask.sum())

    def batch_count(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields."""
        return -(-self.samples // batch_size)

    def sha256(self) -> str:
        """Hash of the exact token ids and masks used (recorded in search.json)."""
        h = hashlib.sha256()
        h.update(self.input_ids.contiguous().numpy().astype("<i8").tobytes())
        h.update(self.attention_mask.contiguous().numpy().astype("<i8").tobytes())
        if not torch.equal(self.count_mask, self.attention_mask):
            h.update(self.count_mask.contiguous().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def batches(self, batch_size: int, positions: str = "token") -> Iterator[Batch]:
        """Rows in batches, trimmed to the longest row of each batch; ``positions``: ``token``
        (count_mask) or ``next`` (next-token predictions of counted tokens)."""
        for start in range(0, self.samples, batch_size):
            ids, att, count = trimmed(*(t[start:start + batch_size]
                                        for t in (self.input_ids, self.attention_mask, self.count_mask)))
            pos = count.bool() if positions == "token" else next_token_positions(att, count)
            yield Batch(ids, att, count, pos)

    def describe(self) -> dict:
        return {"source": self.source, "samples": self.samples, "seq_len": self.seq_len,
                "tokens": self.tokens, "counted_tokens": self.counted_tokens, "count": self.count,
                "documents": self.documents, "packed": self.packed, "token_ids_sha256": self.sha256()}


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
    for lineno, record in jsonl_records(path, f"a record with a {text_field!r} string or a 'messages' list"):
        if "messages" in record:
            if not is_conversation(record["messages"]):
                raise NoseError(f"{path}:{lineno} has a 'messages' field that is not a list of role/content objects")
            yield render_chat(record["messages"], tokenizer)
        elif isinstance(record.get(text_field), str):
            yield record[text_field]
        else:
            raise NoseError(f"{path}:{lineno} has neither a {text_field!r} string nor a 'messages' list; "
                            "set --text-field to the field that holds the text")


def _padded(rows: list[list[int]], pad: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, :len(row)] = torch.tensor(row)
        mask[k, :len(row)] = 1
    return ids, mask


def _pad_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)


def chat_calibration(tokenizer, source: str, samples: int, seq_len: int, count: str, log=print) -> CalibrationSet:
    """One row per conversation of a chat JSONL, sorted by length (see module docstring)."""
    rows = sorted(chat_rows(tokenizer, Path(source), samples, seq_len), key=lambda r: len(r[0]))
    if len(rows) < samples:
        log(f"warning: calibration source {source} gives {len(rows)} samples, fewer than --samples {samples}")
    ids, att = _padded([r[0] for r in rows], _pad_id(tokenizer), max(len(r[0]) for r in rows))
    answer, _ = _padded([r[1] for r in rows], 0, ids.shape[1])
    count_mask = (answer * att) if count == "answer" else att.clone()
    return CalibrationSet(ids, att, source, len(rows), False, count_mask, count)


def build_calibration(tokenizer, source: str = "stdlib", samples: int = 32, seq_len: int = 256,
                      seed: int = 0, pack: bool = True, text_field: str = "text", count: str = "answer",
                      log=print) -> CalibrationSet:
    """Calibration rows from ``source``; ``count`` applies to chat sources (see module docstring)."""
    if samples < 1 or seq_len < 2:
        raise NoseError(f"need --samples >= 1 and --seq-len >= 2 (got {samples}, {seq_len})")
    if count not in COUNTS:
        raise NoseError(f"unknown --count {count!r}; choose answer or all")
    if source != "stdlib" and is_chat_file(Path(source).expanduser()):
        return chat_calibration(tokenizer, str(Path(source).expanduser()), samples, seq_len, count, log)
    eos = tokenizer.eos_token_id
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
    ids, mask = _padded(rows, _pad_id(tokenizer), seq_len if pack else max(len(r) for r in rows))
    return CalibrationSet(ids, mask, source, docs, pack)
