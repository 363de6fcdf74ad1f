"""``python -m explore`` (and ``accelerate launch -m explore eval ...``): the ``explore`` command line."""

from explore.cli import main

main()
