"""``double``: ``h = 2x`` (NOSE's "identity" replacement); exported as ``no_op`` blocks by halving
the output projections of every later layer (:mod:`nose.shrink.export`)."""

from nose.replace.kind import Kind

KIND = Kind("double", "x (the layer input again)", fitted=False, export="no_op", searchable=True,
            parameters=lambda hidden: 0)
