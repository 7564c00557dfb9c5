"""`cgdistill serve DIR`: 127.0.0.1 only, the cross-origin isolation headers, the MIME types browsers insist
on, nothing outside DIR, and a clean stop on Ctrl-C."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cgdistill.web.serve import HOST, locate, open_server
from cli_processes import cgdistill


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "ort").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>page</title>")
    (root / "app.js").write_text("export {};")
    (root / "model.onnx").write_bytes(b"\x08\x07onnx")
    (root / "ort" / "ort.webgpu.min.mjs").write_text("export {};")
    (root / "ort" / "ort-wasm-simd-threaded.asyncify.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (root / "empty").mkdir()
    (root / ".hidden").write_text("secret")
    (tmp_path / "outside.txt").write_text("outside")
    return root


@pytest.fixture
def running(site: Path):
    server = open_server(site, 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def get(server, path: str, host: str | None = None) -> http.client.HTTPResponse:
    """GET ``path`` exactly as written (http.client sends it without normalising ``..``)."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    headers = {"Host": host} if host else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def test_it_listens_on_127_0_0_1_only(running):
    assert running.server_address[0] == "127.0.0.1"
    assert running.url == f"http://127.0.0.1:{running.port}/"


def test_every_answer_carries_the_cross_origin_isolation_headers(running):
    for path in ("/", "/ort/ort.webgpu.min.mjs", "/missing"):
        response = get(running, path)
        assert response.getheader("Cross-Origin-Opener-Policy") == "same-origin"
        assert response.getheader("Cross-Origin-Embedder-Policy") == "require-corp"


@pytest.mark.parametrize(
    "path, mime",
    [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/ort/ort.webgpu.min.mjs", "text/javascript; charset=utf-8"),
        ("/ort/ort-wasm-simd-threaded.asyncify.wasm", "application/wasm"),
        ("/model.onnx", "application/octet-stream"),
    ],
)
def test_files_are_served_with_the_types_browsers_require(running, site, path, mime):
    response = get(running, path)
    assert response.status == 200 and response.getheader("Content-Type") == mime
    expected = (site / (path.lstrip("/") or "index.html")).read_bytes()
    assert response.body == expected and response.getheader("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(
    "path",
    ["/../outside.txt", "/ort/../../outside.txt", "/%2e%2e/outside.txt", "/%2E%2E%2Foutside.txt", "/ort/%2e%2e/app.js",
     "/..%5coutside.txt", "/./app.js", "/app.js%00.html"],
)  # fmt: skip
def test_paths_that_climb_out_of_the_folder_are_refused(running, path):
    response = get(running, path)
    assert response.status == 403 and b"outside" not in response.body


def test_a_link_that_leads_out_of_the_folder_is_refused(running, site):
    os.symlink(site.parent / "outside.txt", site / "escape.txt")
    os.symlink(site.parent, site / "parent")
    assert get(running, "/escape.txt").status == 403
    assert get(running, "/parent/outside.txt").status == 403


def test_a_link_inside_the_folder_is_served(running, site):
    os.symlink(site / "app.js", site / "alias.js")
    assert get(running, "/alias.js").body == b"export {};"


def test_hidden_files_missing_files_and_folders_without_an_index_are_not_found(running):
    assert get(running, "/.hidden").status == 404
    assert get(running, "/missing.js").status == 404
    assert get(running, "/empty/").status == 404


def test_a_folder_without_its_slash_is_redirected(running):
    response = get(running, "/ort?x=1")
    assert response.status == 301 and response.getheader("Location") == "/ort/?x=1"


def test_a_request_for_another_host_is_refused(running):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 must not read the folder."""
    assert get(running, "/", host="evil.example").status == 403
    assert get(running, "/", host=f"localhost:{running.port}").status == 200


def test_a_folder_that_does_not_exist_is_one_sentence(cli, tmp_path):
    result = cli("serve", tmp_path / "nowhere")
    assert result.code == 2 and "does not exist; pass the folder that `cgdistill export --web` wrote" in result.err_text


def test_a_port_in_use_is_one_sentence(cli, site):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        result = cli("serve", site, "--port", taken.getsockname()[1])
    assert result.code == 2 and "is in use; pass --port with another number, or --port 0" in result.err_text


def test_serve_prints_its_address_serves_and_stops_cleanly_on_ctrl_c(site, home):
    process = cgdistill(home, "serve", str(site), "--port", "0")
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "Stopped." in err and "Traceback" not in err
    with pytest.raises(OSError), socket.create_connection((HOST, port), timeout=2):
        pass


def test_serving_imports_no_torch():
    """`cgdistill serve` answers at once: the server and the runtime module are standard library only."""
    code = (
        "import sys, cgdistill.cli.serve, cgdistill.web.serve, cgdistill.web.runtime\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "path, status",
    [("/", 200), ("/ort/ort.webgpu.min.mjs?v=1", 200), ("/%2e%2e%2f%2e%2e%2fetc/passwd", 403), ("/ort/..", 403),
     ("/.%2e/outside.txt", 403), ("relative", 400), ("/ort", 301), ("/nothing", 404)],
)  # fmt: skip
def test_the_rule_for_a_request_path(site, path, status):
    found, target = locate(site.resolve(), path)
    assert found == status and (target is not None) == (status == 200)
