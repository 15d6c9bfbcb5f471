"""Settings of a search and the selection criteria it can use.

Every criterion gives each candidate attention sublayer a *score*; the lowest score is removed
first. Greedy criteria rescore the remaining candidates from the new state after each removal;
one-shot criteria rank all candidates once, on the intact model.

| criterion | kind | score of candidate i |
|---|---|---|
| ``nose`` | greedy | transfer entropy ``H(S) − H(S ∪ {i})`` of the target features (nats) |
| ``loss`` | greedy | calibration loss increase ``L(S ∪ {i}) − L(S)`` (nats per token) |
| ``cosine`` | one shot | ``1 − cos(x, x + Attn(LN(x)))``, mean over tokens (attention-drop) |
| ``last`` | one shot | number of layers after i (deepest first) |
| ``random`` | one shot | position in a permutation seeded by ``seed`` |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nose.errors import NoseError
from nose.model.switches import MODES, check_layer_indices
from nose.search.target import Target

CRITERIA = {
    "nose": {"kind": "greedy", "name": "transfer entropy H(S) - H(S+i)", "unit": "nats"},
    "loss": {"kind": "greedy", "name": "loss increase L(S+i) - L(S)", "unit": "nats/token"},
    "cosine": {"kind": "one-shot", "name": "1 - cos(x, x + Attn(LN(x)))", "unit": "1"},
    "last": {"kind": "one-shot", "name": "layers after i", "unit": "layers"},
    "random": {"kind": "one-shot", "name": "position in the seeded permutation", "unit": "1"},
}


@dataclass
class SearchConfig:
    """Settings of one search; validated against the model by :meth:`validate`."""

    steps: int = 4  # attention sublayers to select
    criterion: str = "nose"  # see CRITERIA
    mode: str = "skip"  # switch mode while scoring (nose, loss): skip | double | thesis
    target: str = "final"  # nose only: final | logits | layer:N
    protect: list[int] = field(default_factory=list)  # layers never removed
    protect_layer0: bool = True  # engines need layer 0's attention (DESIGN.md, export)
    seed: int = 0  # bootstrap, calibration order and random-criterion seed
    bootstrap: int = 200  # bootstrap replicates per step; 0 = no intervals
    batch_size: int = 4  # calibration rows per forward; bounds the prefix cache

    def validate(self, num_layers: int, absent: list[int] = ()) -> Target:
        """Check against the model; ``absent``: layers whose attention an export already removed."""
        if self.criterion not in CRITERIA:
            raise NoseError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if self.mode not in MODES:
            raise NoseError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.batch_size < 1:
            raise NoseError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.bootstrap < 0:
            raise NoseError(f"--bootstrap must be 0 or more, got {self.bootstrap}")
        if self.criterion != "nose" and self.target != "final":
            raise NoseError(f"--target applies to --criterion nose only; {self.criterion} "
                            "scores the model's output as a whole")
        target = self.target_of(num_layers)
        check_layer_indices(self.protect, num_layers, what="--protect layer")
        n_cand = len(self.candidates(num_layers, target, absent))
        if self.steps < 1:
            raise NoseError(f"--steps must be at least 1, got {self.steps}")
        if self.steps > n_cand:
            raise NoseError(f"--steps {self.steps} is larger than the {n_cand} candidate layers "
                            f"({num_layers} layers, protected: {self.protected()}, target {target})")
        return target

    def target_of(self, num_layers: int) -> Target:
        """The features a greedy criterion measures: the logits for ``loss``."""
        return Target("logits") if self.criterion == "loss" else Target.parse(self.target, num_layers)

    def protected(self) -> list[int]:
        return sorted(set(self.protect) | ({0} if self.protect_layer0 else set()))

    def candidates(self, num_layers: int, target: Target, absent: list[int] = ()) -> list[int]:
        last = target.last_layer(num_layers)
        return [i for i in range(last + 1) if i not in self.protected() and i not in absent]

    def settings(self) -> dict:
        d = asdict(self)
        d["protect"] = self.protected()
        del d["protect_layer0"]
        if self.criterion == "loss":
            d["target"] = "logits"
        return d
