"""`cgdistill serve DIR`: the folder on http://127.0.0.1:PORT/, as the web page needs it served.

- **Loopback only.** The socket binds 127.0.0.1, and a request naming another host (``Host:``) is
  refused, so a web page elsewhere cannot reach the folder through DNS rebinding.
- **Cross-origin isolation.** Every answer carries ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``: browsers give ``SharedArrayBuffer``, and with it
  WebAssembly threads, only to pages served so. Without them the page runs on one thread, and says so.
- **Nothing outside DIR.** A path with a ``..`` or ``.`` segment (as sent, or percent-encoded), a
  backslash or a NUL is refused (403), and so is a file whose real path, links followed, leaves DIR;
  hidden names (``.git``) and folders without ``index.html`` are not found (404): no listings.
- **Types a browser insists on**: ``.wasm`` as ``application/wasm`` (streaming compilation), ``.mjs``
  and ``.js`` as ``text/javascript`` (module scripts), ``.onnx`` as ``application/octet-stream``.

Only the standard library: the command starts at once and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from cgdistill.errors import CgdistillError

HOST = "127.0.0.1"
LOCAL_NAMES = ("127.0.0.1", "localhost")
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class SiteServer(ThreadingHTTPServer):
    """A threaded HTTP server for one folder on the loopback interface."""

    daemon_threads = True

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(os.path.realpath(root))
        super().__init__((HOST, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


def open_server(root: Path | str, port: int) -> SiteServer:
    """Bind ``root`` on 127.0.0.1:``port`` (0: any free port), or say in one sentence why not."""
    root = Path(root)
    if not root.is_dir():
        reason = "does not exist" if not root.exists() else "is a file, not a folder"
        raise CgdistillError(f"Folder {root} {reason}; pass the folder that `cgdistill export --web` wrote.")
    if not 0 <= port <= 65535:
        raise CgdistillError(f"--port must be between 0 and 65535, got {port}.")
    try:
        return SiteServer(root, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CgdistillError(
                f"Port {port} on {HOST} is in use; pass --port with another number, or --port 0 for any free one."
            ) from None
        if exc.errno == errno.EACCES:
            raise CgdistillError(
                f"Port {port} needs administrator rights; pass --port 1024 or higher, or --port 0 for any free one."
            ) from None
        raise CgdistillError(f"Cannot serve on {HOST}:{port} ({exc.strerror or exc}).") from None


def serve(root: Path | str, port: int, on_ready: Callable[[SiteServer], None] | None = None) -> None:
    """Serve ``root`` until Ctrl-C, then close the socket and return; ``on_ready`` is told the address first."""
    server = open_server(root, port)
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def locate(root: Path, raw_path: str) -> tuple[HTTPStatus, Path | None]:
    """The file a request path names under ``root`` (a real path), or the status that refuses it: the
    whole rule in one function of the path and the file system, away from the socket."""
    path = urlsplit(raw_path).path
    if not path.startswith("/"):
        return HTTPStatus.BAD_REQUEST, None
    decoded = unquote(path, errors="strict")
    if "\x00" in decoded or "\\" in decoded:
        return HTTPStatus.FORBIDDEN, None
    segments = [s for s in decoded.split("/") if s]
    if any(s in (".", "..") for s in segments) or any(s in (".", "..") for s in path.split("/")):
        return HTTPStatus.FORBIDDEN, None
    if any(s.startswith(".") for s in segments):
        return HTTPStatus.NOT_FOUND, None
    target = Path(os.path.realpath(root.joinpath(*segments)))
    if target != root and root not in target.parents:
        return HTTPStatus.FORBIDDEN, None  # a link out of the folder
    if target.is_dir():
        if not decoded.endswith("/"):
            return HTTPStatus.MOVED_PERMANENTLY, None
        index = Path(os.path.realpath(target / "index.html"))
        if index.parent != target or not index.is_file():
            return HTTPStatus.NOT_FOUND, None
        target = index
    if not target.is_file():
        return HTTPStatus.NOT_FOUND, None
    return HTTPStatus.OK, target


def content_type(path: Path) -> str:
    return MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")


class _Handler(BaseHTTPRequestHandler):
    server: SiteServer
    protocol_version = "HTTP/1.1"  # keep-alive: the page's files come over one connection

    def version_string(self) -> str:
        return "cgdistill"

    def log_message(self, format: str, *args: object) -> None:  # the terminal shows the address, not every file
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in LOCAL_NAMES:
            self._error(HTTPStatus.FORBIDDEN, body)
            return
        try:
            status, target = locate(self.server.root, self.path)
        except UnicodeDecodeError:
            status, target = HTTPStatus.BAD_REQUEST, None
        if status == HTTPStatus.MOVED_PERMANENTLY:
            parts = urlsplit(self.path)
            self.send_response(status)
            self.send_header("Location", posixpath.join(parts.path, "") + (f"?{parts.query}" if parts.query else ""))
            self.send_header("Content-Length", "0")
            self._common_headers()
            self.end_headers()
            return
        if target is None:
            self._error(status, body)
            return
        try:
            with open(target, "rb") as handle:
                self._send_file(handle, content_type(target), body)
        except FileNotFoundError:
            self._error(HTTPStatus.NOT_FOUND, body)  # deleted between the check and the open

    def _send_file(self, handle: BinaryIO, kind: str, body: bool) -> None:
        size = os.fstat(handle.fileno()).st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(size))
        self._common_headers()
        self.end_headers()
        if body:
            # The browser may go away mid-file (a reload): nothing to tell anyone.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                shutil.copyfileobj(handle, self.wfile, 1 << 20)

    def _common_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")  # a new export shows at the next reload

    def _error(self, status: HTTPStatus, body: bool) -> None:
        text = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self._common_headers()
        self.end_headers()
        if body:
            self.wfile.write(text)
