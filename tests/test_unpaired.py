"""The unpaired loader: the CycleGAN augmentations, reproducible from (seed, epoch, index), robust to bad files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cgdistill.data.toy import make_toy_dataset
from cgdistill.data.unpaired import DatasetWarning, EpochSampler, UnpairedDataset, epoch_order
from cgdistill.errors import CgdistillError
from image_folder import ImageFolderDataset

SIZES = {"load_size": 20, "image_size": 16}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy dataset: 24-px images, 8 per train domain, 3 per test domain."""
    return make_toy_dataset(tmp_path_factory.mktemp("data") / "toy", size=24, n_train=8, n_test=3)


@pytest.fixture
def copy_of_toy(toy_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy_root, tmp_path / "toy"))


def dataset(root: Path, **options) -> UnpairedDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # the clean dataset must not warn
        return UnpairedDataset(root, **{**SIZES, **options})


def same_item(x: dict, y: dict) -> bool:
    return (
        x["A_path"] == y["A_path"]
        and x["B_path"] == y["B_path"]
        and torch.equal(x["A"], y["A"])
        and torch.equal(x["B"], y["B"])
    )


def test_items_are_cropped_tensors_in_the_tanh_range(toy_root: Path) -> None:
    item = dataset(toy_root)[0]
    for domain in "AB":
        assert item[domain].shape == (3, 16, 16) and item[domain].dtype == torch.float32
        assert item[domain].min() >= -1.0 and item[domain].max() <= 1.0
    assert Path(item["A_path"]).parent.name == "trainA" and Path(item["B_path"]).parent.name == "trainB"


def test_test_split_reads_the_test_folders(toy_root: Path) -> None:
    data = dataset(toy_root, split="test", flip=False)
    assert len(data) == 3 and Path(data[2]["A_path"]).parent.name == "testA"


def test_length_is_the_larger_domain_and_a_wraps_around(copy_of_toy: Path) -> None:
    for extra in sorted((copy_of_toy / "trainA").iterdir())[:3]:
        extra.unlink()
    data = dataset(copy_of_toy)
    assert len(data.A_paths) == 5 and len(data) == 8
    assert data[6]["A_path"] == data[1]["A_path"] == str(data.A_paths[1])


def test_an_item_is_a_pure_function_of_seed_epoch_and_index(toy_root: Path) -> None:
    first, second = dataset(toy_root, seed=7), dataset(toy_root, seed=7)
    _ = second[5], second[2]  # touching other items first changes nothing
    first.set_epoch(3)
    second.set_epoch(3)
    assert all(same_item(first[i], second[i]) for i in range(len(first)))
    assert same_item(first[4], second[(3, 4)])


def test_epochs_and_seeds_draw_different_augmentations(toy_root: Path) -> None:
    data = dataset(toy_root, seed=0)
    epoch0 = [data[(0, i)] for i in range(len(data))]
    epoch1 = [data[(1, i)] for i in range(len(data))]
    other_seed = [dataset(toy_root, seed=1)[(0, i)] for i in range(len(data))]
    assert not all(same_item(x, y) for x, y in zip(epoch0, epoch1, strict=True))
    assert not all(same_item(x, y) for x, y in zip(epoch0, other_seed, strict=True))
    assert all(x["A_path"] == y["A_path"] for x, y in zip(epoch0, epoch1, strict=True))


def test_b_is_drawn_independently_of_a(toy_root: Path) -> None:
    data = dataset(toy_root)
    names = [path.name for path in data.B_paths]
    partners = {i: {Path(data[(epoch, i)]["B_path"]).name for epoch in range(12)} for i in range(len(data))}
    assert all(len(seen) >= 4 for seen in partners.values())  # a given A meets many B images
    same_position = sum(Path(data[(0, i)]["B_path"]).name == names[i] for i in range(len(data)))
    assert same_position < len(data)  # B is not simply the A index


def test_without_flip_and_crop_the_image_is_the_resized_file(toy_root: Path) -> None:
    data = dataset(toy_root, load_size=24, image_size=24, flip=False)
    item = data[0]
    expected = torch.from_numpy(np.array(Image.open(item["A_path"]))).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(item["A"], expected)


def test_worker_processes_give_the_same_batches_as_the_main_process(toy_root: Path) -> None:
    data = dataset(toy_root, seed=5)

    def batches(workers: int) -> list[dict]:
        sampler = EpochSampler(len(data), seed=5)
        loader = DataLoader(data, batch_size=3, sampler=sampler, num_workers=workers)
        result = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            result += list(loader)
        return result

    inline, workers = batches(0), batches(2)
    assert len(inline) == len(workers) == 6
    for x, y in zip(inline, workers, strict=True):
        assert x["A_path"] == y["A_path"] and x["B_path"] == y["B_path"]
        assert torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])


def test_unreadable_files_are_skipped_with_one_warning(copy_of_toy: Path) -> None:
    (copy_of_toy / "trainA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (copy_of_toy / "trainB" / "empty.jpg").write_bytes(b"")
    with pytest.warns(DatasetWarning) as caught:
        data = UnpairedDataset(copy_of_toy, **SIZES)
    assert len(caught) == 1 and len(data.warnings) == 1
    assert "broken.png" in data.warnings[0] and "empty.jpg" in data.warnings[0]
    assert sorted(p.name for p, _ in data.skipped) == ["broken.png", "empty.jpg"]
    assert len(data.A_paths) == 8 and len(data.B_paths) == 8
    for epoch in range(3):
        for i in range(len(data)):
            data[(epoch, i)]


def test_a_file_that_fails_to_decode_mid_epoch_is_replaced_not_fatal(copy_of_toy: Path) -> None:
    # A JPEG whose header is fine but whose data is cut: the header check passes, decoding fails.
    noise = np.random.default_rng(0).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(copy_of_toy / "trainA" / "0000.jpg", quality=90)
    whole = (copy_of_toy / "trainA" / "0000.jpg").read_bytes()
    (copy_of_toy / "trainA" / "0000.jpg").write_bytes(whole[: len(whole) // 2])
    data = dataset(copy_of_toy)
    assert data.A_paths[0].name == "0000.jpg"
    with pytest.warns(DatasetWarning, match="0000.jpg"):
        item = data[0]
    assert Path(item["A_path"]).name != "0000.jpg" and item["A"].shape == (3, 16, 16)


def test_small_images_are_resized_up_with_one_warning(copy_of_toy: Path) -> None:
    for name in ("0001.png", "0002.png"):
        Image.new("RGB", (10, 12), (0, 90, 200)).save(copy_of_toy / "trainB" / name)
    with pytest.warns(DatasetWarning) as caught:
        data = UnpairedDataset(copy_of_toy, **SIZES)
    assert len(caught) == 1 and len(data.warnings) == 1
    assert "2 image(s)" in data.warnings[0] and "resized up" in data.warnings[0] and "10x12" in data.warnings[0]
    assert all(data[(0, i)]["B"].shape == (3, 16, 16) for i in range(len(data)))


@pytest.mark.parametrize("problem", ["no root", "no trainB", "empty trainA", "all unreadable"])
def test_a_bad_layout_is_one_sentence_showing_the_expected_layout(copy_of_toy: Path, problem: str) -> None:
    root = copy_of_toy
    if problem == "no root":
        root = copy_of_toy / "nowhere"
    elif problem == "no trainB":
        shutil.rmtree(root / "trainB")
    elif problem == "empty trainA":
        for path in (root / "trainA").iterdir():
            path.unlink()
    else:
        for path in (root / "trainA").iterdir():
            path.write_bytes(b"nope")
    with pytest.raises(CgdistillError) as error:
        UnpairedDataset(root, **SIZES)
    message = error.value.message
    assert f"{root}/trainA/" in message and f"{root}/trainB/" in message and "testA/" in message
    assert message.endswith(".") and "\n" not in message


def test_pointing_at_the_folder_above_the_dataset_suggests_the_right_one(copy_of_toy: Path) -> None:
    with pytest.raises(CgdistillError, match=rf"did you mean {copy_of_toy}\?"):
        UnpairedDataset(copy_of_toy.parent, **SIZES)


def test_a_crop_larger_than_the_load_size_is_refused(toy_root: Path) -> None:
    with pytest.raises(CgdistillError, match="--load-size"):
        UnpairedDataset(toy_root, load_size=16, image_size=20)


def test_epoch_order_is_a_deterministic_shuffle_that_changes_each_epoch() -> None:
    order = epoch_order(50, seed=1, epoch=0)
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert order == epoch_order(50, seed=1, epoch=0)
    assert order != epoch_order(50, seed=1, epoch=1)
    assert order != epoch_order(50, seed=2, epoch=0)


@pytest.mark.parametrize("n, world_size", [(10, 2), (10, 3), (7, 4), (3, 4)])
def test_epoch_order_shards_are_equal_length_and_cover_everything(n: int, world_size: int) -> None:
    shards = [epoch_order(n, seed=0, epoch=2, rank=r, world_size=world_size) for r in range(world_size)]
    per_rank = -(-n // world_size)
    assert all(len(shard) == per_rank for shard in shards)
    flat = [i for shard in shards for i in shard]
    assert set(flat) == set(range(n))
    assert len(flat) - len(set(flat)) == per_rank * world_size - n  # only the wrap-around padding repeats


def test_epoch_order_shards_are_disjoint_when_they_divide_evenly() -> None:
    shards = [set(epoch_order(12, seed=3, epoch=0, rank=r, world_size=3)) for r in range(3)]
    assert shards[0].isdisjoint(shards[1]) and shards[1].isdisjoint(shards[2]) and shards[0].isdisjoint(shards[2])


def test_sampler_resumes_mid_epoch_where_it_left_off() -> None:
    sampler = EpochSampler(20, seed=4)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start=7)
    assert list(sampler) == full[7:] and len(sampler) == 13
    assert full == [(3, i) for i in epoch_order(20, seed=4, epoch=3)]


def test_image_folder_dataset_centre_crops_in_file_order(toy_root: Path, tmp_path: Path) -> None:
    Image.new("RGB", (40, 20), (0, 0, 0)).save(tmp_path / "wide.png")
    wide = ImageFolderDataset(tmp_path, 16)
    assert wide[0]["image"].shape == (3, 16, 16)
    inputs = ImageFolderDataset(toy_root / "testA", 16)
    truth = ImageFolderDataset(toy_root / "testA_gt", 16)
    assert [Path(p).name for p in (inputs[i]["path"] for i in range(3))] == [
        Path(p).name for p in (truth[i]["path"] for i in range(3))
    ]
    assert torch.equal(inputs[1]["image"], inputs[1]["image"])
