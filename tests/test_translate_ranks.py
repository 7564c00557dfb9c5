"""`torchrun --nproc_per_node 2 -m cgdistill translate FOLDER` on the CPU: each process takes its own share.

Every file is translated exactly once, under the name one process would give it (names are decided
before the work is split), one process speaks for both (one model line, one summary over all files),
and every output equals the single-process run's. The comparison is exact: both runs pin one thread
per process and one image per batch, so each image goes through the same kernels in the same order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgdistill.nets import ResnetGenerator
from cgdistill.weights import save_generator

IMAGES = {"a.png": (24, 20), "b.png": (32, 32), "c.png": (20, 28), "sub/a.png": (16, 16), "sub/d.png": (32, 24)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(home: Path, *args: str, processes: int) -> subprocess.CompletedProcess:
    """`cgdistill translate ARGS` in ``processes`` processes under torchrun (1: plain python -m), one thread each."""
    launcher = (
        ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "cgdistill"]
        if processes > 1
        else ["-m", "cgdistill"]
    )  # fmt: skip
    env = {**os.environ, "CGDISTILL_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, *launcher, "translate", *args, "--device", "cpu", "--batch-size", "1"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_split_a_folder_and_name_every_output_once(tmp_path: Path):
    torch.manual_seed(0)
    model = tmp_path / "G.safetensors"
    save_generator(ResnetGenerator(blocks=1, ngf=8), model, direction="A2B")
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name, (width, height) in IMAGES.items():
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos / name)

    common = (str(photos), "--recursive", "--model", str(model), "--engine", "torch")
    alone = run(tmp_path / "home", *common, "-o", str(tmp_path / "one"), processes=1)
    assert alone.returncode == 0, alone.stderr[-3000:]
    both = run(tmp_path / "home", *common, "-o", str(tmp_path / "two"), processes=2)
    assert both.returncode == 0, both.stderr[-3000:]

    expected = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert expected == ["a_A2B-2.png", "a_A2B.png", "b_A2B.png", "c_A2B.png", "d_A2B.png"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == expected
    for name in expected:
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "one" / name)), np.asarray(Image.open(tmp_path / "two" / name))
        )
    shown = both.stdout + both.stderr
    assert shown.count("Translated 5 of 5 images") == 1
    assert shown.count("Model: ") == 1 and "2 processes" in shown


def test_a_failure_in_one_process_fails_every_process_and_is_listed_once(tmp_path: Path):
    torch.manual_seed(0)
    model = tmp_path / "G.safetensors"
    save_generator(ResnetGenerator(blocks=1, ngf=8), model, direction="A2B")
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.new("RGB", (16, 16), (index * 60, 90, 160)).save(photos / f"{index}.png")
    (photos / "3.png").write_bytes(b"not a png")  # the second process's second file
    result = run(tmp_path / "home", str(photos), "--model", str(model), "-o", str(tmp_path / "out"), processes=2)
    assert result.returncode != 0
    shown = result.stdout + result.stderr
    assert shown.count("Translated 3 of 4 images") == 1 and shown.count("Failed: ") == 1 and "3.png" in shown
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0_A2B.png", "1_A2B.png", "2_A2B.png"]


def test_the_merged_outcome_keeps_input_order_and_what_the_other_processes_did():
    from cgdistill.imagefiles import TranslateResult
    from cgdistill.translate import TranslateOutcome, _merged
    from cgdistill.video import VideoResult
    from cgdistill.worklist import Job, Worklist

    def clip(name: str) -> VideoResult:
        return VideoResult(Path(name), Path(f"out/{name}"), frames=3, size=(8, 8), audio_streams=0, seconds=1.0)

    work = Worklist(
        [Job(Path(f"{i}.png"), Path(f"out/{i}.png")) for i in range(3)],
        [Job(Path(f"{name}.mp4"), Path(f"out/{name}.mp4")) for name in "abc"],
    )
    first = TranslateOutcome(
        TranslateResult(written=[(Path("0.png"), Path("out/0.png")), (Path("2.png"), Path("out/2.png"))]),
        2, [clip("a.mp4"), clip("c.mp4")], [], 2, rank=0,
    )  # fmt: skip
    second = TranslateOutcome(
        TranslateResult(failures=[(Path("1.png"), "Cannot read image 1.png.")]), 1, [], ["b.mp4 failed."], 1, rank=1
    )
    merged = _merged([first, second], 0, work)
    assert [source.name for source, _ in merged.images.written] == ["0.png", "2.png"]
    assert merged.image_count == 3 and merged.video_count == 3 and merged.failed == 2
    assert [v.source.name for v in merged.videos] == ["a.mp4", "c.mp4"]
    assert merged.videos_elsewhere == [] and merged.video_errors_elsewhere == ["b.mp4 failed."]
    assert [v.source.name for v in _merged([first, second], 1, work).videos_elsewhere] == ["a.mp4", "c.mp4"]
