"""``folded``: the removed attention of layer l becomes ``W·a``, a the hidden activation of layer
l−1's MLP (what its down-projection D multiplies; the MLP's write is the last to the residual
stream before layer l reads it), W (hidden × intermediate) fitted by the same ridge machinery as
``linear`` (sequential in depth order, ridge strength on held-out rows). Since
``h_l = h_{l−1} + (D + W)·a``, the export folds W exactly into layer l−1's down-projection and
layer l becomes a plain DeciLM ``no_op`` block: an ordinary checkpoint every DeciLM engine serves,
with no extra parameters or matmul. ReplaceMe (mts-ai/ReplaceMe) folds a map of the MLP's output
(``D ← (I + T)·D``), the special case ``W = T·D``; reports/fold.md measures both. Layer 0
has no previous MLP and cannot be folded."""

from functools import partial

from nose.model.replacements import Folded
from nose.replace.kind import Kind
from nose.replace.ridge import fit_each, fit_linear

KIND = Kind("folded", "W·a, a the previous layer's MLP activation; W folded into that MLP on export", fitted=True,
            export="no_op", searchable=True, parameters=lambda hidden: 0,
            fit=partial(fit_linear, kind=Folded), fit_each=partial(fit_each, kind=Folded))
