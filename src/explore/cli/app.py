"""The ``explore`` command line: the app, its shared helpers and the entry point.

Commands live in the modules beside this one, by group (world, train, use, compress); importing
:mod:`explore.cli` registers them all. Every command reports user errors (:class:`~explore.errors.ExploreError`) as one line on stderr
and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from explore.errors import ExploreError
from explore.runs import DISK_ERRORS, PATH_ERRORS, path_error

app = typer.Typer(help="explore: compress and evaluate InstructBLIP-style vision-language models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
world_app = typer.Typer(help="The shapes world: export data, show scenes.", no_args_is_help=True)
app.add_typer(world_app, name="world")
diffusion_app = typer.Typer(help="Text-to-image diffusion on the shapes world: train, autoencoder, export.", no_args_is_help=True)
app.add_typer(diffusion_app, name="diffusion")

console = Console(stderr=True)
ModelOption = Annotated[str, typer.Option("--model", help="'embedded', a local model folder, or a Hub id.")]
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def check_split(split: str) -> None:
    from explore.world.splits import SPLITS

    if split not in SPLITS:
        raise ExploreError(f"unknown --split {split!r}; choose one of: {', '.join(SPLITS)}")


def positive_int(name: str, value: int) -> int:
    if value <= 0:
        raise ExploreError(f"--{name} must be a positive integer, got {value}")
    return value


def _quiet_progress_bars() -> None:
    """Turn off Hugging Face's tqdm bars (loading weights, writing shards): in a log or a pipe they are
    noise, and they would put lines before a one-line error. explore's own bars follow the same rule."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # transformers reads this when it is imported
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # datasets reads it when it is imported
    if "transformers" in sys.modules:
        import transformers.utils.logging

        transformers.utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:  # e.g. "Creating parquet from Arrow format" while loading a judge task
        import datasets

        datasets.disable_progress_bars()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Entry point. Every way out has a status that says what happened, and at most one line on stderr
    (``--debug`` shows the traceback of an error instead):

    - 0: the command did its work;
    - 2: a user error (:class:`~explore.errors.ExploreError`, or a disk that is full or not writable) as one
      line, or a usage error (unknown command or option, a bad value) as click's usage message;
    - 1: anything nobody foresaw, as ``error: internal error: <type>: <message>; rerun with --debug ...``;
    - 130: interrupted (Ctrl-C).
    """
    if not sys.stderr.isatty():
        _quiet_progress_bars()
    try:
        code = app(standalone_mode=False)  # returns the status of an explicit exit (``--help``: 0, Ctrl-C: 130)
    except ExploreError as err:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {escape(_one_line(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TyperException as err:  # click's usage errors (typer vendors click): usage, hint, the error
        err.show()
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted", highlight=False)
        sys.exit(130)
    except Exception as err:
        if _state["debug"]:
            raise
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:  # full or read-only disk: the user can fix it
            where = f"cannot write {err.filename}: " if err.filename else "while writing: "  # Pillow names no file
            console.print(f"[bold red]error:[/] {escape(where)}{os.strerror(err.errno)}; free space or choose a "
                          "writable folder", highlight=False, soft_wrap=True)  # fmt: skip
            sys.exit(2)
        if isinstance(err, OSError) and err.errno in PATH_ERRORS:  # a file given where a folder is needed, ...
            console.print(f"[bold red]error:[/] {escape(_one_line(path_error(err)))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        message = f"{type(err).__name__}: {_one_line(err)}" if str(err).strip() else type(err).__name__
        console.print(f"[bold red]error:[/] internal error: {escape(message)}; rerun with --debug for the traceback",
                      highlight=False, soft_wrap=True)  # fmt: skip
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        if code == 130:
            console.print("aborted", highlight=False)
        sys.exit(code)
