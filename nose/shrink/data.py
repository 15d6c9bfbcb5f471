"""Healing data: token rows with a mask of the tokens whose prediction is supervised.

- chat JSONL (records with ``messages``): one row per record, rendered with the tokenizer's chat
  template, truncated to ``seq_len`` and right-padded; ``loss_mask`` marks the assistant turns'
  answer tokens only (:mod:`nose.data.chat`). ``ce`` and ``gem`` learn those
  tokens; ``kd`` matches the teacher on every real token.
- every other source (text, JSONL text, folders, the standard library): packed rows exactly as
  the search's calibration (:func:`nose.data.calibration.build_calibration`), every token
  supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nose.data.calibration import build_calibration


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


def build_training_rows(tokenizer, source: str, samples: int, seq_len: int, seed: int = 0,
                        text_field: str = "text", log=print) -> TrainingRows:
    calib = build_calibration(tokenizer, source, samples=samples, seq_len=seq_len, seed=seed,
                              text_field=text_field, count="answer", log=log)
    return TrainingRows(calib.input_ids, calib.attention_mask, calib.count_mask)
