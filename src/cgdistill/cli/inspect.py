"""`cgdistill inspect FILE`: what a weights file holds, without importing it (logic in cgdistill.layouts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cgdistill.cli.app import app, console, note, show, styled

_FORMATS = {"pytorch": "PyTorch checkpoint", "safetensors": "safetensors file"}
_MAX_METADATA = 12


@app.command("inspect")
def inspect(
    file: Annotated[
        Path,
        typer.Argument(
            help="A .pth, .pt, .ckpt, .safetensors or exported .onnx file.", show_default=False, dir_okay=False
        ),
    ],
    json_: Annotated[bool, typer.Option("--json", help="Print a machine-readable report instead.")] = False,
) -> None:
    """Show the networks in a weights file, their recognised layout, config and size; nothing in it runs."""
    from cgdistill.layouts import inspect_weights
    from cgdistill.onnxfile import is_onnx_file

    if is_onnx_file(file):
        _show_onnx(file, json_)
        return
    report = inspect_weights(file)
    if json_:
        console.print_json(json.dumps(report.to_dict()))
        return
    kind = _FORMATS[report.format]
    if report.cgdistill is not None:
        kind = "cgdistill model file"
    show(styled("[bold]{}[/]: {}", report.path, f"{kind}, {report.tensors} tensors, {report.parameters:,} parameters"))
    if report.cgdistill is not None:
        show("  " + _facts(report.cgdistill))

    table = Table(title="Networks", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("what", overflow="fold")
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("direction", no_wrap=True)
    for network in report.networks:
        direction = network.direction or ""
        table.add_row(Text(network.label), Text(network.summary), f"{network.parameters:,}", Text(direction))
    console.print(table)

    for network in report.generators:
        found = network.generator
        assert found is not None
        for line in found.notes:
            note(f"{network.label}: {line}")
        if found.refusal:
            note(f"{network.label} cannot be imported: {found.refusal}.")

    shown = list(report.metadata.items())
    if report.cgdistill is not None:
        shown = []
    if shown:
        show("Other entries: " + ", ".join(f"{k}={v}" for k, v in shown[:_MAX_METADATA]))
        if len(shown) > _MAX_METADATA:
            show(f"  ... and {len(shown) - _MAX_METADATA} more (see --json)")
    if report.skipped:
        show("Not networks: " + ", ".join(report.skipped))

    importable = [n for n in report.generators if n.generator and not n.generator.refusal]
    if importable and report.cgdistill is None:
        key = "" if len(importable) == 1 or _both_directions(importable) else " --key NAME"
        note(f"Import with: cgdistill download --pretrained NAME --from-file {report.path}{key}")


def _both_directions(generators: list) -> bool:
    return len(generators) == 2 and {g.direction for g in generators} == {"A2B", "B2A"}


def _facts(info) -> str:
    """A cgdistill model's recorded context on one line."""
    facts = {"kind": info.kind, "direction": info.direction, "dataset": info.dataset, "step": info.step}
    if info.teacher:
        facts["teacher"] = info.teacher
    if info.judges:
        facts["judges domain"] = info.judges
    return ", ".join(f"{k} {v}" for k, v in facts.items() if v is not None)


def _show_onnx(file: Path, json_: bool) -> None:
    """An exported ONNX file: what its metadata records (its graph is onnxruntime's to run, not ours to read)."""
    from cgdistill.onnxfile import read_onnx_info

    info = read_onnx_info(file)
    if json_:
        console.print_json(json.dumps({"path": str(file), "format": "onnx", "cgdistill": info.to_metadata()}))
        return
    show(styled("[bold]{}[/]: {}", file, "cgdistill ONNX export"))
    show("  " + _facts(info))
    config = info.config
    show(f"  {config.get('blocks')} {config.get('block', 'standard')} blocks, ngf {config.get('ngf')}")
    note(f"Run it with: cgdistill translate IMAGE --model {file}")
