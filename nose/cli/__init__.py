"""The ``nose`` command line (typer); thin: parse, call the library, print."""
