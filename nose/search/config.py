"""Settings of a search, checked against the criterion registry (:mod:`nose.search.criteria`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nose.errors import NoseError
from nose.model.switches import check_layer_indices
from nose.replace import get as replacement
from nose.search.criteria import CRITERIA
from nose.search.target import Target


@dataclass
class SearchConfig:
    """Settings of one search; validated against the model by :meth:`validate`."""

    steps: int = 4  # attention sublayers to select
    criterion: str = "nose"  # see CRITERIA
    mode: str = "skip"  # the replacement while scoring (greedy criteria; --replace, nose.replace.KINDS)
    target: str = "final"  # criteria without a fixed target (nose, nose-abs): final | logits | layer:N
    protect: list[int] = field(default_factory=list)  # layers never removed
    protect_layer0: bool = True  # engines need layer 0's attention (DESIGN.md, export)
    seed: int = 0  # bootstrap, calibration order and random-criterion seed
    bootstrap: int = 200  # bootstrap replicates per step; 0 = no intervals
    batch_size: int = 4  # calibration rows per forward; bounds the prefix cache
    screen: int = 0  # greedy: score every candidate on the first batch, only the best `screen` on all rows; 0: all

    def validate(self, num_layers: int, absent: list[int] = ()) -> Target:
        """Check against the model; ``absent``: layers whose attention an export already removed."""
        if self.criterion not in CRITERIA:
            raise NoseError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        kind = replacement(self.mode)
        if not kind.searchable:
            raise NoseError(f"a search cannot score candidates under --replace {kind.name}")
        if kind.fitted and not CRITERIA[self.criterion].greedy:
            raise NoseError(f"--replace {kind.name} applies to greedy criteria only; {self.criterion} ranks the "
                            "intact model in one shot")
        if self.batch_size < 1:
            raise NoseError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.screen < 0:
            raise NoseError(f"--screen must be 0 (no screen) or more, got {self.screen}")
        if self.screen and not CRITERIA[self.criterion].greedy:
            raise NoseError(f"--screen applies to greedy criteria only; {self.criterion} ranks every candidate "
                            "once; pass --screen 0")
        if self.bootstrap < 0:
            raise NoseError(f"--bootstrap must be 0 or more, got {self.bootstrap}")
        free = [n for n, c in CRITERIA.items() if c.greedy and c.target is None]
        if self.target != "final" and self.criterion not in free:
            raise NoseError(f"--target applies to --criterion {' or '.join(free)} only; {self.criterion} "
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
        """The features a greedy criterion measures: its fixed target, else ``--target``."""
        return Target.parse(CRITERIA[self.criterion].target or self.target, num_layers)

    def protected(self) -> list[int]:
        return sorted(set(self.protect) | ({0} if self.protect_layer0 else set()))

    def candidates(self, num_layers: int, target: Target, absent: list[int] = ()) -> list[int]:
        last = target.last_layer(num_layers)
        return [i for i in range(last + 1) if i not in self.protected() and i not in absent]

    def settings(self) -> dict:
        d = asdict(self)
        d["protect"] = self.protected()
        del d["protect_layer0"]
        d["target"] = CRITERIA[self.criterion].target or self.target
        return d
