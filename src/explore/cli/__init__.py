"""The ``explore`` command line (see :mod:`explore.cli.app`); importing it registers every command.

The modules are imported in the order ``explore --help`` lists their commands.
"""

# isort: off
from explore.cli import world, train, use, compress  # noqa: F401  (registers the commands)
from explore.cli.app import app, main

# isort: on

__all__ = ["app", "main"]
