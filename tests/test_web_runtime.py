"""onnxruntime-web's files for `export --web`: fetched from the registry once (resumed, checked against the
sha512 the registry publishes, extracted safely into the home), or taken from --runtime DIR.

A local server on 127.0.0.1 plays the npm registry, serving tarballs the tests build."""

from __future__ import annotations

import json
import re

import pytest

from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.web import runtime
from cgdistill.web.runtime import FILES, PACKAGE, VERSION, get_runtime
from webparts import fake_runtime, fake_runtime_files, npm_tarball, sri

TARBALL_PATH = f"/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"


@pytest.fixture
def registry(server, monkeypatch):
    """The local registry, serving a stand-in tarball whose sha512 is the one the code expects."""
    data = npm_tarball()
    server.add(TARBALL_PATH, data)
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    monkeypatch.setattr(runtime, "INTEGRITY", sri(data))
    return server


def test_the_tarball_url_follows_the_registry_layout(monkeypatch):
    monkeypatch.delenv(runtime.REGISTRY_ENV, raising=False)
    assert runtime.tarball_url() == f"https://registry.npmjs.org{TARBALL_PATH}"
    assert runtime.tarball_url("http://mirror.example/npm/") == f"http://mirror.example/npm{TARBALL_PATH}"


def test_the_pinned_integrity_is_an_npm_sha512():
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", runtime.INTEGRITY)
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_the_runtime_is_downloaded_checked_and_cached_in_the_home(registry, home):
    got = get_runtime(progress=False)
    assert got.folder == home / PACKAGE / VERSION and got.version == VERSION
    assert {p.name for p in got.folder.iterdir()} == {*FILES, "package.json"}
    assert all((got.folder / name).read_bytes() == data for name, data in fake_runtime_files().items())
    assert not list((home / "downloads").glob("*")), "the tarball is deleted once its files are cached"
    assert get_runtime(progress=False).folder == got.folder
    assert len(registry.requests) == 1, "the second export uses the cache"


def test_a_cut_download_resumes_where_it_stopped(server, monkeypatch):
    data = npm_tarball()
    server.add(TARBALL_PATH, data, cut_after=len(data) // 2)
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    monkeypatch.setattr(runtime, "INTEGRITY", sri(data))
    get_runtime(progress=False)
    assert [r.range for r in server.requests] == [None, f"bytes={len(data) // 2}-"]


def test_a_tarball_that_does_not_match_the_registry_sha512_is_deleted_unused(registry, home, monkeypatch):
    monkeypatch.setattr(runtime, "INTEGRITY", sri(b"another tarball"))
    with pytest.raises(WorkFailed, match=r"does not match the sha512 .* deleted unused.*--runtime"):
        get_runtime(progress=False)
    assert not (home / PACKAGE).exists()
    assert not list((home / "downloads").glob("*"))


def test_a_link_where_a_runtime_file_should_be_is_refused(server, home, monkeypatch):
    members = {f"package/dist/{name}": data for name, data in fake_runtime_files().items() if name != FILES[-1]}
    data = npm_tarball(members, links={f"package/dist/{FILES[-1]}": "/etc/passwd"})
    server.add(TARBALL_PATH, data)
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    monkeypatch.setattr(runtime, "INTEGRITY", sri(data))
    with pytest.raises(CgdistillError, match=f"holds package/dist/{re.escape(FILES[-1])} as a link"):
        get_runtime(progress=False)
    assert not (home / PACKAGE).exists()


def test_entries_outside_the_package_are_never_written(server, home, tmp_path, monkeypatch):
    members = {f"package/dist/{name}": data for name, data in fake_runtime_files().items()}
    members["../../escaped.txt"] = b"outside"
    members[str(tmp_path / "absolute.txt")] = b"outside"
    data = npm_tarball(members)
    server.add(TARBALL_PATH, data)
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    monkeypatch.setattr(runtime, "INTEGRITY", sri(data))
    got = get_runtime(progress=False)
    assert {p.name for p in got.folder.iterdir()} == set(FILES)
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "absolute.txt").exists()


def test_a_tarball_without_a_runtime_file_names_it(server, monkeypatch):
    members = {f"package/dist/{name}": data for name, data in fake_runtime_files().items() if name != FILES[1]}
    data = npm_tarball(members)
    server.add(TARBALL_PATH, data)
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    monkeypatch.setattr(runtime, "INTEGRITY", sri(data))
    with pytest.raises(CgdistillError, match=f"has no package/dist/{re.escape(FILES[1])}"):
        get_runtime(progress=False)


def test_a_runtime_folder_is_taken_as_it_is_and_not_downloaded(tmp_path, server, monkeypatch):
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    got = get_runtime(fake_runtime(tmp_path / "ort"))
    assert got.folder == tmp_path / "ort" and got.version is None and not server.requests


def test_an_npm_package_folder_is_found_through_its_dist_and_package_json(tmp_path):
    package = tmp_path / "node_modules" / PACKAGE
    fake_runtime(package / "dist")
    (package / "package.json").write_text(json.dumps({"name": PACKAGE, "version": "1.99.0"}))
    got = get_runtime(package)
    assert got.folder == package / "dist" and got.version == "1.99.0"


def test_a_runtime_folder_lacking_a_file_names_the_file(tmp_path):
    folder = fake_runtime(tmp_path / "ort")
    (folder / FILES[2]).unlink()
    with pytest.raises(CgdistillError, match=f"lacks {re.escape(FILES[2])}") as caught:
        get_runtime(folder)
    assert caught.value.exit_code == 2


def test_a_missing_runtime_folder_is_one_sentence(tmp_path):
    with pytest.raises(CgdistillError, match="does not exist; pass --runtime"):
        get_runtime(tmp_path / "nowhere")
