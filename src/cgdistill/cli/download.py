"""`cgdistill download`: datasets and official pretrained generators (the logic is in cgdistill.data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cgdistill import paths
from cgdistill.cli.app import app, console, note, show, styled
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import format_bytes


@app.command("download")
def download(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Dataset name (see --list), or with --pretrained a pretrained generator name.", show_default=False
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Show the known datasets and pretrained models, and which are here.")
    ] = False,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="NAME is an official CycleGAN generator: import it as a teacher run.")
    ] = False,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Use this local .zip (dataset) or .pth (--pretrained) instead of downloading.",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Download from this URL instead (a mirror, or any zip in the same layout).",
            show_default=False,
        ),
    ] = None,
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction",
            help="With --pretrained: what the generator maps, A2B or B2A (default: the registry's, else A2B).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Download and extract again even if it is already here; with --pretrained, replace the run."
        ),
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="With --pretrained: the network to import from a file that holds several (see `cgdistill inspect`).",
            show_default=False,
        ),
    ] = None,
    run_name: Annotated[
        str | None,
        typer.Option(
            "--name", help="With --pretrained: the teacher run to create (default: NAME).", show_default=False
        ),
    ] = None,
) -> None:
    """Download a dataset into the home, or import an official pretrained generator as a teacher run."""
    if list_:
        _print_lists()
        return
    if name is None:
        raise CgdistillError(
            "Name a dataset or model to download (`cgdistill download horse2zebra`), or pass --list to see them."
        )
    if direction is not None and not pretrained:
        raise CgdistillError("--direction only applies to --pretrained models; datasets hold both directions.")
    if key is not None and not pretrained:
        raise CgdistillError("--key only applies to --pretrained models; it names a network inside a weights file.")
    if run_name is not None and not pretrained:
        raise CgdistillError("--name only applies to --pretrained models; a dataset's folder is its NAME.")
    if pretrained:
        _download_pretrained(name, from_file, url, direction, force, key, run_name)
    else:
        _download_dataset(name, from_file, url, force)


def _download_dataset(name: str, from_file: Path | None, url: str | None, force: bool) -> None:
    from cgdistill.data.download import download_dataset

    result = download_dataset(name, url=url, from_file=from_file, force=force)
    if result.status == "present":
        show(styled("Dataset [bold]{}[/] is already here: {} (pass --force to download it again).", name, result.path))
        return
    verb = {"downloaded": "Downloaded", "extracted": "Extracted", "generated": "Generated"}[result.status]
    source = "" if result.status == "generated" else f" from {result.source}"
    show(styled("{} dataset [bold]{}[/]{} into {}", verb, name, source, result.path))
    show(f"  {_split_counts(result.path)}")
    note(f"Next: cgdistill train-teacher --data {name}")


def _download_pretrained(
    name: str,
    from_file: Path | None,
    url: str | None,
    direction: str | None,
    force: bool,
    key: str | None,
    run_name: str | None,
) -> None:
    from cgdistill.official import download_pretrained
    from cgdistill.runs import reverse

    result = download_pretrained(
        name, run_name=run_name, from_file=from_file, url=url, direction=direction, force=force, key=key
    )
    dataset = f" of dataset {result.dataset}" if result.dataset else ""
    noun = "generator" if len(result.generators) == 1 else "generators"
    show(styled("Imported {} [bold]{}[/]{} as teacher run {}", noun, name, dataset, result.run))
    entry = result.entry
    decided = {"--direction": "", "its name": ", direction from its name", "default": ", direction assumed"}
    for generator in result.generators:
        mapping = generator.direction
        if entry is not None and entry.input_domain and entry.output_domain:
            domains = (entry.input_domain, entry.output_domain)
            reads, writes = domains if generator.direction == entry.direction else domains[::-1]
            mapping += f" ({reads} -> {writes})"
        origin = f"'{generator.network}', " if generator.network else ""
        show(f"  {mapping}: {origin}{generator.layout_title}{decided[generator.decided_by]}")
        for line in generator.notes:
            note(f"  note: {line}")
    show(f"  weights: {result.weights}")
    first = result.directions[0]
    if any(g.decided_by == "default" for g in result.generators):
        note(f"If it maps the other way, import it again with --direction {reverse(first)}.")
    note(
        f"Next: cgdistill translate IMAGE --model {result.run.name} --direction {first}, "
        f"or cgdistill distill --teacher {result.run.name} --direction {first}"
        + (f" --data {result.dataset}" if result.dataset else " --data NAME|PATH")
    )


def _split_counts(folder: Path) -> str:
    counts = []
    for split in ("trainA", "trainB", "testA", "testB"):
        sub = folder / split
        if sub.is_dir():
            counts.append(f"{split}: {sum(1 for f in sub.iterdir() if f.is_file())}")
    return ", ".join(counts)


def _print_lists() -> None:
    from cgdistill.data.download import downloads_dir, list_datasets
    from cgdistill.data.registry import DATASETS_URL, PRETRAINED

    table = Table(
        title=Text(f"Datasets in {paths.datasets_dir()}"),
        title_justify="left",
        caption=Text(f"`cgdistill download NAME` fetches {DATASETS_URL.format(name='NAME')}"),
        caption_justify="left",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("A")
    table.add_column("B")
    table.add_column("here", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("where", overflow="fold")
    for row in list_datasets():
        exists = row.path.exists()
        here = "[green]yes[/]" if row.present else ("[yellow]incomplete[/]" if exists else "no")
        if exists:
            where = str(row.path)
        else:
            where = {"generated locally": "generated locally", "manual (see docs)": "manual: see docs/datasets.md"}.get(
                row.source, ""
            )
        size = format_bytes(row.size_bytes) if exists else ""
        table.add_row(Text(row.name), Text(row.domain_a or ""), Text(row.domain_b or ""), here, size, Text(where))
    console.print(table)

    models = Table(title="Pretrained generators (cgdistill download --pretrained NAME)", title_justify="left")
    models.add_column("name", no_wrap=True)
    models.add_column("dataset", overflow="fold")
    models.add_column("direction", no_wrap=True)
    models.add_column("input -> output")
    models.add_column("imported", no_wrap=True)
    for entry in PRETRAINED.values():
        if paths.run_path(entry.name).is_dir():
            imported = "[green]yes[/]"
        elif (downloads_dir() / f"{entry.name}.pth").is_file():
            imported = "downloaded"
        else:
            imported = "no"
        mapping = f"{entry.input_domain} -> {entry.output_domain}"
        models.add_row(entry.name, entry.dataset, entry.direction, mapping, imported)
    console.print(models)
