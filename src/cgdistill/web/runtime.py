"""onnxruntime-web's files for a web export: the npm registry's published tarball, pinned by version and
by the registry's sha512, fetched once into the home and checked; or a folder the user already has.

The page needs one build of the runtime: ``ort.webgpu.min.mjs`` runs the model on WebGPU where the
browser has it and on WebAssembly (SIMD, threads) otherwise, from the same ``asyncify`` binary. The plain
WebAssembly build (``ort.wasm.min.mjs``, half the size) measured no faster on the wasm path here
(docs/benchmarks.md), so one build serves both and the site stays one set of files.

Extraction reads only the named files, as regular-file members under ``package/dist/``, and writes them
under names of our own: no member name from the archive ever becomes a path, and a link where a file is
expected is refused, so a hostile tarball cannot write outside the cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from cgdistill import paths
from cgdistill.data.download import downloads_dir, fetch
from cgdistill.data.extract import swap_into_place
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.fsutil import fsync_dir, require_free_space, storage_errors

PACKAGE = "onnxruntime-web"
# `npm view onnxruntime-web@1.31.1 dist`: the version the page's script is written against, and the
# tarball's sha512 as the registry publishes it (Subresource Integrity form).
VERSION = "1.31.1"
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
REGISTRY = "https://registry.npmjs.org"
REGISTRY_ENV = "CGDISTILL_NPM_REGISTRY"  # a mirror (or, in tests, a local server) in place of REGISTRY
ENTRY = "ort.webgpu.min.mjs"
FILES = (ENTRY, "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
_MAX_FILE_BYTES = 256 * 2**20  # the .wasm is ~29 MB; anything far larger is not this package
_DIST = "package/dist/"


@dataclass(frozen=True)
class Runtime:
    """A folder holding :data:`FILES`, the version they are (None when a user's folder does not say), and
    where they came from, in words."""

    folder: Path
    version: str | None
    source: str


def tarball_url(registry: str | None = None) -> str:
    """The tarball's URL on ``registry`` (default: ``$CGDISTILL_NPM_REGISTRY``, else the npm registry)."""
    base = (registry or os.environ.get(REGISTRY_ENV) or REGISTRY).rstrip("/")
    return f"{base}/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"


def cache_folder() -> Path:
    """Where the extracted files of :data:`VERSION` are kept, under the home (the user cache by default)."""
    return paths.home() / PACKAGE / VERSION


def get_runtime(
    runtime: Path | str | None = None,
    *,
    registry: str | None = None,
    integrity: str | None = None,
    progress: bool = True,
) -> Runtime:
    """The runtime's files: from ``runtime`` (a folder the user has), else the cache, else the registry.

    The download goes through the project's fetcher (resumes a ``.part``, retries), is checked against
    ``integrity`` (default :data:`INTEGRITY`) before anything is extracted, and is deleted once its files are in the cache.
    """
    if runtime is not None:
        return user_runtime(Path(runtime))
    cached = cache_folder()
    if _complete(cached):
        return Runtime(cached, VERSION, f"{PACKAGE} {VERSION} (cached in {cached})")
    url = tarball_url(registry)
    tarball = downloads_dir() / f"{PACKAGE}-{VERSION}.tgz"
    if not tarball.is_file():
        fetch(url, tarball, description=tarball.name, progress=progress)
    try:
        check_integrity(tarball, integrity or INTEGRITY, url)
        extract_runtime(tarball, cached)
    finally:
        tarball.unlink(missing_ok=True)  # the extracted files are what we keep; a bad download must not stay
    return Runtime(cached, VERSION, f"{PACKAGE} {VERSION} from {url}")


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def check_integrity(tarball: Path, integrity: str, source: str) -> None:
    """Refuse ``tarball`` unless its digest is ``integrity`` (npm's ``sha512-<base64>`` form)."""
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(tarball, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if base64.b64encode(digest.digest()).decode("ascii") != expected:
        raise WorkFailed(
            f"The {PACKAGE} {VERSION} tarball from {source} does not match the {algorithm} the npm registry "
            f"publishes for it, so it was deleted unused; run the command again, or pass --runtime with a folder "
            f"from `npm pack {PACKAGE}@{VERSION}`."
        )


def extract_runtime(tarball: Path, target: Path) -> Path:
    """Copy :data:`FILES` from the tarball's ``package/dist/`` into ``target``, all or nothing."""
    fix = f"download it again, or pass --runtime with a folder from `npm pack {PACKAGE}@{VERSION}`"
    try:
        archive = tarfile.open(tarball, "r:gz")  # noqa: SIM115  (entered just below, once open)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise CgdistillError(f"{tarball} is not a readable .tgz file ({exc}); {fix}.") from None
    with archive:
        try:
            members = {member.name: member for member in archive.getmembers()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise CgdistillError(f"{tarball} is corrupt ({exc}); {fix}.") from None
        chosen = {}
        manifest = members.get("package/package.json")
        if manifest is not None and manifest.isreg() and manifest.size < 1 << 20:
            chosen["package.json"] = manifest  # the version, for the page's metadata
        for name in FILES:
            member = members.get(_DIST + name)
            if member is None:
                raise CgdistillError(f"{tarball} has no {_DIST}{name}; it is not {PACKAGE} {VERSION}: {fix}.")
            if not member.isreg():
                raise CgdistillError(f"{tarball} holds {_DIST}{name} as a link, not a file, and was refused; {fix}.")
            if member.size > _MAX_FILE_BYTES:
                raise CgdistillError(f"{tarball} holds a {member.size:,}-byte {_DIST}{name}, too large to be {fix}.")
            chosen[name] = member
        target.parent.mkdir(parents=True, exist_ok=True)
        require_free_space(target.parent, sum(m.size for m in chosen.values()), f"Extracting {tarball}")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
        try:
            with storage_errors(staging):
                for name, member in chosen.items():
                    source = archive.extractfile(member)
                    assert source is not None  # a regular member always has a body
                    with source, open(staging / name, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                        out.flush()
                        os.fsync(out.fileno())
                fsync_dir(staging)
            swap_into_place(staging, target)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise CgdistillError(f"{tarball} is corrupt ({exc}); {fix}.") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def user_runtime(folder: Path) -> Runtime:
    """``--runtime DIR``: the files in DIR, or in its ``dist/`` (an npm package folder such as
    ``node_modules/onnxruntime-web`` or an unpacked ``npm pack``), or in ``package/dist/``."""
    if not folder.is_dir():
        reason = "does not exist" if not folder.exists() else "is a file, not a folder"
        raise CgdistillError(f"Runtime folder {folder} {reason}; pass --runtime with the folder holding {ENTRY}.")
    candidates = (folder, folder / "dist", folder / "package" / "dist")
    found = next((c for c in candidates if _complete(c)), None)
    if found is None:
        best = next((c for c in candidates if (c / ENTRY).is_file()), folder)
        missing = next(name for name in FILES if not (best / name).is_file())
        raise CgdistillError(
            f"Runtime folder {best} lacks {missing}; pass --runtime with the dist/ folder of {PACKAGE} {VERSION} "
            f"(`npm pack {PACKAGE}@{VERSION}` and unpack it), or leave --runtime out to download it."
        )
    version = _package_version(found)
    return Runtime(found, version, f"{PACKAGE} {version or '(version unknown)'} from {found}")


def _package_version(folder: Path) -> str | None:
    """The version a ``package.json`` in ``folder`` (a cache) or beside it (a ``dist/``) records, if readable."""
    for candidate in (folder / "package.json", folder.parent / "package.json"):
        try:
            meta = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("name") == PACKAGE and isinstance(meta.get("version"), str):
            return meta["version"]
    return None
