"""What stands in for a removed attention sublayer: one module per replacement, one registry.

Every command reads the registry (``--replace NAME`` in ``search``, ``shrink``, ``evaluate`` and
``sweep``; export, efficiency and the evaluation digest read the built objects). A replacement
is declared by a :class:`~nose.replace.kind.Kind` in its own module; adding one is a new module
here and a line in :data:`KINDS`.

| name | R(x), added to the residual | fitted | exported as | a search scores candidates under it |
|---|---|---|---|---|
| ``skip`` | 0 | no | DeciLM ``no_op`` block | yes |
| ``double`` | x | no | ``no_op``, folded into later layers | yes |
| ``thesis`` | 2·LN1(x) | no | ``replace_with_linear`` with W = 2I (reproduction of the thesis code) | yes |
| ``linear`` | W·LN1(x), W by ridge least squares | yes | ``replace_with_linear`` | yes (each candidate fitted in the search's state) |
| ``folded`` | W·a, a the previous layer's MLP activation, W by ridge | yes | ``no_op``; W added to that MLP's down-projection | yes (likewise) |

The shared ridge machinery (float64 moments, ridge strength on held-out rows, sequential fits in
depth order) is :mod:`nose.replace.ridge`; the ``nn.Module`` objects the switches call are in
:mod:`nose.model.replacements` (below this layer, since the switches need them).
"""

from __future__ import annotations

from nose.errors import NoseError
from nose.replace import double, folded, linear, skip, thesis
from nose.replace.kind import Kind

KINDS: dict[str, Kind] = {k.name: k for k in (skip.KIND, double.KIND, thesis.KIND, linear.KIND, folded.KIND)}


def get(name: str, option: str = "--replace") -> Kind:
    """The replacement called ``name``, or a one-line error listing the ones there are."""
    try:
        return KINDS[name]
    except KeyError:
        raise NoseError(f"unknown {option} {name!r}; choose one of {', '.join(KINDS)}") from None


__all__ = ["KINDS", "Kind", "get"]
