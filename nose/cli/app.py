"""The ``nose`` console script."""

import typer

from nose.cli.data_cmd import app as data_app
from nose.cli.evaluate_cmd import evaluate
from nose.cli.gguf_cmd import gguf
from nose.cli.report_cmd import report
from nose.cli.search_cmd import search
from nose.cli.shrink_cmd import shrink
from nose.cli.sweep_cmd import sweep

app = typer.Typer(help="nose: remove the attention sublayers of decoder LLMs that matter least (NOSE).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command()(search)
app.command()(shrink)
app.command()(evaluate)
app.command()(report)
app.command()(sweep)
app.command()(gguf)
app.add_typer(data_app, name="data")


@app.callback()
def _root() -> None:
    """Keep subcommand names even while there is one command."""


def main() -> None:
    app()
