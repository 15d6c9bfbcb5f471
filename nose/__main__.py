"""``python -m nose`` (and ``accelerate launch -m nose shrink ...``) run the CLI."""

from nose.cli.app import main

main()
