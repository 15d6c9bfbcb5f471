"""``skip``: the attention sublayer is gone, ``h = x``; exported as a DeciLM ``no_op`` block."""

from nose.replace.kind import Kind

KIND = Kind("skip", "0 (the sublayer is removed)", fitted=False, export="no_op", searchable=True,
            parameters=lambda hidden: 0)
