"""What the web tests build on: a tiny student run, a stand-in runtime folder, a tarball shaped like the npm
registry's, and onnxruntime-web's real files for the browser tests (fetched once per machine with `npm pack`).

Run as a script (`python tests/webparts.py`, as the Makefile does before the tests) it fetches the real
files into ``.cache/onnxruntime-web/VERSION`` and prints the folder, or says why it could not.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from cgdistill import paths
from cgdistill.nets import GeneratorConfig, ResnetGenerator, init_weights
from cgdistill.web.runtime import FILES, INTEGRITY, PACKAGE, VERSION, check_integrity, extract_runtime
from cgdistill.weights import save_generator

REPO = Path(__file__).resolve().parent.parent
REAL_RUNTIME_CACHE = REPO / ".cache" / PACKAGE


def student_run(
    name: str = "stud",
    *,
    blocks: int = 1,
    ngf: int = 8,
    direction: str = "A2B",
    fidelity: tuple[float, float] | None = (27.5, 0.812),
    ends: str = "full",
) -> Path:
    """A student run under the home: a tiny generator whose weights shape every pixel, and (by default) a
    metrics.jsonl whose last fidelity measurement is ``fidelity`` (PSNR, SSIM) at step 40."""
    generator = ResnetGenerator(GeneratorConfig(blocks=blocks, ngf=ngf, ends=ends))
    init_weights(generator, gain=0.3, generator=torch.Generator().manual_seed(0))
    run = paths.run_path(name)
    run.mkdir(parents=True, exist_ok=True)
    save_generator(
        generator, run / "G.safetensors", direction=direction, dataset="monet2photo", teacher="teach", step=40
    )
    if fidelity is not None:
        lines = [
            {"step": 20, "psnr_to_teacher": 20.0, "ssim_to_teacher": 0.5},
            {"step": 40, "loss_G": 1.0},
            {"step": 40, "psnr_to_teacher": fidelity[0], "ssim_to_teacher": fidelity[1]},
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def fake_runtime_files() -> dict[str, bytes]:
    """Stand-ins for onnxruntime-web's files: what export copies, not what a browser could run."""
    return {name: f"// {name} of {PACKAGE} {VERSION} (test stand-in)\n".encode() for name in FILES}


def fake_runtime(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in fake_runtime_files().items():
        (folder / name).write_bytes(data)
    return folder


def npm_tarball(members: dict[str, bytes] | None = None, links: dict[str, str] | None = None) -> bytes:
    """A .tgz laid out as the registry's (``package/...``): ``members`` as files (default: the stand-in
    runtime under package/dist/ and a package.json), ``links`` as symbolic links (name -> target)."""
    if members is None:
        members = {f"package/dist/{name}": data for name, data in fake_runtime_files().items()}
        members["package/package.json"] = json.dumps({"name": PACKAGE, "version": VERSION}).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def sri(data: bytes) -> str:
    """npm's ``dist.integrity`` of ``data``."""
    import base64
    import hashlib

    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def real_runtime() -> Path | str:
    """onnxruntime-web's real files (the pinned version, checked against the registry's sha512), or the
    reason they are not here. `npm pack` fetches the tarball once per machine; the project's own
    extraction unpacks it into ``.cache/onnxruntime-web/VERSION``."""
    folder = REAL_RUNTIME_CACHE / VERSION
    if all((folder / name).is_file() for name in FILES):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        return f"npm is not installed, so {PACKAGE} {VERSION} cannot be fetched (install Node.js and npm)"
    REAL_RUNTIME_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REAL_RUNTIME_CACHE) as scratch:
        try:
            subprocess.run(
                [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", scratch, "--silent"],
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            return f"`npm pack {PACKAGE}@{VERSION}` failed ({detail.decode(errors='replace').strip()[:200] or exc})"
        tarball = Path(scratch) / f"{PACKAGE}-{VERSION}.tgz"
        check_integrity(tarball, INTEGRITY, "npm pack")
        extract_runtime(tarball, folder)
    return folder


if __name__ == "__main__":
    found = real_runtime()
    print(found)
    sys.exit(0 if isinstance(found, Path) else 1)
