"""compare: the JSON contract, the report files, and FID/KID as a note when weights are absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cgdistill import fid_inception, paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.nets import ResnetGenerator
from cgdistill.weights import save_generator

MODEL_KEYS = {"params", "macs", "macs_paper", "latency_ms", "throughput_ips", "psnr_gt", "fid", "kid"}


@pytest.fixture
def pair(home: Path) -> None:
    """A toy dataset (with ground truth), a 2-block teacher run and a 1-block student run of it."""
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=1, n_test=5)
    torch.manual_seed(0)
    teacher = paths.run_path("teach") / "G_A2B.safetensors"
    student = paths.run_path("stud") / "G.safetensors"
    for path in (teacher, student):
        path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(ResnetGenerator(blocks=2, ngf=8), teacher, direction="A2B", dataset="toy", image_size=32)
    save_generator(
        ResnetGenerator(blocks=1, ngf=8), student, direction="A2B", dataset="toy", image_size=32, teacher="teach"
    )


def _json(result) -> dict:
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if line.strip()]
    assert len(lines) == 1, result.out  # exactly one JSON object and nothing else on stdout
    return json.loads(lines[0])


def test_json_holds_the_schema(cli, pair):
    data = _json(cli("compare", "--json"))
    for role in ("teacher", "student"):
        assert set(data[role]) == MODEL_KEYS
        model = data[role]
        assert all(isinstance(model[k], int) for k in ("params", "macs", "macs_paper"))
        assert all(isinstance(model[k], float) for k in ("latency_ms", "throughput_ips", "psnr_gt"))
        assert model["fid"] is None and model["kid"] is None  # no Inception weights in a fresh home
    assert data["teacher"]["params"] > data["student"]["params"]
    assert isinstance(data["speedup"], float)
    assert set(data["fidelity"]) == {"psnr", "ssim", "psnr_with_teacher_tone", "tone_error_share"}
    assert all(isinstance(v, float) for v in data["fidelity"].values())
    assert isinstance(data["baseline_psnr_gt"], float)
    assert data["image_size"] == 32 and data["images"] == 5 and isinstance(data["device"], str)
    engines = data["latency_by_engine"]
    assert "torch fp32" in engines and all(set(ms) == {"teacher", "student"} for ms in engines.values())
    from cgdistill.onnxfile import onnx_available

    assert ("onnxruntime fp32" in engines) == onnx_available()


def test_missing_inception_weights_are_a_note_not_a_failure(cli, pair):
    result = cli("compare")
    assert result.code == 0, result.err
    out = " ".join(result.out.split())
    assert "FID/KID not computed" in out and fid_inception.INCEPTION_FILE in out
    assert "Speed-up" in out and "MACs (paper convention)" in out


def test_limit_and_image_size(cli, pair):
    data = _json(cli("compare", "--json", "--limit", "3", "--image-size", "16"))
    assert data["images"] == 3 and data["image_size"] == 16


def test_report_writes_html_that_shows_the_grid(cli, pair, tmp_path):
    result = cli("compare", "--report", tmp_path / "report", "--grid", "2")
    assert result.code == 0, result.err
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'src="grid.png"' in page and "Teacher" in page and "Latency" in page
    assert (tmp_path / "report" / "grid.png").stat().st_size > 0
    assert len(list((tmp_path / "report" / "images").glob("*.png"))) == 2 * 4


def test_json_lists_the_images_where_the_student_differs_most_lowest_first(cli, pair):
    data = _json(cli("compare", "--json"))
    worst = data["worst_images"]
    assert len(worst) == 5 and [w["psnr"] for w in worst] == sorted(w["psnr"] for w in worst)
    assert {w["name"] for w in worst} == {p.name for p in (paths.dataset_path("toy") / "testA").iterdir()}
    # The mean of the per-image values is the reported fidelity.
    assert abs(sum(w["psnr"] for w in worst) / 5 - data["fidelity"]["psnr"]) < 1e-9
    # and so it is for the PSNR with the teacher's global tone, from which the tone's share of the error comes
    tone = [w["psnr_with_teacher_tone"] for w in worst]
    assert abs(sum(tone) / 5 - data["fidelity"]["psnr_with_teacher_tone"]) < 1e-9
    shares = [max(0.0, 1 - 10 ** ((w["psnr"] - t) / 10)) for w, t in zip(worst, tone, strict=True)]
    assert abs(sum(shares) / 5 - data["fidelity"]["tone_error_share"]) < 1e-9


def test_report_shows_the_worst_images_and_the_students_fidelity_curve(cli, pair, tmp_path):
    records = [{"step": 100 * i, "output": 1.0 / i, "psnr_to_teacher": 20.0 + i} for i in range(1, 4)]
    (paths.run_path("stud") / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("compare", "--report", tmp_path / "report")
    assert result.code == 0, result.err
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'src="worst.png"' in page and 'src="fidelity.svg"' in page and "Where the student differs most" in page
    assert (tmp_path / "report" / "worst.png").stat().st_size > 0
    curve = (tmp_path / "report" / "fidelity.svg").read_text()
    assert curve.startswith("<svg") and "psnr_to_teacher 23" in curve
    assert "Lowest PSNR to the teacher:" in " ".join(result.out.split())


def test_by_default_compare_evaluates_at_the_test_images_own_size(cli, pair):
    save_generator(
        ResnetGenerator(blocks=1, ngf=8), paths.run_path("stud") / "G.safetensors", direction="A2B", dataset="toy",
        image_size=24, teacher="teach",
    )  # fmt: skip
    assert _json(cli("compare", "--json"))["image_size"] == 32


class StandIn(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_fid_and_kid_with_inception_weights(cli, pair, tmp_path, monkeypatch):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in")
    loaded = []
    monkeypatch.setattr(fid_inception, "load_fid_inception", lambda source: loaded.append(source) or StandIn())
    data = _json(cli("compare", "--json", "--inception", weights))
    assert loaded[0].path == weights
    for role in ("teacher", "student"):
        assert isinstance(data[role]["fid"], float) and isinstance(data[role]["kid"], float)


def test_missing_inception_file_is_one_sentence(cli, pair, tmp_path):
    result = cli("compare", "--inception", tmp_path / "nope.pth")
    assert result.code == 2 and "nope.pth does not exist" in result.err_text


def test_no_student_is_one_sentence(cli, home):
    result = cli("compare")
    assert result.code == 2 and "No student" in result.err_text and "Traceback" not in result.err
