"""Run curves: the SVG a run folder and the compare report show."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from cgdistill.plots import curves_svg, fidelity_svg, read_metrics, write_curves

RECORDS = [
    {"step": 1, "epoch": 1, "lr": 2e-4, "steps_per_s": 1.0, "output": 2.0, "feature": 8.0, "psnr_to_teacher": 20.0},
    {"step": 50, "epoch": 1, "lr": 2e-4, "steps_per_s": 1.0, "output": 0.5, "feature": 3.0},
    {"step": 100, "epoch": 1, "lr": 1e-4, "steps_per_s": 1.0, "output": 0.3, "feature": 2.0, "psnr_to_teacher": 31.5},
]


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)  # well-formed XML, or this raises


def test_a_distillation_run_draws_losses_and_fidelity():
    root = _svg(curves_svg(RECORDS))
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3  # output, feature, psnr_to_teacher
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Losses" in labels and "Fidelity to the teacher (held-out images)" in labels
    assert "psnr_to_teacher 31.5" in labels and "output 0.3" in labels
    assert not any(label in ("lr", "steps_per_s", "epoch") for label in labels)


def test_a_teacher_run_without_fidelity_draws_only_losses():
    records = [{k: v for k, v in r.items() if k != "psnr_to_teacher"} for r in RECORDS]
    root = _svg(curves_svg(records))
    assert root.get("height") == "260"
    assert fidelity_svg(records) is None


def test_the_fidelity_panel_alone_for_the_report():
    root = _svg(fidelity_svg(RECORDS))
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 1


def test_write_curves_skips_a_line_cut_short_by_a_crash(tmp_path: Path):
    text = "".join(json.dumps(r) + "\n" for r in RECORDS) + '{"step": 150, "outp'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3
    target = write_curves(tmp_path)
    assert target == tmp_path / "curves.svg" and _svg(target.read_text()) is not None


def test_write_curves_without_metrics_writes_nothing(tmp_path: Path):
    assert write_curves(tmp_path) is None and not (tmp_path / "curves.svg").exists()
