"""``thesis``: ``h = x + 2·LN1(x)``, what the thesis code ran (for reproduction); computed without
a matrix in memory, exported as a DeciLM linear block with W = 2I."""

from nose.replace.kind import Kind

KIND = Kind("thesis", "2·LN1(x) (the thesis code's replacement)", fitted=False, export="linear",
            searchable=True, parameters=lambda hidden: hidden * hidden)
