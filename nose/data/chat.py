"""Chat transcripts as token rows: render with the tokenizer's template, mark the answer tokens.

Shared by calibration (statistics may count the answer tokens only) and healing (``ce`` learns
them). The *answer* of an assistant turn is what the model generates after the generation
prompt (for Qwen: after ``<|im_start|>assistant\\n``), its end-of-turn token included; the turn
header is context, like the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from nose.errors import NoseError
from nose.files import jsonl_records


def is_conversation(messages) -> bool:
    """A ``messages`` value nose can render: a list of objects with string ``role`` and ``content``."""
    return isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)


def render_chat(messages: list, tokenizer, add_generation_prompt: bool = False) -> str:
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)
    return text + ("\nassistant: " if add_generation_prompt else "")


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assistant_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and a 0/1 mask of the assistant turns' answer tokens."""
    ids: list[int] = []
    mask: list[int] = []
    for k, message in enumerate(messages):
        upto = _ids(tokenizer, render_chat(messages[:k + 1], tokenizer))
        new = len(upto) - len(ids)
        if message.get("role") == "assistant":
            header = _ids(tokenizer, render_chat(messages[:k], tokenizer, add_generation_prompt=True))
            context = len(header) - len(ids) if upto[:len(header)] == header else 0
            mask += [0] * context + [1] * (new - context)
        else:
            mask += [0] * new
        ids = upto
    return ids, mask


def is_chat_file(path: Path) -> bool:
    """True for a ``.jsonl`` whose first record holds a ``messages`` list."""
    path = Path(path)
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as f:  # the readers report bad bytes by line
        for line in f:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(record, dict) and isinstance(record.get("messages"), list)
    return False


def count_records(path: Path) -> int:
    """Conversations (non-blank lines) in a chat JSONL."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if line.strip())


def chat_rows(tokenizer, path: Path, samples: int, seq_len: int) -> list[tuple[list[int], list[int]]]:
    """(ids, answer mask) of the first ``samples`` conversations with an answer token within
    ``seq_len`` tokens, each cut to ``seq_len``."""
    rows = []
    for lineno, record in jsonl_records(path, "a chat record (JSON with a 'messages' list)"):
        if len(rows) >= samples:
            break
        messages = record.get("messages")
        if not is_conversation(messages):
            raise NoseError(f"{path}:{lineno} is not a chat record (a 'messages' list of role/content objects)")
        ids, mask = assistant_mask(tokenizer, messages)
        if sum(mask[:seq_len]):
            rows.append((ids[:seq_len], mask[:seq_len]))
    if not rows:
        raise NoseError(f"chat data {path} has no assistant tokens within --seq-len {seq_len}")
    return rows
