"""The ``explore`` command line (see :mod:`explore.cli.app`); importing it registers every command.

The modules are imported in the order ``explore --help`` lists their commands. Importing them loads no
torch (each command imports its layer when it runs), so :func:`main` can set the process-wide settings
(:func:`explore.cli.env.configure_process`) before anything starts OpenMP.
"""

# isort: off
from explore.cli import world, train, use, compress, serve  # noqa: F401  (registers the commands)
from explore.cli.app import app
from explore.cli.app import main as _run_app
from explore.cli.env import configure_process

# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The console script ``explore`` and ``python -m explore.cli``: process settings, then the app."""
    configure_process()
    _run_app()
