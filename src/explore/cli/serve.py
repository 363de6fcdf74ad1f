"""The web app: ``explore serve`` (see :mod:`explore.serve`)."""

from __future__ import annotations

from typing import Annotated

import typer

from explore.cli.app import ModelOption, app
from explore.errors import ExploreError


@app.command("serve")
def serve_command(
    model: ModelOption = "embedded",
    pipeline: Annotated[
        str | None, typer.Option(help="Diffusion pipeline folder for the Generate tab (default: the packaged one).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    share: Annotated[bool, typer.Option("--share", help="Also ask Gradio for a public link (off by default).")] = False,
) -> None:
    """Start the web app: ask, judge, generate and read a sweep in the browser (Ctrl-C stops it)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ExploreError("explore serve needs Gradio: pip install 'explore-vlm[serve]'") from None
    if not 0 < port < 65536:
        raise ExploreError(f"--port must be between 1 and 65535, got {port}")
    from explore.serve.app import build_app, launch
    from explore.serve.models import ModelCache

    cache = ModelCache()
    cache.vlm(model)  # a bad --model fails here, as one line, before the server starts
    typer.echo(f"loaded {model}; open http://{host}:{port} (Ctrl-C stops the server)")
    try:
        launch(build_app(cache, original=model, pipeline=pipeline), host=host, port=port, share=share)
    except OSError as err:
        if "port" in str(err).lower():
            raise ExploreError(f"cannot listen on {host}:{port} ({' '.join(str(err).split())}); "
                               "pass another --port") from None  # fmt: skip
        raise
