"""`cgdistill export --web DIR`: a static, offline site that runs a generator in the browser.

The folder holds ``index.html`` (the model's metadata written into it), our ``app.js`` and
``style.css``, the model as the ``.onnx`` file ``cgdistill export`` writes (parity-checked the same
way), and onnxruntime-web's files under ``ort/``. Nothing is loaded from another host, so the folder
works offline and from any static host. ``cgdistill-web.json`` records what the export holds; it is
also how a later export recognises the folder as one it may replace.

The site is built in a staging folder beside DIR and renamed into place, so DIR is always either the
previous site or the new one.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import torch

from cgdistill import __version__
from cgdistill.cost import count_macs
from cgdistill.data.extract import swap_into_place
from cgdistill.data.registry import DATASETS
from cgdistill.errors import CgdistillError
from cgdistill.export import ParityResult, export_onnx
from cgdistill.fsutil import current_umask, format_bytes, fsync_dir, storage_errors
from cgdistill.nets import GeneratorConfig, ResnetGenerator, count_parameters
from cgdistill.onnxfile import INPUT_NAME, OUTPUT_NAME, load_onnx
from cgdistill.options import WEB_MAX_SIDE
from cgdistill.plots import read_metrics
from cgdistill.runs import METRICS_FILE, ResolvedModel
from cgdistill.web import SITE_FILE, SITE_FORMAT, is_web_export
from cgdistill.web.runtime import ENTRY, FILES, Runtime, get_runtime
from cgdistill.weights import ModelInfo, load_generator

MODEL_FILE = "model.onnx"
RUNTIME_DIR = "ort"
STATIC_ASSETS = ("app.js", "style.css")
_TEMPLATE = "index.html"


@dataclass(frozen=True)
class Fidelity:
    """The student's last measured fidelity to its teacher on held-out images, as distill logged it."""

    psnr: float
    ssim: float | None
    step: int


@dataclass
class WebExportResult:
    """What ``export_web`` wrote: the folder, its files (relative paths), the model's size and parity
    check, the runtime's origin, and whether an earlier export was replaced."""

    folder: Path
    files: list[str]
    model_bytes: int
    runtime: Runtime
    parity: list[ParityResult] = field(default_factory=list)
    replaced: bool = False
    config: dict = field(default_factory=dict)


def export_web(
    model: ResolvedModel,
    folder: Path | str,
    *,
    runtime: Path | str | None = None,
    force: bool = False,
    max_side: int = WEB_MAX_SIDE,
    registry: str | None = None,
    progress: bool = True,
) -> WebExportResult:
    """Write the site for ``model`` (a ``.safetensors`` generator, exported and parity-checked here, or an
    ``.onnx`` file ``cgdistill export`` wrote, copied as it is) into ``folder``.

    ``folder`` may be new, empty, or an earlier web export (replaced); anything else is refused unless
    ``force``. ``runtime`` is a folder with onnxruntime-web's files; without it they come from the npm
    registry once (``runtime.get_runtime``). ``max_side`` is the longest photo side the page translates
    as it is; larger photos are scaled down to it first.
    """
    folder = Path(folder)
    if max_side < 8:
        raise CgdistillError(f"--max-side must be at least 8 pixels for the web page, got {max_side}.")
    replaced = check_destination(folder, force, keep=[model.path, *([Path(runtime)] if runtime else [])])
    ort = get_runtime(runtime, registry=registry, progress=progress)
    folder.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".building", dir=folder.absolute().parent))
    try:
        with storage_errors(staging):
            model_path = staging / MODEL_FILE
            parity: list[ParityResult] = []
            if model.is_onnx:
                model_bytes, info = load_onnx(model.path)
                shutil.copyfile(model.path, model_path)
            else:
                generator, info = load_generator(model.path)
                parity = export_onnx(generator, model_path, info=info, direction=model.direction).parity
                model_bytes = model_path.read_bytes()
            (staging / RUNTIME_DIR).mkdir()
            for name in FILES:
                shutil.copyfile(ort.folder / name, staging / RUNTIME_DIR / name)
            for name in STATIC_ASSETS:
                (staging / name).write_bytes(_asset(name))
            config = site_config(model, info, model_bytes, ort, max_side, recorded_fidelity(model))
            (staging / "index.html").write_text(render_page(config), encoding="utf-8")
            (staging / SITE_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the site from a web server
            files = _flush(staging)
            swap_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WebExportResult(folder, files, len(model_bytes), ort, parity, replaced, config)


def _flush(folder: Path) -> list[str]:
    """fsync every file and folder under ``folder`` (so the rename that publishes it cannot expose empty
    files after a crash); the files' paths relative to it."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
            files.append(str(path.relative_to(folder)))
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)
    return files


def check_destination(folder: Path, force: bool, keep: list[Path]) -> bool:
    """Refuse a ``folder`` the export may not replace; True when it is an earlier web export.

    ``keep`` are paths the command reads (the model, ``--runtime``): a folder holding one of them, or
    the current folder, is never replaced, even with ``force``.
    """
    if not folder.exists() and not folder.is_symlink():
        return False
    if not folder.is_dir():
        raise CgdistillError(f"{folder} is a file, not a folder; pass another folder to --web.")
    if is_web_export(folder):
        earlier = True
    elif not any(folder.iterdir()):
        return False
    elif not force:
        raise CgdistillError(
            f"Folder {folder} holds files that are not a cgdistill web export; pass another folder to --web, "
            "or --force to replace the folder and everything in it."
        )
    else:
        earlier = False
    inside = folder.resolve()
    for path in [Path.cwd(), *keep]:
        resolved = path.resolve()
        if resolved == inside or inside in resolved.parents:
            raise CgdistillError(
                f"Folder {folder} holds {path if path != Path.cwd() else 'the current folder'}, which replacing it "
                "would delete; pass another folder to --web."
            )
    return earlier


def recorded_fidelity(model: ResolvedModel) -> Fidelity | None:
    """The last ``psnr_to_teacher`` a student run logged (None for a loose file or a run that never measured it)."""
    if model.run is None or model.role != "student":
        return None
    path = model.run / METRICS_FILE
    try:
        records = read_metrics(path)
    except (OSError, UnicodeDecodeError):
        return None
    measured = [r for r in records if isinstance(r.get("psnr_to_teacher"), int | float)]
    if not measured:
        return None
    last = measured[-1]
    ssim = last.get("ssim_to_teacher")
    return Fidelity(
        float(last["psnr_to_teacher"]), float(ssim) if isinstance(ssim, int | float) else None, int(last.get("step", 0))
    )


def site_config(
    model: ResolvedModel,
    info: ModelInfo,
    model_bytes: bytes,
    runtime: Runtime,
    max_side: int,
    fidelity: Fidelity | None,
) -> dict:
    """What the page needs to run the model and what it shows about it (also written as ``SITE_FILE``)."""
    config = GeneratorConfig(**info.config)
    with torch.device("meta"):  # the architecture's multiple and size, without allocating weights
        shape = ResnetGenerator(config)
    name = model.run.name if model.run is not None else model.path.stem
    entry = DATASETS.get(info.dataset or "")
    domains = None
    if entry is not None and entry.domain_a and entry.domain_b:
        source, target = (
            (entry.domain_a, entry.domain_b) if model.direction == "A2B" else (entry.domain_b, entry.domain_a)
        )
        domains = {"from": source, "to": target}
    return {
        "format": SITE_FORMAT,
        "format_version": 1,
        "cgdistill_version": __version__,
        "title": f"{name} ({model.direction})",
        "model": {
            "file": MODEL_FILE,
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "bytes": len(model_bytes),
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "multiple": shape.multiple,
            # the page runs a model this cheap on its own thread, a dearer one in a worker (app.js)
            "macs_256": count_macs(config, 256),
        },
        "runtime": {
            "package": "onnxruntime-web",
            "version": runtime.version,
            "entry": f"{RUNTIME_DIR}/{ENTRY}",
            "files": [f"{RUNTIME_DIR}/{name}" for name in FILES],
        },
        "max_side": max_side,
        "info": {
            "name": name,
            "role": model.role,
            "direction": model.direction,
            "domains": domains,
            "teacher": info.teacher,
            "dataset": info.dataset,
            "step": info.step,
            "image_size": info.image_size,
            "blocks": config.blocks,
            "ngf": config.ngf,
            "block": config.block,
            "ends": config.ends,
            "norm": config.norm,
            "upsample": config.upsample,
            "parameters": count_parameters(shape),
        },
        "fidelity": None if fidelity is None else {"psnr": fidelity.psnr, "ssim": fidelity.ssim, "step": fidelity.step},
    }


def _asset(name: str) -> bytes:
    return resources.files("cgdistill.web").joinpath("assets", name).read_bytes()


def _rows(config: dict) -> list[tuple[str, str]]:
    """The metadata table of the page, in words."""
    info = config["info"]
    rows = [("Model", f"{info['name']}, a {info['role']}")]
    if info["teacher"]:
        rows.append(("Teacher", info["teacher"]))
    way = info["direction"]
    if info["domains"]:
        way += f": {info['domains']['from']} to {info['domains']['to']}"
    rows.append(("Direction", way))
    if info["dataset"]:
        rows.append(("Dataset", info["dataset"]))
    rows.append(
        (
            "Shape",
            f"{info['blocks']} {info['block']} residual blocks, ngf {info['ngf']}, {info['norm']} norm, "
            f"{info['upsample']} upsampling"
            + (", stem and head at half resolution" if info.get("ends") == "half" else "")
            + f"; {info['parameters']:,} parameters",
        )
    )
    fidelity = config["fidelity"]
    if fidelity:
        ssim = f", SSIM {fidelity['ssim']:.3f}" if fidelity["ssim"] is not None else ""
        rows.append(
            (
                "Fidelity to the teacher",
                f"{fidelity['psnr']:.2f} dB PSNR{ssim} on held-out images (step {fidelity['step']:,})",
            )
        )
    elif info["role"] == "student":
        rows.append(("Fidelity to the teacher", "not recorded with this model"))
    rows.append(("Trained", f"{info['step']:,} steps" + (f" at {info['image_size']} px" if info["image_size"] else "")))
    runtime = config["runtime"]
    rows.append(
        (
            "Files",
            f"{config['model']['file']} ({format_bytes(config['model']['bytes'])}), onnxruntime-web "
            f"{runtime['version'] or '(version unknown)'}, exported by cgdistill {config['cgdistill_version']}",
        )
    )
    return rows


def render_page(config: dict) -> str:
    """``index.html``: the template with the metadata written in (escaped) and the config as JSON."""
    table = "\n".join(f"      <dt>{html.escape(key)}</dt><dd>{html.escape(value)}</dd>" for key, value in _rows(config))
    # Inside <script>, only "</" could end the element early; \u003c keeps the JSON the same value.
    data = json.dumps(config, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = Template(_asset(_TEMPLATE).decode("utf-8"))
    return template.substitute(
        title=html.escape(config["title"]),
        metadata=table,
        max_side=config["max_side"],
        config=data,
    )
