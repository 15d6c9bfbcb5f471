"""Healing data: token rows with a mask of the tokens whose prediction is supervised.

- chat JSONL (records with ``messages``): one row per record, rendered with the tokenizer's chat
  template, truncated to ``seq_len`` and right-padded; ``loss_mask`` marks the assistant turns'
  tokens only (found by rendering the conversation turn by turn). ``ce`` and ``gem`` learn those
  tokens; ``kd`` matches the teacher on every real token.
- every other source (text, JSONL text, folders, the standard library): packed rows exactly as
  the search's calibration (:func:`nose.search.calibration.build_calibration`), every token
  supervised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from nose.errors import NoseError
from nose.search.calibration import _render_chat, build_calibration


@dataclass
class TrainingRows:
    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor  # (N, T) real tokens
    loss_mask: torch.Tensor  # (N, T) tokens whose prediction the supervised losses learn

    def split(self, n_val: int) -> tuple["TrainingRows", "TrainingRows"]:
        head = TrainingRows(self.input_ids[:-n_val], self.attention_mask[:-n_val], self.loss_mask[:-n_val])
        tail = TrainingRows(self.input_ids[-n_val:], self.attention_mask[-n_val:], self.loss_mask[-n_val:])
        return head, tail

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _is_chat(path: Path) -> bool:
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return isinstance(json.loads(line).get("messages"), list)
                except json.JSONDecodeError:
                    return False
    return False


def assistant_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and a 0/1 mask of the assistant turns' tokens."""
    ids: list[int] = []
    mask: list[int] = []
    for k, message in enumerate(messages):
        upto = tokenizer(_render_chat(messages[:k + 1], tokenizer), add_special_tokens=False)["input_ids"]
        new = upto[len(ids):]
        ids = upto
        mask += [1 if message.get("role") == "assistant" else 0] * len(new)
    return ids, mask


def build_training_rows(tokenizer, source: str, samples: int, seq_len: int, seed: int = 0,
                        text_field: str = "text", log=print) -> TrainingRows:
    path = Path(source).expanduser()
    if source != "stdlib" and _is_chat(path):
        rows = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip() and len(rows) < samples:
                    ids, mask = assistant_mask(tokenizer, json.loads(line)["messages"])
                    if sum(mask[:seq_len]):
                        rows.append((ids[:seq_len], mask[:seq_len]))
        if not rows:
            raise NoseError(f"healing data {source} has no assistant tokens within --seq-len {seq_len}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        loss = torch.zeros((len(rows), width), dtype=torch.long)
        for k, (row, mask) in enumerate(rows):
            ids[k, :len(row)] = torch.tensor(row)
            att[k, :len(row)] = 1
            loss[k, :len(row)] = torch.tensor(mask)
        return TrainingRows(ids, att, loss)
    calib = build_calibration(tokenizer, source, samples=samples, seq_len=seq_len, seed=seed,
                              text_field=text_field, log=log)
    return TrainingRows(calib.input_ids, calib.attention_mask, calib.attention_mask.clone())
