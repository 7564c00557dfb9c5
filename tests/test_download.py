"""The fetcher and safe extraction, against a loopback server (never the internet)."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from cgdistill.data import download
from cgdistill.data.download import download_dataset, fetch, part_path
from cgdistill.data.extract import extract_dataset
from cgdistill.data.registry import DATASETS, PRETRAINED, get_dataset, get_pretrained
from cgdistill.errors import CgdistillError, WorkFailed
from httpserver import closed_port_url

PAYLOAD = os.urandom(200_000)


def dataset_zip(top: str | None = "ds", splits=("trainA", "trainB", "testA", "testB"), n: int = 2) -> bytes:
    """A zip in the published layout: ``top/trainA/0.jpg`` ... (``top`` None puts splits at the root)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for split in splits:
            for index in range(n):
                name = f"{split}/{index}.jpg" if top is None else f"{top}/{split}/{index}.jpg"
                archive.writestr(name, f"image {split} {index} ".encode() * 50)
    return buffer.getvalue()


def zip_with_entry(info: zipfile.ZipInfo, data: bytes = b"evil") -> bytes:
    """A valid dataset zip plus one extra entry, written last so a naive extractor writes the rest first."""
    buffer = io.BytesIO(dataset_zip())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(info, data)
    return buffer.getvalue()


# --- fetch ----------------------------------------------------------------------------------------


def test_fetch_downloads_the_bytes_and_leaves_no_part_file(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD)
    dest = fetch(url, tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


def test_a_cut_transfer_resumes_with_a_range_request_on_the_automatic_retry(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD, cut_after=70_000)
    dest = fetch(url, tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == [None, "bytes=70000-"]
    assert server.requests[1].status == 206


def test_a_part_file_left_by_an_earlier_run_is_resumed(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD, cut_after=50_000)
    dest = tmp_path / "f.bin"
    with pytest.raises(WorkFailed, match="next run resumes"):
        fetch(url, dest, retries=0, progress=False)
    assert part_path(dest).stat().st_size == 50_000
    assert not dest.exists()

    fetch(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1].range == "bytes=50000-"


def test_ctrl_c_keeps_the_part_file_and_the_next_run_resumes(server, tmp_path, monkeypatch):
    payload = os.urandom(3_000_000)
    url = server.add("/big.bin", payload)
    dest = tmp_path / "big.bin"

    def interrupt(self, completed: int) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(download._Bar, "update", interrupt)
        with pytest.raises(KeyboardInterrupt):
            fetch(url, dest, progress=False)
    kept = part_path(dest).stat().st_size
    assert 0 < kept < len(payload)

    fetch(url, dest, progress=False)
    assert dest.read_bytes() == payload
    assert server.requests[-1].range == f"bytes={kept}-"


def test_a_server_that_ignores_range_restarts_cleanly_from_zero(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD, ranges=False, cut_after=30_000)
    dest = fetch(url, tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), ("bytes=30000-", 200)]


def test_a_complete_part_file_answered_with_416_is_accepted(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(PAYLOAD)
    fetch(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0].status == 416


def test_a_part_file_longer_than_the_file_starts_again(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(PAYLOAD + b"stale bytes from another file")
    fetch(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_a_503_is_retried(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD, fail_first=1)
    fetch(url, tmp_path / "f.bin", progress=False)
    assert [r.status for r in server.requests] == [503, 200]


def test_a_404_is_not_retried_and_names_the_url(server, tmp_path):
    url = server.url("/missing.zip")
    with pytest.raises(CgdistillError, match=r"missing\.zip answered HTTP 404") as info:
        fetch(url, tmp_path / "m.zip", progress=False)
    assert url in info.value.message
    assert len(server.requests) == 1


def test_no_network_names_the_url_and_suggests_url_or_from_file(tmp_path):
    url = closed_port_url()
    with pytest.raises(WorkFailed) as info:
        fetch(url, tmp_path / "x.zip", retries=1, progress=False)
    assert url in info.value.message
    assert "--url" in info.value.message and "--from-file" in info.value.message


def test_expected_size_mismatch_is_refused(server, tmp_path):
    url = server.add("/f.bin", PAYLOAD)
    with pytest.raises(WorkFailed, match="expected"):
        fetch(url, tmp_path / "f.bin", expected_size=len(PAYLOAD) + 1, progress=False)
    assert not (tmp_path / "f.bin").exists()


def test_the_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    url = server.add("/f.bin", PAYLOAD)
    fetch(url, tmp_path / "f.bin", description="f.bin")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "f.bin" in captured.err


# --- extraction -----------------------------------------------------------------------------------


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_zip_in_the_published_layout_extracts_the_four_folders(tmp_path):
    source = write(tmp_path / "ds.zip", dataset_zip(top="horse2zebra"))
    target = tmp_path / "datasets" / "horse2zebra"
    extract_dataset(source, target)
    assert sorted(p.name for p in target.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    assert (target / "trainA" / "0.jpg").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["horse2zebra"]  # no staging left behind


def test_a_zip_with_splits_at_its_root_extracts_too(tmp_path):
    source = write(tmp_path / "ds.zip", dataset_zip(top=None))
    target = extract_dataset(source, tmp_path / "datasets" / "flat")
    assert (target / "testB" / "1.jpg").is_file()


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("ds/../../escape.txt", "'..'"),
        ("../escape.txt", "'..'"),
        ("/tmp/escape.txt", "absolute path"),
        ("C:/escape.txt", "drive letter"),
        ("ds\\..\\..\\escape.txt", "'..'"),
    ],
)
def test_an_escaping_entry_refuses_the_whole_archive_and_writes_nothing(tmp_path, entry, why):
    source = write(tmp_path / "evil.zip", zip_with_entry(zipfile.ZipInfo(entry)))
    assert entry in zipfile.ZipFile(source).namelist()
    datasets = tmp_path / "home" / "datasets"
    datasets.mkdir(parents=True)
    with pytest.raises(CgdistillError, match=why) as info:
        extract_dataset(source, datasets / "evil")
    assert repr(entry) in info.value.message
    assert list(datasets.iterdir()) == []
    assert not any(p.name == "escape.txt" for p in tmp_path.rglob("*"))


def test_a_symlink_entry_refuses_the_whole_archive(tmp_path):
    link = zipfile.ZipInfo("ds/trainA/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    source = write(tmp_path / "evil.zip", zip_with_entry(link, b"/etc/passwd"))
    datasets = tmp_path / "datasets"
    with pytest.raises(CgdistillError, match="symbolic link"):
        extract_dataset(source, datasets / "evil")
    assert not (datasets / "evil").exists()


def test_a_corrupt_zip_is_refused_with_the_fix(tmp_path):
    data = bytearray(dataset_zip())
    marker = data.index(b"image trainB 1")
    data[marker : marker + 5] = b"XXXXX"  # stored entry: the CRC no longer matches
    source = write(tmp_path / "bad.zip", bytes(data))
    with pytest.raises(CgdistillError, match="corrupt.*--force") as info:
        extract_dataset(source, tmp_path / "datasets" / "bad", fix="run `cgdistill download bad --force`")
    assert "trainB/1.jpg" in info.value.message
    assert not (tmp_path / "datasets" / "bad").exists()


def test_a_truncated_zip_is_refused(tmp_path):
    source = write(tmp_path / "cut.zip", dataset_zip()[:-300])
    with pytest.raises(CgdistillError, match="not a readable zip"):
        extract_dataset(source, tmp_path / "datasets" / "cut")


def test_a_zip_without_the_layout_shows_the_expected_layout(tmp_path):
    source = write(tmp_path / "odd.zip", dataset_zip(splits=("images",)))
    with pytest.raises(CgdistillError, match=r"NAME/trainA/, NAME/trainB/"):
        extract_dataset(source, tmp_path / "datasets" / "odd")
    assert list((tmp_path / "datasets").iterdir()) == []


def test_extracting_over_an_existing_dataset_replaces_it_whole(tmp_path):
    target = tmp_path / "datasets" / "ds"
    (target / "trainA").mkdir(parents=True)
    (target / "trainA" / "old.jpg").write_bytes(b"old")
    extract_dataset(write(tmp_path / "ds.zip", dataset_zip()), target)
    assert not (target / "trainA" / "old.jpg").exists()
    assert (target / "trainA" / "0.jpg").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["ds"]


# --- dataset flow ---------------------------------------------------------------------------------


def test_download_dataset_fetches_extracts_and_drops_the_zip(server, home):
    url = server.add("/x.zip", dataset_zip(top="x"))
    result = download_dataset("mine", url=url, progress=False)
    assert result.status == "downloaded"
    assert result.path == home / "datasets" / "mine"
    assert (result.path / "testA" / "0.jpg").is_file()
    assert not (home / "downloads" / "mine.zip").exists()


def test_download_dataset_leaves_a_present_dataset_alone(server):
    url = server.add("/x.zip", dataset_zip())
    download_dataset("mine", url=url, progress=False)
    again = download_dataset("mine", url=url, progress=False)
    assert again.status == "present"
    assert len(server.requests) == 1


def test_download_dataset_refuses_to_overwrite_an_incomplete_folder_without_force(home, tmp_path):
    (home / "datasets" / "mine").mkdir(parents=True)
    source = write(tmp_path / "x.zip", dataset_zip())
    with pytest.raises(CgdistillError, match="--force"):
        download_dataset("mine", from_file=source)
    assert download_dataset("mine", from_file=source, force=True).status == "extracted"


def test_cityscapes_explains_where_to_get_it(server):
    with pytest.raises(CgdistillError, match="cityscapes-dataset.com") as info:
        download_dataset("cityscapes")
    assert "trainA" in info.value.message and "trainB" in info.value.message
    assert server.requests == []


def test_names_that_would_leave_the_datasets_folder_are_refused(tmp_path):
    with pytest.raises(CgdistillError, match="folder name"):
        download_dataset("../x", from_file=tmp_path / "x.zip")


# --- registry -------------------------------------------------------------------------------------


def test_the_registry_knows_every_published_dataset_and_model():
    published = [
        "apple2orange",
        "summer2winter_yosemite",
        "horse2zebra",
        "monet2photo",
        "cezanne2photo",
        "ukiyoe2photo",
        "vangogh2photo",
        "maps",
        "cityscapes",
        "facades",
        "iphone2dslr_flower",
        "ae_photos",
        "mini",
    ]
    assert set(published) | {"toy"} == set(DATASETS)
    assert get_dataset("horse2zebra").url == "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip"
    assert get_dataset("cityscapes").url is None
    assert len(PRETRAINED) == 18
    assert all(entry.dataset in DATASETS for entry in PRETRAINED.values())
    assert get_pretrained("style_monet").url.endswith("/cyclegan/pretrained_models/style_monet.pth")


@pytest.mark.parametrize(
    ("name", "dataset", "direction", "reads"),
    [
        ("horse2zebra", "horse2zebra", "A2B", "horses"),
        ("zebra2horse", "horse2zebra", "B2A", "zebras"),
        ("style_monet", "monet2photo", "B2A", "photos"),
        ("style_cezanne", "cezanne2photo", "B2A", "photos"),
        ("sat2map", "maps", "A2B", "satellite images"),
        ("map2sat", "maps", "B2A", "map tiles"),
        ("facades_label2photo", "facades", "B2A", "facade label maps"),
        ("cityscapes_photo2label", "cityscapes", "A2B", "street photos"),
    ],
)
def test_pretrained_directions_are_in_their_dataset_terms(name, dataset, direction, reads):
    entry = get_pretrained(name)
    assert (entry.dataset, entry.direction, entry.input_domain) == (dataset, direction, reads)


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(CgdistillError, match="horse2zebra.*monet2photo"):
        get_dataset("horse2cat")
    with pytest.raises(CgdistillError, match="style_monet"):
        get_pretrained("style_picasso")
