"""``python -m latentdb.cli``: the ``latentdb`` command."""

from latentdb.cli import main

main()
