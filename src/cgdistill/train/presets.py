"""Named student shapes for ``distill --preset``: depth, width and residual-block kind in one word.

A preset fills in ``blocks``, ``ngf``, ``block`` and ``ends`` unless the user set them; widths are fractions
of the teacher's, so a preset means the same trade-off for any teacher. The latency and fidelity
behind each choice are in docs/benchmarks.md and docs/distillation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from cgdistill.nets import GeneratorConfig
from cgdistill.train.config import DistillConfig


@dataclass(frozen=True)
class Preset:
    blocks: int
    width: float  # student ngf as a fraction of the teacher's
    block: str
    summary: str
    lr: float = 2e-4
    echo: int = 1  # student updates per teacher batch (--echo)
    lambda_feature: float = 1.0  # weight of the hidden-state L2 (--lambda-feature)
    ends: str = "full"  # stem and head resolution (--ends)
    # Each crop the whole image (--load-size equal to --image-size): an image's teacher outputs then serve
    # it every epoch (--teacher-cache), so the later epochs cost the student's updates alone.
    whole_images: bool = False


# One entry per name in options.PRESET_NAMES (--preset's choices; tests/test_presets.py holds them equal).
PRESETS: dict[str, Preset] = {
    # The recipes were measured on a real published teacher (docs/distillation.md): every student learns
    # faster at a higher lr than the GAN recipe's 2e-4; a second update on each teacher batch (--echo 2)
    # costs less than a fresh step (the teacher's pass is most of a narrow student's step, and a
    # same-width student shares the teacher's encoder pass); every student follows the teacher's hidden
    # states more closely with a heavier feature loss (x20: +3.3 dB for default, +1.2 dB for fast, +0.3 dB
    # for fastest within their budgets); half width keeps more detail than a quarter.
    "default": Preset(
        3,
        1.0,
        "standard",
        "3 standard blocks at the teacher's width (outer layers copied)",
        lr=5e-4,
        echo=3,
        lambda_feature=20.0,
    ),  # fmt: skip
    "fast": Preset(
        3, 0.5, "standard", "3 standard blocks at half the teacher's width", lr=1e-3, echo=2, lambda_feature=20.0
    ),
    # fastest: the stem and head at half resolution (--ends half): 23-25x the teacher's speed at 256 px
    # instead of 16.6x, and a 640x480 frame in 27 ms compiled instead of 51 (docs/distillation.md, issue 29).
    # Four updates per teacher batch: its student's update costs a seventh of the teacher's pass, and
    # --echo 4 gave 28.2 dB against 27.7 with --echo 2 in the same 15 minutes (issue 29, lever 4).
    # Whole images, with the teacher's outputs cached: twice the steps in 15 minutes, 28.09 dB against
    # 27.37 with crops, back to back (issue 29, lever 5).
    "fastest": Preset(
        3,
        0.25,
        "standard",
        "3 standard blocks at a quarter of the teacher's width, stem and head at half resolution",
        lr=1e-3,
        echo=4,
        lambda_feature=20.0,
        ends="half",
        whole_images=True,
    ),
}
SHAPE_FIELDS = ("blocks", "ngf", "block", "ends")
# What a preset sets beside the shape (its recipe, measured per preset; docs/distillation.md).
RECIPE_FIELDS = ("lr", "echo", "lambda_feature", "load_size")


def preset_ngf(preset: Preset, teacher_ngf: int) -> int | None:
    """The student width a preset gives for a teacher of ``teacher_ngf`` (None: the teacher's own)."""
    if preset.width == 1.0:
        return None
    return max(1, round(teacher_ngf * preset.width))


def preset_generator(preset: Preset, teacher: GeneratorConfig) -> GeneratorConfig:
    """The student generator a preset gives for ``teacher`` (as ``distill`` builds it): for benchmarks."""
    ngf = preset_ngf(preset, teacher.ngf) or teacher.ngf
    return replace(teacher, blocks=preset.blocks, ngf=ngf, block=preset.block, ends=preset.ends)


def preset_values(config: DistillConfig, teacher_ngf: int, given: set[str] | None = None) -> dict[str, object]:
    """The student's shape and recipe from ``config.preset``, for the fields the user did not set.

    A field counts as set when ``given`` (the flags named on the command line) holds it, or when it
    differs from its default (library use, where nothing says which fields a caller wrote).
    """
    preset = PRESETS[config.preset]
    defaults = {f.name: f.default for f in fields(DistillConfig)}
    names = SHAPE_FIELDS + RECIPE_FIELDS
    given = set(given or ()) | {name for name in names if getattr(config, name) != defaults[name]}
    values = {
        "blocks": preset.blocks,
        "ngf": preset_ngf(preset, teacher_ngf),
        "block": preset.block,
        "ends": preset.ends,
        "lr": preset.lr,
        "echo": preset.echo,
        "lambda_feature": preset.lambda_feature,
        "load_size": config.image_size if preset.whole_images else config.load_size,
    }
    return {name: values[name] for name in names if name not in given}
