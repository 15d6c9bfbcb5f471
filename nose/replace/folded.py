"""``folded``: the removed attention of layer l becomes ``T·m``, m the output of layer l−1's MLP
(the last write to the residual stream before layer l reads it), T (hidden × hidden) fitted by
the same ridge machinery as ``linear`` (sequential in depth order, ridge strength on held-out
rows). Since ``h_l = h_{l−1} + (I + T)·m``, the export folds T exactly into layer l−1's MLP:
``down_proj ← (I + T)·down_proj`` (and its bias), and layer l becomes a plain DeciLM ``no_op``
block: an ordinary checkpoint every DeciLM engine serves, with no extra parameters or matmul.
ReplaceMe (mts-ai/ReplaceMe) folds its map the same way, for whole blocks. Layer 0 has no
previous MLP and cannot be folded."""

from functools import partial

from nose.model.replacements import Folded
from nose.replace.kind import Kind
from nose.replace.ridge import fit_each, fit_linear

KIND = Kind("folded", "T·m, m the previous layer's MLP output; T folded into that MLP on export", fitted=True,
            export="no_op", searchable=True, parameters=lambda hidden: 0,
            fit=partial(fit_linear, kind=Folded), fit_each=partial(fit_each, kind=Folded))
