"""Gaussian entropy of features from streamed float64 moments (DESIGN.md, "Entropy").

Per sample (one calibration sequence) and per feature j we keep ``n`` (counted tokens),
``s1 = Σx`` and ``s2 = Σx²`` in float64. Samples merge by adding, so statistics from batches
or devices combine exactly; keeping them per sample also gives the bootstrap its resampling unit.

Entropy, in nats with constants dropped: ``H = Σ_j log σ_j`` with σ_j the population standard
deviation of feature j over all counted tokens. A feature with σ = 0 raises a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from nose.errors import NoseError


def token_moments(x: torch.Tensor, mask: torch.Tensor | None = None):
    """Per-sample moments of ``x`` (B, T, F) over the tokens where ``mask`` (B, T) is non-zero.

    Returns float64 numpy arrays ``n`` (B,), ``s1`` (B, F), ``s2`` (B, F).
    """
    xd = x.detach().to(torch.float64)
    if mask is None:
        m = torch.ones(xd.shape[:2], dtype=torch.float64, device=xd.device)
    else:
        m = mask.to(device=xd.device, dtype=torch.float64)
    xm = xd * m[..., None]
    n = m.sum(1)
    s1 = xm.sum(1)
    s2 = (xm * xd).sum(1)
    return n.cpu().numpy(), s1.cpu().numpy(), s2.cpu().numpy()


def entropy_from_moments(n, s1, s2, where: str = "features") -> np.ndarray | float:
    """``Σ_j log σ_j`` from summed moments; ``n`` (...,), ``s1``/``s2`` (..., F).

    Leading dimensions are independent sets (bootstrap replicates); a scalar for 1-D input.
    """
    n = np.asarray(n, dtype=np.float64)[..., None]
    if np.any(n <= 0):
        raise NoseError(f"no counted tokens for the {where}: the calibration set or its mask is empty")
    mean = s1 / n
    var = s2 / n - mean * mean
    # Cancellation leaves a constant feature with a variance of rounding size, not 0.
    zero = var <= 1e-12 * np.maximum(s2 / n, np.finfo(np.float64).tiny)
    if np.any(zero):
        j = int(np.argwhere(zero)[0][-1])
        raise NoseError(
            f"feature {j} of the {where} has zero variance over {int(n.flat[0])} tokens, so its "
            "Gaussian entropy is -inf; use more or more varied calibration text, or another --target")
    h = 0.5 * np.log(var).sum(-1)
    return float(h) if h.ndim == 0 else h


@dataclass
class MomentStats:
    """Per-sample moments, appended batch by batch; rows are samples."""

    n: list = field(default_factory=list)
    s1: list = field(default_factory=list)
    s2: list = field(default_factory=list)

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        n, s1, s2 = token_moments(x, mask)
        self.n.append(n)
        self.s1.append(s1)
        self.s2.append(s2)

    def observe(self, x: torch.Tensor, batch) -> None:
        """A statistic sink: ``x`` (K, F) are the target's features at ``batch.positions``."""
        rows = batch.rows.to(x.device)
        xd = x.detach().to(torch.float64)
        s1 = xd.new_zeros(batch.size, xd.shape[-1]).index_add_(0, rows, xd)
        s2 = xd.new_zeros(batch.size, xd.shape[-1]).index_add_(0, rows, xd * xd)
        self.n.append(torch.bincount(rows, minlength=batch.size).double().cpu().numpy())
        self.s1.append(s1.cpu().numpy())
        self.s2.append(s2.cpu().numpy())

    def merge(self, other: "MomentStats") -> "MomentStats":
        return MomentStats(self.n + other.n, self.s1 + other.s1, self.s2 + other.s2)

    def arrays(self):
        """(n (N,), s1 (N, F), s2 (N, F)) with one row per sample."""
        if not self.n:
            raise NoseError("no statistics were collected: the calibration set is empty")
        return np.concatenate(self.n), np.concatenate(self.s1), np.concatenate(self.s2)

    @property
    def samples(self) -> int:
        return sum(len(n) for n in self.n)

    def entropy(self, where: str = "features") -> float:
        n, s1, s2 = self.arrays()
        return entropy_from_moments(n.sum(), s1.sum(0), s2.sum(0), where)

    def bootstrap_entropy(self, weights: np.ndarray, where: str = "features") -> np.ndarray:
        """Entropy under each row of sample ``weights`` (R, N): one value per replicate."""
        n, s1, s2 = self.arrays()
        return entropy_from_moments(weights @ n, weights @ s1, weights @ s2, where)

    value = entropy  # the statistic interface of greedy criteria (nose.search.criteria)
    bootstrap = bootstrap_entropy
