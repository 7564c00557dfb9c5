"""`cgdistill serve`: a web export on http://127.0.0.1:PORT/ with the headers its threads need (logic in cgdistill.web.serve)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cgdistill.cli.app import app, note, show, styled
from cgdistill.options import DEFAULT_SERVE_PORT


@app.command("serve")
def serve(
    folder: Annotated[Path, typer.Argument(help="The folder `cgdistill export --web` wrote.", show_default=False)],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = DEFAULT_SERVE_PORT,
) -> None:
    """Serve a web export on 127.0.0.1 only, with the cross-origin isolation headers WebAssembly threads need."""
    from cgdistill.web import is_web_export
    from cgdistill.web.serve import SiteServer
    from cgdistill.web.serve import serve as serve_folder

    if folder.is_dir() and not is_web_export(folder):
        note(f"{folder} is not a `cgdistill export --web` folder; serving its files anyway.")

    def ready(server: SiteServer) -> None:
        show(server.url)
        sys.stdout.flush()  # a script reading the address through a pipe gets it now
        note(styled("Serving {} on 127.0.0.1 only; press Ctrl-C to stop.", folder))

    serve_folder(folder, port, ready)
    note("Stopped.")
