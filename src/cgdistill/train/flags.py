"""What a config field says about its command-line flag: help, panel, bounds, choices, resumability.

The training configs (train/config.py) are the one source of every ``train-teacher`` and ``distill``
flag. Each field carries a :class:`Flag` in its metadata (``field(default=..., metadata=flag(...))``)
or says it is no flag (``metadata=internal()``); the CLI (cli/train.py) builds both commands from
:func:`flag_specs`, so adding a flag is one field in train/config.py and nothing else. A subclass
that only changes a field's default (``batch_size: int = 4``) keeps the flag its base declared.

No Typer here: the library states the flags, the CLI turns them into options.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from cgdistill.errors import CgdistillError

FLAG_KEY = "cgdistill.flag"

# Help panels, in the order --help shows them.
RUN = "Run"
TRAIN = "Training"
PERF = "Device and speed"
PANELS = (RUN, TRAIN, PERF)


@dataclass(frozen=True)
class Flag:
    """A field's flag. ``choices`` is the collection of allowed values (a tuple from options.py, which
    the module that owns the choice imports too)."""

    help: str
    panel: str
    min: float | None = None
    max: float | None = None
    choices: typing.Collection[str] | None = None
    resumable: bool = False  # may change on --resume: it changes speed or bookkeeping, not the result


def flag(
    help: str,
    *,
    panel: str,
    min: float | None = None,
    max: float | None = None,
    choices: typing.Collection[str] | None = None,
    resumable: bool = False,
) -> dict[str, Flag]:
    """Field metadata declaring the field's flag (``--field-name``; a bool is ``--x/--no-x``)."""
    if panel not in PANELS:
        raise ValueError(f"panel must be one of {PANELS}, got {panel!r}")
    return {FLAG_KEY: Flag(help, panel, min, max, choices, resumable)}


def internal() -> dict[str, None]:
    """Field metadata for a setting that is stored with the run but has no flag."""
    return {FLAG_KEY: None}


@dataclass(frozen=True)
class FlagSpec:
    """One flag of one config class: the field's name, resolved type and default, and its ``Flag``."""

    name: str
    type: object
    default: object
    flag: Flag

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_switch(self) -> bool:
        """True for a bool field, whose flag has a ``--no-`` form."""
        return self.type in (bool, bool | None)

    def allowed(self) -> tuple[str, ...] | None:
        """The allowed values, or None when any value of the type is."""
        choices = self.flag.choices
        return None if choices is None else tuple(choices)


def _declared_flag(config_type: type, name: str) -> Flag | None:
    """The ``Flag`` of field ``name``: its own, or the nearest base's when the subclass only changed the default."""
    for cls in config_type.__mro__:
        declared = getattr(cls, "__dataclass_fields__", {}).get(name)
        if declared is not None and FLAG_KEY in declared.metadata:
            return declared.metadata[FLAG_KEY]
    raise TypeError(f"{config_type.__name__}.{name} declares neither flag(...) nor internal() in its field metadata.")


def flag_specs(config_type: type) -> list[FlagSpec]:
    """Every flag of a config class, the class's own fields first (what sets its command apart), then
    the inherited ones, each in declaration order."""
    hints = typing.get_type_hints(config_type)
    own = list(config_type.__dict__.get("__annotations__", {}))
    ordered = sorted(dataclasses.fields(config_type), key=lambda f: own.index(f.name) if f.name in own else len(own))
    specs = []
    for field in ordered:
        declared = _declared_flag(config_type, field.name)
        if declared is not None:
            specs.append(FlagSpec(field.name, hints[field.name], field.default, declared))
    return specs


def resumable_fields(config_type: type) -> frozenset[str]:
    """The fields of ``config_type`` that a flag may change on ``--resume``."""
    return frozenset(spec.name for spec in flag_specs(config_type) if spec.flag.resumable)


def _one_of(values: tuple[str, ...]) -> str:
    return " or ".join(values) if len(values) == 2 else "one of " + ", ".join(values)


def check_choices(config: object) -> None:
    """Refuse, in one sentence naming the flag, a value outside a flag's choices (None means unset)."""
    for spec in flag_specs(type(config)):
        allowed = spec.allowed()
        value = getattr(config, spec.name)
        if allowed is not None and value is not None and value not in allowed:
            raise CgdistillError(f"{spec.option} {value!r} is not valid; use {_one_of(allowed)}.")
