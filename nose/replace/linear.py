"""``linear``: ``h = x + W·LN1(x)``, W (hidden × hidden) fitted in closed form to each removed
attention (:func:`nose.replace.ridge.fit_linear`; in a search, each candidate alone in the
search's state, :func:`nose.replace.ridge.fit_each`); exported as a DeciLM ``replace_with_linear``
block with ``self_attn.linear_attn.weight`` = W."""

from nose.replace.kind import Kind
from nose.replace.ridge import fit_each, fit_linear

KIND = Kind("linear", "W·LN1(x), W fitted by ridge least squares", fitted=True, export="linear", searchable=True,
            parameters=lambda hidden: hidden * hidden, fit=fit_linear, fit_each=fit_each)
