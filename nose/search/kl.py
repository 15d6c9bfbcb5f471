"""Output KL to the intact model, per sample, for the ``kl`` criterion (FinerCut-style).

The value of a state S is the mean over counted next-token positions of
``KL(p_intact ‖ p_S) = Σ_v p_intact(v) · (log p_intact(v) − log p_S(v))`` in nats per token.
The intact model's log-probs at those positions come with the batch (``Batch.reference``,
computed once per batch and step by the search: one intact forward, so no vocabulary-sized
cache is kept between batches; its peak is ``K × V`` float32 values for the K counted positions
of one batch, e.g. 4 rows × 120 answer tokens × 151,936 = 290 MB for Qwen2.5). Per sample we
keep the KL sum and the count in float64, so the bootstrap resamples whole rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nose.errors import NoseError
from nose.search.loss import LossStats, per_row

CHUNK = 256  # positions per KL chunk: bounds the (chunk, V) temporaries


def kl_per_position(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(K,) KL(reference ‖ softmax(logits)) per position; ``reference`` holds log-probs (K, V)."""
    out = []
    for k in range(0, logits.shape[0], CHUNK):
        logq = torch.log_softmax(logits[k:k + CHUNK].float(), dim=-1)
        logp = reference[k:k + CHUNK].to(logq.device)
        out.append((logp.exp() * (logp - logq)).sum(-1))
    return torch.cat(out) if out else logits.new_zeros(0)


@dataclass
class KLStats(LossStats):
    """Per-sample KL sums and counts: ``value`` is the mean KL in nats per token and ``bootstrap``
    resamples rows exactly as for the loss."""

    def observe(self, logits: torch.Tensor, batch) -> None:
        if batch.reference is None:
            raise NoseError("the kl criterion needs the intact model's distributions for each batch")
        kl, n = per_row(kl_per_position(logits, batch.reference), batch)
        self.sums.append(kl)
        self.n.append(n)
