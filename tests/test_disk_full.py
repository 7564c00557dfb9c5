"""A full disk, an exceeded quota or read-only media at each write site: one sentence naming the path
(and, where known, the space needed and free), no temporary file left, what was saved before kept, and
a later --resume that continues from the last complete checkpoint. The writers are patched to fail, as
a full file system would make them (no root needed)."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import pathlib
import zipfile

import pytest
import torch
from PIL import Image

from cgdistill import fsutil
from cgdistill.data import download, extract
from cgdistill.fsutil import NoSpace
from cgdistill.train import loop, state
from cgdistill.train.config import TeacherConfig
from cgdistill.train.teacher import train_teacher
from teacher_runs import weights


def tiny(**overrides) -> TeacherConfig:
    settings = dict(data="toy", name="full", blocks=1, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2,
                    epochs=1, epochs_decay=1, save_every=2, sample_every=1000, log_every=1, seed=3, device="cpu",
                    max_steps=6)  # fmt: skip
    settings.update(overrides)
    return TeacherConfig(**settings)


def enospc(path: object = "x") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def leftovers(folder: pathlib.Path) -> list[pathlib.Path]:
    """Temporary files and folders of atomic writes and checkpoints under ``folder``."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp_")]


@pytest.fixture
def fail_write_bytes(monkeypatch):
    """``fail_write_bytes("*.safetensors")``: Path.write_bytes of matching temporary files writes half
    its data, then fails as a full disk does."""

    def arm(pattern: str, code: int = errno.ENOSPC) -> None:
        real = pathlib.Path.write_bytes

        def write_bytes(self, data):
            if fnmatch.fnmatch(self.name, f".{pattern}.*.tmp"):
                real(self, data[: len(data) // 2])
                raise OSError(code, os.strerror(code), str(self))
            return real(self, data)

        monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)

    return arm


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resume_ends_bit_exactly(toy, home, monkeypatch):
    straight = weights(train_teacher(tiny(name="straight")))
    calls, real_save = {"n": 0}, state.save_file

    def save_file(tensors, path):  # the message safetensors gives on ENOSPC, after half a file
        calls["n"] += 1
        if calls["n"] == 2:
            pathlib.Path(path).write_bytes(b"\0" * 100)
            raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")  # noqa: TRY002
        return real_save(tensors, path)

    monkeypatch.setattr(state, "save_file", save_file)
    with pytest.raises(NoSpace) as failure:
        train_teacher(tiny())
    run = home / "runs" / "full"
    message = failure.value.message
    assert f"Cannot write {run / 'state'}: no space is left on its device (about " in message
    assert "needed" in message and "free)" in message and "continue with --resume" in message
    assert json.loads((run / "state" / "latest.json").read_text())["step"] == 2
    assert leftovers(run) == []
    monkeypatch.setattr(state, "save_file", real_save)  # space freed
    resumed = weights(train_teacher(tiny(), resume=True))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_full_disk_while_writing_a_model_file_keeps_the_previous_file(toy, home, fail_write_bytes):
    run = train_teacher(tiny(max_steps=2))
    before = weights(run)
    fail_write_bytes("G_B2A.safetensors")
    with pytest.raises(NoSpace, match=f"Cannot write {run / 'G_B2A.safetensors'}: no space is left"):
        train_teacher(tiny(max_steps=4), resume=True, given={"max_steps"})
    assert leftovers(run) == []
    after = weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("G_B2A"))


def test_a_full_disk_at_the_first_checkpoint_leaves_a_run_the_same_command_starts_again(toy, home, monkeypatch):
    def save_file(tensors, path):
        raise enospc(path)

    real_save = state.save_file
    monkeypatch.setattr(state, "save_file", save_file)
    with pytest.raises(NoSpace, match="no checkpoint was complete yet: free some space and run the same command"):
        train_teacher(tiny())
    monkeypatch.setattr(state, "save_file", real_save)
    assert json.loads((train_teacher(tiny()) / "state" / "latest.json").read_text())["step"] == 6


def test_read_only_media_say_so_and_name_the_file(toy, home, fail_write_bytes):
    fail_write_bytes("D_A.safetensors", errno.EROFS)
    with pytest.raises(NoSpace, match="D_A.safetensors: it is on a read-only file system"):
        train_teacher(tiny(max_steps=2))


def test_a_full_disk_while_writing_a_sample_grid_names_it_and_leaves_no_temporary_file(toy, home, monkeypatch):
    def save(self, fp, *args, **kwargs):
        raise enospc(fp)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(NoSpace, match="samples/step_0000002.png: no space is left"):
        train_teacher(tiny(max_steps=4, sample_every=2))
    assert leftovers(home / "runs" / "full") == []


def test_a_full_disk_while_logging_leaves_no_half_line_in_metrics(toy, home, monkeypatch):
    real_open, lines = open, {"n": 0}

    class HalfWriter:
        def __init__(self, handle) -> None:
            self.handle = handle

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            lines["n"] += 1
            if lines["n"] == 3:
                self.handle.write(text[: len(text) // 2])
                self.handle.flush()
                raise enospc()
            return self.handle.write(text)

    monkeypatch.setattr(loop, "open", lambda *a, **k: HalfWriter(real_open(*a, **k)), raising=False)
    with pytest.raises(NoSpace, match="metrics.jsonl: no space is left"):
        train_teacher(tiny())
    records = [json.loads(line) for line in (home / "runs" / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]


def test_a_full_disk_while_translating_is_one_sentence_and_exit_1(toy, home, cli, tmp_path, monkeypatch):
    train_teacher(tiny(max_steps=1, name="t"))
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if str(fp).endswith(".tmp"):
            raise enospc(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    result = cli("translate", str(toy / "testA"), "--model", "t", "--direction", "A2B", "--output", str(out),
                 "--device", "cpu")  # fmt: skip
    assert result.code == 1, result.err
    assert f"Cannot write {out}" in result.err_text and "no space is left on its device" in result.err_text
    assert "Traceback" not in result.err
    assert leftovers(out) == []


def test_a_full_disk_while_exporting_names_the_file(toy, home, cli, tmp_path, fail_write_bytes):
    pytest.importorskip("onnxruntime")
    train_teacher(tiny(max_steps=1, name="t"))
    fail_write_bytes("model.onnx")
    result = cli("export", "t", "--direction", "A2B", "-o", str(tmp_path / "model.onnx"))
    assert result.code == 1, result.err
    assert f"Cannot write {tmp_path / 'model.onnx'}: no space is left" in result.err_text
    assert leftovers(tmp_path) == []


def test_a_download_that_cannot_fit_is_refused_before_writing(server, tmp_path, monkeypatch):
    url = server.add("/f.bin", b"x" * 100_000)
    monkeypatch.setattr(download, "require_free_space", fsutil.require_free_space)
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 40_000)
    with pytest.raises(NoSpace, match=r"Downloading .*f.bin needs 97.7 KiB in .* but only 39.1 KiB is free"):
        download.fetch(url, tmp_path / "f.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_a_download_keeps_the_part_file_and_is_not_retried(server, tmp_path, monkeypatch):
    url = server.add("/f.bin", b"x" * 300_000)
    real_open = open

    class FillsUp:
        def __init__(self, handle) -> None:
            self.handle, self.written = handle, 0

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, chunk):  # the disk takes 100 kB, then is full
            room = 100_000 - self.written
            self.written += self.handle.write(chunk[: max(room, 0)])
            if len(chunk) > room:
                raise enospc()
            return len(chunk)

    monkeypatch.setattr(download, "open", lambda *a, **k: FillsUp(real_open(*a, **k)), raising=False)
    with pytest.raises(NoSpace, match=r"f.bin.part: no space is left .* bytes received are kept"):
        download.fetch(url, tmp_path / "f.bin", progress=False)
    assert len(server.requests) == 1
    assert (tmp_path / "f.bin.part").stat().st_size > 0


def test_an_archive_that_cannot_fit_is_refused_before_extracting(tmp_path, monkeypatch):
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("trainA", "trainB"):
            zf.writestr(f"d/{split}/a.png", b"\0" * 50_000)
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 1_000)
    target = tmp_path / "datasets" / "d"
    with pytest.raises(NoSpace, match=r"Extracting .*d.zip needs 97.7 KiB"):
        extract.extract_dataset(archive, target)
    assert not target.exists() and list((tmp_path / "datasets").iterdir()) == []


def test_a_full_disk_while_generating_the_toy_dataset_leaves_no_half_dataset(home, monkeypatch):
    from cgdistill import paths
    from cgdistill.data import toy

    calls = {"n": 0}
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise enospc(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    target = paths.dataset_path("toy")
    with pytest.raises(NoSpace, match=f"Cannot write {target}: no space is left"):
        toy.make_toy_dataset(target, size=16, n_train=4, n_test=1)
    assert list(target.parent.iterdir()) == []
