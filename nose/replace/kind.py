"""The declaration every replacement module makes (see :mod:`nose.replace`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

EXPORTS = ("no_op", "linear")


@dataclass(frozen=True)
class Kind:
    name: str
    computes: str  # R(x), in words, for help texts and errors
    fitted: bool  # built by a closed-form fit on token rows (else parameter-free)
    export: str  # one of EXPORTS: the DeciLM block an export writes
    searchable: bool  # a search can score candidates under it
    parameters: Callable[[int], int]  # parameters of its exported block per layer, given the hidden size
    fit: Callable | None = None  # (lm, layers, rows, config, progress) -> ({layer: Replacement}, report)
    fit_each: Callable | None = None  # (lm, layers, rows, state, config) -> ({layer: Replacement}, errors):
    # each candidate fitted alone in a search's state

    def __post_init__(self):
        assert self.export in EXPORTS, self.export
        assert not self.fitted or (self.fit is not None and self.fit_each is not None), self.name
