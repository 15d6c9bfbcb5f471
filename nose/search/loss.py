"""Calibration language-model loss, per sample, for the ``loss`` criterion.

The loss of a state is the mean next-token negative log-likelihood (nats per token) over all
counted positions: position t predicts token t+1 and counts when both are unmasked. Per sample
we keep the summed NLL and the count in float64, so batches merge by addition and the
bootstrap resamples whole calibration rows, as for the entropy statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nose.errors import NoseError


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None):
    """Per-sample summed next-token NLL and counted positions, float64 numpy (B,) each."""
    ids = input_ids.to(logits.device)
    if mask is None:
        mask = torch.ones_like(ids)
    m = mask.to(logits.device)
    counted = (m[:, 1:] * m[:, :-1]).to(torch.float64)
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll.double() * counted).sum(1).cpu().numpy(), counted.sum(1).cpu().numpy()


@dataclass
class LossStats:
    """Per-sample NLL sums and counts, appended batch by batch."""

    nll: list = field(default_factory=list)
    n: list = field(default_factory=list)

    def observe(self, logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None) -> None:
        if input_ids is None:
            raise NoseError("the loss criterion needs the calibration token ids")
        nll, n = token_nll(logits, input_ids, mask)
        self.nll.append(nll)
        self.n.append(n)

    @property
    def samples(self) -> int:
        return sum(len(n) for n in self.n)

    def arrays(self):
        if not self.n:
            raise NoseError("no statistics were collected: the calibration set is empty")
        return np.concatenate(self.nll), np.concatenate(self.n)

    def value(self, where: str = "logits") -> float:
        """Mean NLL in nats per token."""
        nll, n = self.arrays()
        if n.sum() <= 0:
            raise NoseError(f"no counted tokens for the {where}: calibration rows need at least 2 tokens")
        return float(nll.sum() / n.sum())

    def bootstrap(self, weights: np.ndarray, where: str = "logits") -> np.ndarray:
        """Mean NLL under each row of sample ``weights`` (R, N)."""
        nll, n = self.arrays()
        return (weights @ nll) / np.maximum(weights @ n, 1e-300)
