"""What a person looks at after ``compare``: the table's rows, an image grid and an HTML page.

The rows are built here once and rendered twice, by rich in the terminal and as HTML in the report,
so the two never disagree.
"""

from __future__ import annotations

import html
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from cgdistill.compare import CompareOutputs, Comparison
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_path, atomic_write_text, prepare_output_dir
from cgdistill.options import DEFAULT_GRID_ROWS, FIDELITY_IMAGES
from cgdistill.plots import fidelity_svg

DIFF_GAIN = 4  # |teacher - student| is mostly small: amplify it so a person can see where they differ
GRID_FILE = "grid.png"
WORST_GRID_FILE = "worst.png"
FIDELITY_FILE = "fidelity.svg"
REPORT_FILE = "report.html"
_GAP = 4
_HEADER = 18


def _number(value: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def table_rows(result: Comparison) -> list[tuple[str, str, str]]:
    """(measure, teacher, student) rows, formatted for people."""
    t, s = result.teacher, result.student
    rows = [
        ("Parameters", f"{t.params / 1e6:.2f} M", f"{s.params / 1e6:.2f} M"),
        ("MACs (conv arithmetic)", f"{t.macs / 1e9:.2f} G", f"{s.macs / 1e9:.2f} G"),
        ("MACs (paper convention)", f"{t.macs_paper / 1e9:.2f} G", f"{s.macs_paper / 1e9:.2f} G"),
        ("Latency, batch 1", f"{t.latency_ms:.1f} ms", f"{s.latency_ms:.1f} ms"),
        (
            f"Throughput, batch {result.throughput_batch}",
            f"{t.throughput_ips:.2f} img/s",
            f"{s.throughput_ips:.2f} img/s",
        ),
        *[
            (f"Latency, batch 1, {engine}", f"{ms['teacher']:.1f} ms", f"{ms['student']:.1f} ms")
            for engine, ms in result.engine_latency_ms.items()
            if len(result.engine_latency_ms) > 1
        ],
        ("PSNR to ground truth", _number(t.psnr_gt, ".2f", " dB"), _number(s.psnr_gt, ".2f", " dB")),
        ("FID (lower is better)", _number(t.fid, ".2f"), _number(s.fid, ".2f")),
        ("KID (lower is better)", _number(t.kid, ".4f"), _number(s.kid, ".4f")),
    ]
    return rows


def summary_lines(result: Comparison) -> list[str]:
    """The lines under the table: speed-up, fidelity, baseline, setting, notes."""
    lines = [
        f"Speed-up (teacher latency / student latency): {result.speedup:.2f}x; "
        f"MAC ratio {result.teacher.macs / max(result.student.macs, 1):.2f}x.",
        f"Student fidelity to the teacher over all {result.images} test images: PSNR {result.fidelity_psnr:.2f} dB, "
        f"SSIM {result.fidelity_ssim:.4f} (distill's psnr_to_teacher watches the first {FIDELITY_IMAGES} only).",
        f"With the teacher's global tone (each output given its per-channel mean and contrast): PSNR "
        f"{result.fidelity_teacher_tone_psnr:.2f} dB; {result.tone_error_share:.0%} of the difference, on average "
        "over the images, is their brightness, contrast and colour cast.",
    ]
    if result.worst:
        shown = ", ".join(
            f"{image.name} ({image.psnr:.2f} dB; {image.teacher_tone_psnr:.2f} with the teacher's tone)"
            for image in result.worst
        )
        lines.append(f"Lowest PSNR to the teacher: {shown}.")
    if result.baseline_psnr_gt is not None:
        lines.append(f"Baseline (input left unchanged) PSNR to ground truth: {result.baseline_psnr_gt:.2f} dB.")
    lines.append(
        f"{result.images} test images, {result.direction}, on {result.device}; fidelity, PSNR to ground truth "
        f"and FID/KID at each image's own size and aspect ratio ({_sizes(result.fidelity_sizes)}); "
        f"MACs and speed at {result.image_size}x{result.image_size}."
    )
    lines.append(
        "MACs: conv arithmetic counts transposed convs on their input grid (torch.utils.flop_counter, FLOPs/2); "
        "the paper convention counts them on their output grid, as published tables do."
    )
    lines.extend(result.notes)
    return lines


def _sizes(counts: dict[str, int], shown: int = 4) -> str:
    """``"40x32 (2), 32x48 (1)"``; past ``shown`` sizes, how many more."""
    if len(counts) <= 1:
        return next(iter(counts), "no images")
    parts = [f"{size} ({count})" for size, count in list(counts.items())[:shown]]
    if len(counts) > shown:
        parts.append(f"{len(counts) - shown} more sizes")
    return ", ".join(parts)


def amplified_difference(a: torch.Tensor, b: torch.Tensor, gain: int = DIFF_GAIN) -> torch.Tensor:
    """|a - b| * gain, clipped, for uint8 images."""
    return ((a.int() - b.int()).abs() * gain).clamp(0, 255).to(torch.uint8)


_MIN_PANEL = 96  # pixels: wide enough for the longest column label
_MAX_PANEL = 256  # pixels: larger test images are shown shrunk in the grid (their panel files keep full size)


def _fit_panel(image: Image.Image) -> Image.Image:
    """A panel as the grid shows it, aspect ratio kept: small ones enlarged by an integer factor (nearest
    neighbour, so pixels stay sharp) until the label fits above, large ones shrunk to ``_MAX_PANEL``."""
    longest = max(image.size)
    if longest > _MAX_PANEL:
        scale = _MAX_PANEL / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)
    factor = max(1, -(-_MIN_PANEL // longest))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def grid_image(outputs: CompareOutputs, rows: int = DEFAULT_GRID_ROWS, indices: list[int] | None = None) -> Image.Image:
    """input | teacher | student | amplified difference, one test image per row (the first ``rows``,
    or those at ``indices``), with a header.

    Test images keep their own sizes and aspect ratios: each row is as tall as its image, each column
    as wide as its widest image, and narrower images are centred in it (presentation only).
    """
    indices = indices if indices is not None else list(range(min(rows, len(outputs.test_set.names))))
    fitted = [[_fit_panel(Image.fromarray(panel.numpy(), "RGB")) for panel in _panels(outputs, i)] for i in indices]
    column = max([_MIN_PANEL, *(row[0].width for row in fitted)])
    labels = ["input", "teacher", "student", f"|difference| x{DIFF_GAIN}"]
    width = 4 * column + 5 * _GAP
    height = _HEADER + sum(row[0].height + _GAP for row in fitted) + _GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, label in enumerate(labels):
        draw.text((_GAP + index * (column + _GAP) + 2, 3), label, fill=(0, 0, 0))
    y = _HEADER
    for panels in fitted:
        for index, image in enumerate(panels):
            canvas.paste(image, (_GAP + index * (column + _GAP) + (column - image.width) // 2, y))
        y += panels[0].height + _GAP
    return canvas


def _panels(outputs: CompareOutputs, row: int) -> list[torch.Tensor]:
    t, s = outputs.teacher_images[row], outputs.student_images[row]
    return [outputs.test_set.inputs[row], t, s, amplified_difference(t, s)]


def _save_png(image: Image.Image, target: Path) -> None:
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")


def check_report_options(folder: Path | str | None, rows: int) -> None:
    """Refuse a report that could not be written, before the measuring that fills it."""
    if rows < 1:
        raise CgdistillError(f"--grid must be at least 1 (test images in the report's grid), got {rows}.")
    if folder is not None:
        prepare_output_dir(folder, "--report")


def write_report(outputs: CompareOutputs, folder: Path, rows: int = DEFAULT_GRID_ROWS) -> Path:
    """Write ``report.html``, ``grid.png`` and each grid image's panels under ``images/``; returns the HTML path."""
    check_report_options(folder, rows)
    folder = Path(folder)
    _save_png(grid_image(outputs, rows), folder / GRID_FILE)
    names = outputs.test_set.names
    worst = [names.index(image.name) for image in outputs.result.worst]
    if worst:
        _save_png(grid_image(outputs, indices=worst), folder / WORST_GRID_FILE)
    curve = fidelity_svg(outputs.student_curve)
    if curve is not None:
        atomic_write_text(folder / FIDELITY_FILE, curve)
    kinds = ("input", "teacher", "student", "difference")
    links = []
    for row in range(min(rows, len(outputs.test_set.names))):
        stem = Path(outputs.test_set.names[row]).stem
        for kind, panel in zip(kinds, _panels(outputs, row), strict=True):
            name = f"images/{stem}_{kind}.png"
            (folder / "images").mkdir(exist_ok=True)
            _save_png(Image.fromarray(panel.numpy(), "RGB"), folder / name)
        links.append(stem)
    target = folder / REPORT_FILE
    atomic_write_text(target, render_html(outputs.result, links, has_curve=curve is not None))
    return target


def _worst_section(result: Comparison) -> str:
    if not result.worst:
        return ""
    esc = html.escape
    items = "\n".join(
        f"<tr><th>{esc(image.name)}</th><td>{image.psnr:.2f} dB</td><td>{image.teacher_tone_psnr:.2f} dB</td></tr>"
        for image in result.worst
    )
    return f"""<h2>Where the student differs most</h2>
<p>The {len(result.worst)} test images with the lowest PSNR between student and teacher (input | teacher | student |
difference):</p>
<table>
<tr><th>Image</th><th>PSNR to teacher</th><th>with the teacher's tone</th></tr>
{items}
</table>
<img class="grid" src="{WORST_GRID_FILE}" alt="the test images where student and teacher differ most">
"""


def render_html(result: Comparison, image_stems: list[str], *, has_curve: bool = False) -> str:
    """A self-contained page: the table, the summary, and the grid (relative links, so the folder can move)."""
    esc = html.escape
    body_rows = "\n".join(
        f"<tr><th>{esc(name)}</th><td>{esc(t)}</td><td>{esc(s)}</td></tr>" for name, t, s in table_rows(result)
    )
    summary = "\n".join(f"<li>{esc(line)}</li>" for line in summary_lines(result))
    panels = "\n".join(
        "<tr>"
        + "".join(
            f'<td><a href="images/{esc(stem)}_{kind}.png">{kind}</a></td>'
            for kind in ("input", "teacher", "student", "difference")
        )
        + f"<th>{esc(stem)}</th></tr>"
        for stem in image_stems
    )
    curve = (
        f'<img src="{FIDELITY_FILE}" alt="the student\'s PSNR to the teacher on held-out images during distillation">'
        if has_curve
        else ""
    )
    css = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:right}"
        "th{text-align:left;background:#f5f5f5}img{max-width:100%;image-rendering:pixelated}img.grid{min-width:min(100%,560px)}"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>cgdistill compare: {esc(result.student_label)} vs {esc(result.teacher_label)}</title>
<style>{css}</style></head>
<body>
<h1>Teacher vs student</h1>
<p>Teacher: <code>{esc(result.teacher_label)}</code><br>Student: <code>{esc(result.student_label)}</code></p>
<table>
<tr><th>Measure</th><th>Teacher</th><th>Student</th></tr>
{body_rows}
</table>
<ul>
{summary}
</ul>
{curve}
<h2>Test images</h2>
<p>Each row: input | teacher | student | |teacher - student| amplified {DIFF_GAIN}x.</p>
<img class="grid" src="{GRID_FILE}" alt="grid of test images: input, teacher, student, difference">
<table>
{panels}
</table>
{_worst_section(result)}
</body>
</html>
"""
