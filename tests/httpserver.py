"""A loopback HTTP file server for tests: serves bytes the test made, misbehaving on request.

    with FileServer() as server:
        url = server.add("/x.zip", data, cut_after=1000)   # first answer stops after 1,000 bytes
        ...
        assert server.requests[1].range == "bytes=1000-"

Nothing here touches the internet: it binds 127.0.0.1 on a free port chosen by the OS.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """One file and how the server treats requests for it."""

    data: bytes
    ranges: bool = True  # honour Range requests with 206; False answers 200 with the whole file
    cut_after: int | None = None  # close the connection once the file's first N bytes are sent...
    cuts: int = 1  # ...this many times (then serve normally)
    fail_first: int = 0  # answer 503 to this many requests first
    status: int | None = None  # always answer this error status (404, 403, ...)


@dataclass
class Request:
    """What the server saw: the path and the Range header (None when absent)."""

    path: str
    range: str | None
    status: int = 0


@dataclass
class FileServer:
    """A threaded ``http.server`` on 127.0.0.1, port 0, serving ``Served`` entries by path."""

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def add(self, path: str, data: bytes = b"", **behaviour) -> str:
        """Serve ``data`` at ``path`` (``behaviour``: see ``Served``) and return its full URL."""
        self.files[path] = Served(data, **behaviour)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FileServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port_url(path: str = "/x.zip") -> str:
    """A loopback URL nobody listens on: connecting is refused, as with no network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            record = Request(self.path, self.headers.get("Range"))
            server.requests.append(record)
            served = server.files.get(self.path)
            if served is None:
                record.status = 404
                self.send_error(404, "Not Found")
                return
            if served.status is not None:
                record.status = served.status
                self.send_error(served.status)
                return
            if served.fail_first > 0:
                served.fail_first -= 1
                record.status = 503
                self.send_error(503, "Service Unavailable")
                return
            data, start = served.data, 0
            match = re.fullmatch(r"bytes=(\d+)-", record.range or "")
            if served.ranges and match:
                start = int(match.group(1))
                if start >= len(data):
                    record.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                record.status = 206
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                record.status = 200
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if served.ranges else "none")
            self.end_headers()
            if served.cut_after is not None and served.cuts > 0 and start < served.cut_after:
                served.cuts -= 1
                self.wfile.write(body[: served.cut_after - start])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler
