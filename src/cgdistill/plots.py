"""Training curves as self-contained SVG: a run's losses and its fidelity to the teacher versus steps.

SVG is text, needs no plotting library, opens in any browser and embeds in the compare report as is.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from cgdistill.fsutil import atomic_write_text
from cgdistill.runs import METRICS_FILE

CURVES_FILE = "curves.svg"
FIDELITY_KEYS = ("psnr_to_teacher", "ssim_to_teacher")
_NOT_LOSSES = {"step", "epoch", "lr", "steps_per_s", "time", *FIDELITY_KEYS}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
_WIDTH, _PANEL_HEIGHT = 640, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 150, 28, 34

Series = dict[str, list[tuple[float, float]]]


_BEFORE_REFERENCE_NAMES = {
    "G_A2B": "G_A",
    "G_B2A": "G_B",
    "D_A": "D_B",
    "D_B": "D_A",
    "idt_A": "idt_B",
    "idt_B": "idt_A",
}
"""A teacher's loss names before issue 14 -> the reference implementation's (train/teacher.py)."""


def with_reference_names(record: dict) -> dict:
    """A teacher's metrics record under the reference's loss names, whichever version logged it.

    Records logged before issue 14 are recognisable by ``G_A2B``; there ``D_A`` was the discriminator
    of domain A (now ``D_B``) and ``idt_A`` was |G_B2A(a) - a| (now ``idt_B``). Other records (newer
    ones, a student's) come back as they are.
    """
    if not isinstance(record, dict) or "G_A2B" not in record:
        return record
    return {_BEFORE_REFERENCE_NAMES.get(key, key): value for key, value in record.items()}


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` under today's names; a line cut short by a crash is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(with_reference_names(json.loads(line)))
        except ValueError:
            continue
    return records


def _series(records: Sequence[dict], keys: Sequence[str]) -> Series:
    return {
        key: [(float(r["step"]), float(r[key])) for r in records if isinstance(r.get(key), int | float)] for key in keys
    }


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _log_ticks(low: float, high: float) -> list[float]:
    """log10 of the round values (1, 2, 5 x 10^k) between 10^low and 10^high; decades only when many."""
    decades = range(math.floor(low), math.ceil(high) + 1)
    for mantissas in ((1, 2, 5), (1,)):
        ticks = [math.log10(m) + k for k in decades for m in mantissas if low <= math.log10(m) + k <= high]
        if len(ticks) <= 7:
            return ticks
    return [float(k) for k in decades if low <= k <= high]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _panel(
    series: Series, title: str, y_label: str, top: float, *, log_y: bool = False, x_label: str = "step"
) -> list[str]:
    """SVG elements of one chart whose plot area starts ``top`` pixels down."""
    series = {k: [(x, y) for x, y in v if not log_y or y > 0] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    parts = [
        f'<text x="{_LEFT}" y="{top + 16}" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not series:
        parts.append(f'<text x="{_LEFT}" y="{top + 60}" font-size="12">no data yet</text>')
        return parts
    xs = [x for v in series.values() for x, _ in v]
    ys = [math.log10(y) if log_y else y for v in series.values() for _, y in v]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    area_top, area_bottom = top + _TOP, top + _PANEL_HEIGHT - _BOTTOM
    area_left, area_right = _LEFT, _WIDTH - _RIGHT

    def px(x: float) -> float:
        return area_left + (x - x0) / (x1 - x0) * (area_right - area_left)

    def py(y: float) -> float:
        return area_bottom - (y - y0) / (y1 - y0) * (area_bottom - area_top)

    parts.append(
        f'<rect x="{area_left}" y="{area_top}" width="{area_right - area_left}" height="{area_bottom - area_top}" '
        'fill="none" stroke="#999"/>'
    )
    for tick in _ticks(x0, x1):
        parts.append(
            f'<text x="{px(tick):.1f}" y="{area_bottom + 14}" font-size="10" text-anchor="middle">{_fmt(tick)}</text>'
        )
    for tick in _log_ticks(y0, y1) if log_y else _ticks(y0, y1):
        label = _fmt(10**tick) if log_y else _fmt(tick)
        parts.append(
            f'<line x1="{area_left}" x2="{area_right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text x="{area_left - 4}" y="{py(tick) + 3:.1f}" font-size="10" text-anchor="end">{label}</text>'
        )
    parts.append(f'<text x="{(area_left + area_right) / 2}" y="{area_bottom + 28}" font-size="11" '
                 f'text-anchor="middle">{html.escape(x_label)}</text>')  # fmt: skip
    parts.append(
        f'<text x="12" y="{(area_top + area_bottom) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {(area_top + area_bottom) / 2})">{html.escape(y_label)}</text>'
    )
    for index, (name, points) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(math.log10(y) if log_y else y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if len(points) == 1:
            x, y = points[0]
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(math.log10(y) if log_y else y):.1f}" r="3" fill="{colour}"/>'
            )
        legend_y = area_top + 12 + 15 * index
        last = points[-1][1]
        parts.append(f'<line x1="{area_right + 10}" x2="{area_right + 26}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
                     f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        parts.append(
            f'<text x="{area_right + 30}" y="{legend_y}" font-size="11">{html.escape(name)} {_fmt(last)}</text>'
        )
    return parts


def _document(panels: list[list[str]]) -> str:
    """A standalone SVG holding ``panels`` stacked top to bottom."""
    height = _PANEL_HEIGHT * len(panels)
    body = "\n".join(part for panel in panels for part in panel)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
    )


def curves_svg(records: Sequence[dict]) -> str:
    """Losses (log scale) and, when the run measured it, fidelity to the teacher, versus steps."""
    loss_keys = sorted(
        {k for r in records for k, v in r.items() if k not in _NOT_LOSSES and isinstance(v, int | float)}
    )
    panels = [_panel(_series(records, loss_keys), "Losses", "loss (log scale)", 0, log_y=True)]
    fidelity = _series(records, ["psnr_to_teacher"])
    if fidelity["psnr_to_teacher"]:
        panels.append(_panel(fidelity, "Fidelity to the teacher (held-out images)", "PSNR (dB)", _PANEL_HEIGHT))
    return _document(panels)


def fidelity_svg(records: Sequence[dict]) -> str | None:
    """The fidelity panel alone (for the compare report), or None when the run never measured it."""
    fidelity = _series(records, ["psnr_to_teacher"])
    if not fidelity["psnr_to_teacher"]:
        return None
    return _document([_panel(fidelity, "Student fidelity to the teacher during distillation", "PSNR (dB)", 0)])


def charts_svg(charts: Sequence[tuple[Series, str, str]], x_label: str) -> str:
    """Line charts stacked in one SVG, each ``(series, title, y label)`` sharing ``x_label`` (benchmarks use it)."""
    return _document(
        [
            _panel(series, title, y_label, i * _PANEL_HEIGHT, x_label=x_label)
            for i, (series, title, y_label) in enumerate(charts)
        ]
    )


def write_curves(run_dir: Path) -> Path | None:
    """Redraw ``run_dir/curves.svg`` from the run's metrics (atomically); None when there are none yet."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    target = run_dir / CURVES_FILE
    atomic_write_text(target, curves_svg(read_metrics(path)))
    return target
