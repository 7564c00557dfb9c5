"""Run curves: the SVG a run folder and the compare report show."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from cgdistill.plots import curves_svg, fidelity_svg, read_metrics, with_reference_names, write_curves

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


# Logged by a teacher run before issue 14 (step 1 of a tiny toy run): D_A judged domain A then.
BEFORE_THE_RENAME = {"step": 1, "epoch": 1, "lr": 0.0002, "steps_per_s": 57.7012, "G_A2B": 1.023954,
                     "G_B2A": 0.670021, "cycle_A": 6.489792, "cycle_B": 5.409004, "idt_A": 3.253916,
                     "idt_B": 2.721707, "D_A": 0.711118, "D_B": 0.478893}  # fmt: skip


def test_a_record_logged_before_the_rename_reads_under_the_reference_names():
    assert with_reference_names(BEFORE_THE_RENAME) == {
        "step": 1, "epoch": 1, "lr": 0.0002, "steps_per_s": 57.7012,
        "G_A": 1.023954,  # G_A2B's GAN loss
        "G_B": 0.670021,
        "cycle_A": 6.489792, "cycle_B": 5.409004,  # these meant the same before
        "idt_B": 3.253916,  # |G_B2A(a) - a| was called idt_A
        "idt_A": 2.721707,
        "D_B": 0.711118,  # the discriminator of domain A was called D_A
        "D_A": 0.478893,
    }  # fmt: skip


def test_records_under_todays_names_and_a_students_are_left_as_they_are():
    today = with_reference_names(BEFORE_THE_RENAME)
    assert with_reference_names(today) == today
    assert with_reference_names(RECORDS[0]) == RECORDS[0]
    assert with_reference_names({"step": 3, "D": 0.2, "gan": 1.0}) == {"step": 3, "D": 0.2, "gan": 1.0}


def test_a_log_that_spans_the_rename_draws_one_curve_per_loss(tmp_path: Path):
    # A run made before the rename and resumed after it: old lines, then new ones.
    after = {"step": 2, "epoch": 1, "lr": 0.0002, "steps_per_s": 50.0, "D_A": 0.4, "G_A": 1.0, "cycle_A": 6.0,
             "idt_A": 2.7, "D_B": 0.7, "G_B": 0.6, "cycle_B": 5.3, "idt_B": 3.2}  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text(json.dumps(BEFORE_THE_RENAME) + "\n" + json.dumps(after) + "\n")
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["D_A"] for r in records] == [0.478893, 0.4]
    root = _svg(write_curves(tmp_path).read_text())
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 8
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "D_A 0.4" in labels and not any(label.startswith(("G_A2B", "G_B2A")) for label in labels)
