"""`framewire catalog`: build the catalog CSV framewire matches against from published card
data (a file already downloaded: nothing is fetched), and describe a catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from framewire.inference_agent.cards.catalog_formats import SourceFormat
from framewire.inference_agent.cards.catalog_import import CatalogReport

catalog_app = typer.Typer(
    help="Card catalogs: import published card data, describe a catalog.",
    no_args_is_help=True,
)

_SHOWN = 12  # rows of each table; the rest are counted

SourceArgument = Annotated[
    Path,
    typer.Argument(
        help="The card data file: a JSON download or a catalog CSV.",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]
_FORMATS = (
    "pokemontcg (Pokémon TCG API v2 cards), tcgdex (TCGdex cards), scryfall (Scryfall bulk "
    "data), ygoprodeck (YGOPRODeck cardinfo), csv (a framewire catalog)"
)


@catalog_app.command("import")
def import_command(
    source: SourceArgument,
    fmt: Annotated[
        SourceFormat, typer.Option("--format", "-f", help=f"What SOURCE is: {_FORMATS}.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The catalog CSV to write.", dir_okay=False)
    ] = Path("catalog.csv"),
) -> None:
    """Write the catalog CSV framewire matches against from published card data.

    One row per printing, the number as the card prints it, prices and ids kept as extra
    columns. Rows that cannot be used are left out and listed with the reason. Nothing is
    downloaded. Exits 2 if SOURCE cannot be read as FORMAT.
    """
    from framewire.cli_common import console

    report = _run(source, fmt, out)
    _print_report(report)
    console.print(f"wrote {report.rows} cards to {out}", soft_wrap=True)


@catalog_app.command("stats")
def stats_command(
    source: SourceArgument,
    fmt: Annotated[
        SourceFormat, typer.Option("--format", "-f", help=f"What SOURCE is: {_FORMATS}.")
    ] = SourceFormat.csv,
) -> None:
    """Describe a catalog or a card data file: rows, sets, number formats, skipped rows.

    Every row that would be left out is counted with the reason. For a catalog CSV, also
    says whether framewire loads it (exit 2 if it would not).
    """
    from framewire.cli_common import EXIT_CONFIG, console, err
    from framewire.inference_agent.cards.catalog import CatalogError, load_catalog

    report = _run(source, fmt, None)
    _print_report(report)
    if fmt is SourceFormat.csv:
        try:
            catalog = load_catalog(source)
        except CatalogError as exc:
            err.print(f"[red]framewire would not load this catalog: {exc}[/]")
            raise typer.Exit(EXIT_CONFIG) from None
        console.print(f"framewire loads this catalog: {len(catalog)} cards", soft_wrap=True)


def _run(source: Path, fmt: SourceFormat, out: Path | None) -> CatalogReport:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from framewire.cli_common import EXIT_CONFIG, err
    from framewire.inference_agent.cards.catalog import CatalogError
    from framewire.inference_agent.cards.catalog_import import import_catalog

    columns = (SpinnerColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"reading {source.name}", total=None)

        def advance(records: int) -> None:
            progress.update(task, description=f"reading {source.name}: {records} records")

        try:
            return import_catalog(source, fmt, out, progress=advance)
        except CatalogError as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(EXIT_CONFIG) from None


def _print_report(report: CatalogReport) -> None:
    from framewire.cli_common import console

    console.print(
        f"{report.source.name} ({report.format}): {report.rows} cards in "
        f"{len(report.sets)} sets, {report.skipped.total()} skipped",
        soft_wrap=True,
    )
    formats = Table("number format", "cards", "example", title="Number formats")
    for shape, count in report.shapes.most_common(_SHOWN):
        formats.add_row(shape, str(count), report.shape_examples[shape])
    _more(formats, len(report.shapes), "formats")
    console.print(formats)
    sets = Table("set", "cards", title="Largest sets")
    for name, count in report.sets.most_common(_SHOWN):
        sets.add_row(name or "(no set)", str(count))
    _more(sets, len(report.sets), "sets")
    console.print(sets)
    if not report.skipped:
        console.print("nothing skipped")
        return
    skipped = Table("skipped because", "rows", "for example", title="Skipped")
    for kind, count in report.skipped.most_common():
        examples = "\n".join(
            f"{s.where}: {s.detail}" if s.detail else s.where for s in report.skip_examples[kind]
        )
        skipped.add_row(kind, str(count), examples)
    console.print(skipped)


def _more(table: Table, count: int, what: str) -> None:
    if count > _SHOWN:
        table.add_row(f"... {count - _SHOWN} more {what}", "", *([""] * (len(table.columns) - 2)))
