"""`cgdistill export RUN|FILE --web DIR`: the folder it writes (the page, our script, the model as `export`
writes it, only the runtime files the page loads), what the page states about the model, and the folders
it refuses. The page itself runs in a browser in tests/test_web_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cgdistill import paths
from cgdistill.cost import count_macs
from cgdistill.nets import GeneratorConfig
from cgdistill.web import SITE_FILE, is_web_export, runtime
from cgdistill.web.runtime import FILES, PACKAGE, VERSION
from webparts import fake_runtime, npm_tarball, sri, student_run

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

OUR_FILES = ["app.js", "cgdistill-web.json", "index.html", "model.onnx", "style.css"]


@pytest.fixture
def ort(tmp_path: Path) -> Path:
    return fake_runtime(tmp_path / "ort-files")


def test_the_folder_holds_the_page_the_model_and_only_the_runtime_files_it_loads(cli, ort, tmp_path):
    student_run()
    result = cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort)
    assert result.code == 0, result.err
    site = tmp_path / "site"
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert files == sorted(OUR_FILES + [f"ort/{name}" for name in FILES])
    assert is_web_export(site) and "cgdistill serve" in result.out
    assert "Parity with PyTorch" in result.err


def test_the_model_is_the_file_export_writes(cli, ort, tmp_path):
    student_run()
    assert cli("export", "stud", "-o", tmp_path / "plain.onnx").code == 0
    assert cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort).code == 0
    assert (tmp_path / "site" / "model.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()


def test_an_exported_onnx_file_goes_into_the_page_as_it_is(cli, ort, tmp_path):
    student_run()
    assert cli("export", "stud", "-o", tmp_path / "plain.onnx").code == 0
    result = cli("export", tmp_path / "plain.onnx", "--web", tmp_path / "site", "--runtime", ort)
    assert result.code == 0, result.err
    assert (tmp_path / "site" / "model.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()


def test_the_page_states_the_teacher_direction_shape_and_recorded_fidelity(cli, ort, tmp_path):
    student_run(fidelity=(28.66, 0.884))
    assert cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort).code == 0
    page = (tmp_path / "site" / "index.html").read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Teacher teach" in text
    assert "Direction A2B: Monet paintings to photos" in text
    assert "1 standard residual blocks, ngf 8" in text
    assert "28.66 dB PSNR, SSIM 0.884 on held-out images (step 40)" in text
    assert "Photos up to 512 pixels on their longer side" in text
    assert '<body data-state="loading">' in page
    config = json.loads((tmp_path / "site" / SITE_FILE).read_text())
    assert config["fidelity"] == {"psnr": 28.66, "ssim": 0.884, "step": 40}
    assert config["model"]["multiple"] == 4 and config["info"]["teacher"] == "teach"
    # what decides whether the page runs the model on its own thread (app.js: MAIN_THREAD_MACS)
    assert config["model"]["macs_256"] == count_macs(GeneratorConfig(blocks=1, ngf=8), 256) > 0


def test_a_student_with_half_resolution_ends_says_so_and_its_model_is_the_exported_file(cli, ort, tmp_path):
    student_run(ends="half")
    assert cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort).code == 0
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (tmp_path / "site" / "index.html").read_text()))
    assert "deconv upsampling, stem and head at half resolution;" in text
    assert json.loads((tmp_path / "site" / SITE_FILE).read_text())["info"]["ends"] == "half"


def test_a_student_without_fidelity_measurements_says_so(cli, ort, tmp_path):
    student_run(fidelity=None)
    assert cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort).code == 0
    assert "not recorded with this model" in (tmp_path / "site" / "index.html").read_text()


def test_the_page_loads_nothing_from_another_host(cli, ort, tmp_path):
    student_run()
    assert cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort).code == 0
    site = tmp_path / "site"
    page = (site / "index.html").read_text()
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert references and all(not re.match(r"^[a-z]+:|^//", ref) or ref in ("#", "data:,") for ref in references)
    script = (site / "app.js").read_text()
    assert re.findall(r"\bimport\(([^)]*)\)", script) == ["`./${site.runtime.entry}`"]
    assert "fetch(file)" in script and not re.search(r"fetch\(\s*['\"`]https?:", script)
    assert "url(" not in (site / "style.css").read_text()
    config = json.loads(re.search(r'<script type="application/json" id="site">(.*?)</script>', page, re.S).group(1))
    assert config["runtime"]["entry"] == f"ort/{FILES[0]}" and config["model"]["file"] == "model.onnx"


def test_metadata_is_escaped_in_the_page(cli, ort, tmp_path):
    run = student_run(name="a<b>&c")
    assert run.name == "a<b>&c"
    assert cli("export", "a<b>&c", "--web", tmp_path / "site", "--runtime", ort).code == 0
    page = (tmp_path / "site" / "index.html").read_text()
    assert "a<b>" not in page and "a&lt;b&gt;&amp;c" in page


def test_an_earlier_web_export_is_replaced(cli, ort, tmp_path):
    student_run()
    site = tmp_path / "site"
    assert cli("export", "stud", "--web", site, "--runtime", ort).code == 0
    (site / "stale.txt").write_text("from before")
    result = cli("export", "stud", "--web", site, "--runtime", ort, "--max-side", "256")
    assert result.code == 0 and "Replaced the earlier web export" in result.out
    assert not (site / "stale.txt").exists() and json.loads((site / SITE_FILE).read_text())["max_side"] == 256


def test_a_folder_of_other_files_is_refused_unless_forced(cli, ort, tmp_path):
    student_run()
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    result = cli("export", "stud", "--web", folder, "--runtime", ort)
    assert result.code == 2
    assert (
        "holds files that are not a cgdistill web export; pass another folder to --web, or --force" in result.err_text
    )
    assert (folder / "holiday.jpg").exists()
    assert cli("export", "stud", "--web", folder, "--runtime", ort, "--force").code == 0
    assert is_web_export(folder) and not (folder / "holiday.jpg").exists()


def test_an_empty_folder_is_used(cli, ort, tmp_path):
    student_run()
    (tmp_path / "empty").mkdir()
    assert cli("export", "stud", "--web", tmp_path / "empty", "--runtime", ort).code == 0


def test_a_folder_holding_the_model_is_never_replaced(cli, ort, tmp_path):
    run = student_run()
    result = cli("export", "stud", "--web", run.parent, "--runtime", ort, "--force")
    assert result.code == 2 and "which replacing it would delete" in result.err_text
    assert (run / "G.safetensors").exists()


def test_a_file_given_as_the_folder_is_refused(cli, ort, tmp_path):
    student_run()
    (tmp_path / "page").write_text("x")
    result = cli("export", "stud", "--web", tmp_path / "page", "--runtime", ort)
    assert result.code == 2 and "is a file, not a folder; pass another folder to --web" in result.err_text


def test_a_runtime_folder_lacking_a_file_names_it_and_writes_nothing(cli, ort, tmp_path):
    student_run()
    (ort / FILES[2]).unlink()
    result = cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort)
    assert result.code == 2 and f"lacks {FILES[2]}" in result.err_text
    assert not (tmp_path / "site").exists() and not list(tmp_path.glob(".site.*"))


@pytest.mark.parametrize(
    "flags, sentence",
    [
        (["-o", "x.onnx"], "--web writes the model into its folder; leave out -o/--output."),
        (["--max-side", "4"], "--max-side must be at least 8 pixels"),
    ],
)
def test_flags_that_do_not_fit_the_web_export_are_refused(cli, ort, tmp_path, flags, sentence):
    student_run()
    result = cli("export", "stud", "--web", tmp_path / "site", "--runtime", ort, *flags)
    assert result.code == 2 and sentence in result.err_text


@pytest.mark.parametrize("flag", [["--runtime", "ort"], ["--force"], ["--max-side", "256"]], ids=lambda f: f[0])
def test_web_flags_without_web_are_refused(cli, flag):
    student_run()
    result = cli("export", "stud", *flag)
    assert result.code == 2 and "--runtime, --max-side and --force go with --web FOLDER" in result.err_text


def test_without_runtime_the_files_come_from_the_registry_once(cli, server, tmp_path, monkeypatch, home):
    data = npm_tarball()
    server.add(f"/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz", data)
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    monkeypatch.setattr(runtime, "INTEGRITY", sri(data))
    student_run()
    assert cli("export", "stud", "--web", tmp_path / "one").code == 0
    result = cli("export", "stud", "--web", tmp_path / "two")
    assert result.code == 0 and "cached in" in result.err_text
    assert len(server.requests) == 1
    assert (tmp_path / "two" / "ort" / FILES[0]).read_bytes() == (home / PACKAGE / VERSION / FILES[0]).read_bytes()


def test_a_download_that_fails_its_integrity_check_exits_1_and_writes_no_page(cli, server, tmp_path, monkeypatch):
    server.add(f"/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz", npm_tarball())
    monkeypatch.setenv(runtime.REGISTRY_ENV, server.url(""))
    student_run()
    result = cli("export", "stud", "--web", tmp_path / "site")
    assert result.code == 1 and "does not match the sha512" in result.err_text
    assert not (tmp_path / "site").exists() and not (paths.home() / PACKAGE).exists()
