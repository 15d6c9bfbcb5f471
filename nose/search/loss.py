"""Calibration language-model loss, per sample, for the ``loss`` criterion.

The loss of a state is the mean next-token negative log-likelihood (nats per token) over all
counted positions (position t predicts token t+1; see :class:`~nose.data.calibration.Batch`).
Per sample we keep the summed NLL and the count in float64, so batches merge by addition and the
bootstrap resamples whole calibration rows, as for the entropy statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nose.errors import NoseError


def per_row(values: torch.Tensor, batch) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sums of per-position ``values`` (K,) and per-row counts, float64 numpy (B,) each."""
    rows = batch.rows.to(values.device)
    sums = values.new_zeros(batch.size, dtype=torch.float64).index_add_(0, rows, values.double())
    return sums.cpu().numpy(), torch.bincount(rows, minlength=batch.size).double().cpu().numpy()


def ratio_bootstrap(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(w @ num) / (w @ den)`` per replicate; a replicate without counted tokens is NaN (left out
    of intervals), never a mean of 0."""
    wn, wd = weights @ num, weights @ den
    out = np.full(wn.shape, np.nan)
    np.divide(wn, wd, out=out, where=wd > 0)
    return out


@dataclass
class LossStats:
    """Per-sample sums of a per-token loss (here the NLL) and token counts, appended batch by batch."""

    sums: list = field(default_factory=list)
    n: list = field(default_factory=list)

    def observe(self, logits: torch.Tensor, batch) -> None:
        """``logits`` (K, V) at ``batch.positions`` (next-token positions)."""
        targets = batch.next_tokens.to(logits.device)
        nll, n = per_row(F.cross_entropy(logits.float(), targets, reduction="none"), batch)
        self.sums.append(nll)
        self.n.append(n)

    @property
    def samples(self) -> int:
        return sum(len(n) for n in self.n)

    def arrays(self):
        if not self.n:
            raise NoseError("no statistics were collected: the calibration set is empty")
        return np.concatenate(self.sums), np.concatenate(self.n)

    def value(self, where: str = "logits") -> float:
        """Mean loss in nats per token."""
        sums, n = self.arrays()
        if n.sum() <= 0:
            raise NoseError(f"no counted tokens for the {where}: calibration rows need at least 2 tokens")
        return float(sums.sum() / n.sum())

    def bootstrap(self, weights: np.ndarray, where: str = "logits") -> np.ndarray:
        """Mean loss under each row of sample ``weights`` (R, N)."""
        return ratio_bootstrap(*self.arrays(), weights)
