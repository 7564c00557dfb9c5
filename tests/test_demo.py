"""`cgdistill demo`: the whole pipeline, run for real at a tiny size (QUICK_SETTINGS, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cgdistill import paths
from cgdistill.demo import MARKER_FILE, QUICK_SETTINGS, STAGES, SUMMARY_FILE, DemoObserver, prepare_output, run_demo


class Recorder(DemoObserver):
    def __init__(self) -> None:
        self.stages: list[tuple[int, int, str]] = []
        self.done: list[int] = []

    def stage(self, index: int, total: int, title: str) -> None:
        self.stages.append((index, total, title))

    def stage_done(self, index: int, seconds: float, detail: str) -> None:
        self.done.append(index)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("demo") / "out"
    recorder = Recorder()
    return run_demo(output, QUICK_SETTINGS, recorder), recorder, output


def test_demo_writes_the_report_inside_the_output_folder(quick_demo) -> None:
    result, _, output = quick_demo
    assert result.report == output / "report" / "report.html"
    assert result.report.is_file()
    assert (output / "report" / "grid.png").is_file()
    assert "Teacher vs student" in result.report.read_text()


def test_demo_translates_the_first_test_images_with_the_student(quick_demo) -> None:
    result, _, output = quick_demo
    assert [p.name for p in result.translated] == ["0000_A2B.png", "0001_A2B.png", "0002_A2B.png"]
    assert all(p.is_file() and p.parent == output / "translated" for p in result.translated)


def test_demo_keeps_its_dataset_and_runs_in_its_own_home(quick_demo) -> None:
    _, _, output = quick_demo
    home = output / "home"
    assert (home / "datasets" / "toy" / "testA_gt").is_dir()
    assert (home / "runs" / "teacher" / "G_A2B.safetensors").is_file()
    assert (home / "runs" / "student" / "G.safetensors").is_file()


def test_demo_gives_the_callers_home_back(quick_demo, home: Path) -> None:
    assert paths.home() == home


def test_demo_summary_holds_quality_cost_timings_and_checks(quick_demo) -> None:
    result, _, output = quick_demo
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    for key in ("settings", "seconds", "psnr_gt", "fidelity", "params", "macs", "mac_ratio", "latency_ms"):
        assert key in summary
    assert set(summary["psnr_gt"]) == {"baseline", "teacher", "student"}
    assert all(isinstance(v, float) for v in summary["psnr_gt"].values())
    assert set(summary["seconds"]) == {"dataset", "teacher", "student", "translate", "compare", "total", "cpu_total"}
    assert [c["name"] for c in summary["checks"]] and all(isinstance(c["passed"], bool) for c in summary["checks"])
    assert summary["passed"] == all(c["passed"] for c in summary["checks"])
    assert summary["report"] == str(result.report)


def test_demo_announces_and_finishes_every_stage_in_order(quick_demo) -> None:
    _, recorder, _ = quick_demo
    assert recorder.stages == [(i, len(STAGES), title) for i, title in enumerate(STAGES, start=1)]
    assert recorder.done == list(range(1, len(STAGES) + 1))


def test_a_rerun_replaces_an_earlier_demo(tmp_path: Path) -> None:
    output = tmp_path / "demo"
    prepare_output(output)
    (output / "home").mkdir()
    (output / "home" / "old.txt").write_text("from the last demo")
    assert prepare_output(output) is True
    assert sorted(p.name for p in output.iterdir()) == [MARKER_FILE]


def test_demo_refuses_a_folder_it_did_not_make(cli, tmp_path: Path) -> None:
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    result = cli("demo", "--quick", "--output", output)
    assert result.code == 2
    assert "was not made by `cgdistill demo`" in result.err_text
    assert (output / "notes.txt").read_text() == "keep me"


def test_demo_command_prints_where_the_report_is(cli, tmp_path: Path) -> None:
    output = tmp_path / "demo"
    result = cli("demo", "--quick", "--output", output)
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    assert f"Report: {output / 'report' / 'report.html'}" in text
    assert "[5/5] Comparing teacher and student" in result.err
    assert "✓" in result.out or "✗" in result.out


def test_a_stage_that_breaks_fails_the_demo_with_one_sentence(cli, tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("cgdistill.demo.make_toy_dataset", broken)
    result = cli("demo", "--quick", "--output", tmp_path / "demo")
    assert result.code == 1
    assert "The demo failed while generating the toy dataset: OSError: No space left on device" in result.err_text
    assert "Traceback" not in result.err
