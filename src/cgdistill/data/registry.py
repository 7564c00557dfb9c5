"""What can be downloaded: the CycleGAN authors' datasets and pretrained generators, and `toy`.

Every entry says what its domains A and B are, because a direction (A2B, B2A) means nothing
without them: in monet2photo A is Monet paintings, so painting a photo like Monet is B2A.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cgdistill.errors import CgdistillError
from cgdistill.paths import TRAIN_SPLITS

DATASETS_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"
PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"

TEST_SPLITS = ("testA", "testB")
SPLITS = TRAIN_SPLITS + TEST_SPLITS


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset cgdistill knows by name.

    ``source`` is ``remote`` (a zip at ``url``), ``local`` (generated on this machine) or ``manual``
    (the licence requires the user to fetch it; ``instructions`` says how).
    """

    name: str
    domain_a: str | None
    domain_b: str | None
    description: str
    source: str = "remote"
    instructions: str | None = None
    required: tuple[str, ...] = TRAIN_SPLITS  # split folders a complete copy must have

    @property
    def url(self) -> str | None:
        return DATASETS_URL.format(name=self.name) if self.source == "remote" else None


@dataclass(frozen=True)
class PretrainedEntry:
    """An official pretrained generator: which dataset it was trained on and which way it maps.

    ``direction`` is in that dataset's A/B terms, so ``input_domain`` is what the generator reads.
    """

    name: str
    dataset: str
    direction: str  # "A2B" or "B2A"

    @property
    def url(self) -> str:
        return PRETRAINED_URL.format(name=self.name)

    @property
    def input_domain(self) -> str | None:
        entry = DATASETS[self.dataset]
        return entry.domain_a if self.direction == "A2B" else entry.domain_b

    @property
    def output_domain(self) -> str | None:
        entry = DATASETS[self.dataset]
        return entry.domain_b if self.direction == "A2B" else entry.domain_a


_CITYSCAPES_HOWTO = (
    "The Cityscapes licence requires registration, so it cannot be downloaded automatically: register at "
    "https://www.cityscapes-dataset.com, download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip, "
    "convert them with datasets/prepare_cityscapes_dataset.py from github.com/junyanz/pytorch-CycleGAN-and-pix2pix "
    "(photos go to trainA/testA, colour label maps to trainB/testB), then run "
    "`cgdistill download cityscapes --from-file cityscapes.zip` on a zip of that folder or pass the folder to --data."
)

_DATASET_LIST = [
    DatasetEntry("apple2orange", "apples", "oranges", "996 apple and 1,020 navel-orange photos from ImageNet."),
    DatasetEntry(
        "summer2winter_yosemite",
        "summer Yosemite",
        "winter Yosemite",
        "1,273 summer and 854 winter Yosemite photos from Flickr.",
    ),
    DatasetEntry("horse2zebra", "horses", "zebras", "939 wild-horse and 1,177 zebra photos from ImageNet."),
    DatasetEntry("monet2photo", "Monet paintings", "photos", "1,074 Monet paintings and 6,853 photos."),
    DatasetEntry("cezanne2photo", "Cezanne paintings", "photos", "584 Cezanne paintings and photos."),
    DatasetEntry("ukiyoe2photo", "ukiyo-e prints", "photos", "1,433 ukiyo-e prints and photos."),
    DatasetEntry("vangogh2photo", "Van Gogh paintings", "photos", "401 Van Gogh paintings and photos."),
    DatasetEntry(
        "maps",
        "satellite images",
        "map tiles",
        "1,096 aerial photo and map tile pairs scraped from Google Maps (used unpaired).",
    ),
    DatasetEntry(
        "cityscapes",
        "street photos",
        "label maps",
        "2,975 Cityscapes street scenes and their colour label maps.",
        source="manual",
        instructions=_CITYSCAPES_HOWTO,
    ),
    DatasetEntry("facades", "facade photos", "facade label maps", "400 CMP Facades photos and label maps."),
    DatasetEntry(
        "iphone2dslr_flower",
        "iPhone flower photos",
        "DSLR flower photos",
        "1,813 iPhone and 3,316 DSLR photos from Flickr.",
    ),
    DatasetEntry(
        "ae_photos",
        "photos",
        None,
        "A few photos by Alexei Efros to try the style_* models on; test images only, no training split.",
        required=("testA",),
    ),
    DatasetEntry("mini", None, None, "A handful of images in the full layout, for smoke tests."),
    DatasetEntry(
        "toy",
        "day scenes",
        "night scenes",
        "Generated on this machine in seconds: 64 px scenes with ground truth for the test split (docs/datasets.md).",
        source="local",
    ),
]

DATASETS: dict[str, DatasetEntry] = {entry.name: entry for entry in _DATASET_LIST}

_PRETRAINED_LIST = [
    PretrainedEntry("apple2orange", "apple2orange", "A2B"),
    PretrainedEntry("orange2apple", "apple2orange", "B2A"),
    PretrainedEntry("summer2winter_yosemite", "summer2winter_yosemite", "A2B"),
    PretrainedEntry("winter2summer_yosemite", "summer2winter_yosemite", "B2A"),
    PretrainedEntry("horse2zebra", "horse2zebra", "A2B"),
    PretrainedEntry("zebra2horse", "horse2zebra", "B2A"),
    PretrainedEntry("monet2photo", "monet2photo", "A2B"),
    # The style_* models paint photos: input is the photo domain (B), output the painter (A).
    PretrainedEntry("style_monet", "monet2photo", "B2A"),
    PretrainedEntry("style_cezanne", "cezanne2photo", "B2A"),
    PretrainedEntry("style_ukiyoe", "ukiyoe2photo", "B2A"),
    PretrainedEntry("style_vangogh", "vangogh2photo", "B2A"),
    PretrainedEntry("sat2map", "maps", "A2B"),
    PretrainedEntry("map2sat", "maps", "B2A"),
    PretrainedEntry("cityscapes_photo2label", "cityscapes", "A2B"),
    PretrainedEntry("cityscapes_label2photo", "cityscapes", "B2A"),
    # In the facades dataset A is the photo and B the label map (the reference repo's README says so).
    PretrainedEntry("facades_photo2label", "facades", "A2B"),
    PretrainedEntry("facades_label2photo", "facades", "B2A"),
    PretrainedEntry("iphone2dslr_flower", "iphone2dslr_flower", "A2B"),
]

PRETRAINED: dict[str, PretrainedEntry] = {entry.name: entry for entry in _PRETRAINED_LIST}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    """Refuse names that are not a plain folder name, since NAME becomes a folder under the home."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise CgdistillError(
            f"Name {name!r} cannot be used as a folder name; use letters, digits, '.', '_' and '-' only."
        )
    return name


def get_dataset(name: str) -> DatasetEntry:
    """The registry entry for ``name``, or one sentence listing the names that exist."""
    entry = DATASETS.get(name)
    if entry is None:
        raise CgdistillError(
            f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
            "or pass --url URL or --from-file ZIP to store any zip under that name."
        )
    return entry


def get_pretrained(name: str) -> PretrainedEntry:
    """The registry entry for a pretrained generator, or one sentence listing the names that exist."""
    entry = PRETRAINED.get(name)
    if entry is None:
        raise CgdistillError(
            f"Unknown pretrained model {name!r}; choose one of {', '.join(PRETRAINED)}, "
            "or pass --from-file FILE to import any ResNet CycleGAN generator under that name."
        )
    return entry
