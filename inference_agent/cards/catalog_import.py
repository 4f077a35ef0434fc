"""Import published card data into the catalog CSV framewire matches against, and describe
a catalog: rows, sets, number formats, and every row left out with the reason.

Rows are streamed: read, checked and written one at a time, so a dump of tens of thousands
of cards never sits in memory whole. The CSV is written next to its final name and renamed
into place at the end, so an agent watching the catalog never loads half of one.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from framewire.inference_agent.cards.catalog import REQUIRED, printing_key
from framewire.inference_agent.cards.catalog_formats import (
    CatalogImportError,
    Item,
    Skip,
    SourceFormat,
    SourceRow,
    open_source,
    price_text,
)
from framewire.inference_agent.cards.names import clean_name
from framewire.inference_agent.cards.numbers import MAX_NUMBER_CHARS, number_shape, parse_number

MAX_NAME_CHARS = 200
EXAMPLES = 5  # skipped rows kept per reason, to show; the rest are counted
PROGRESS_EVERY = 1000


@dataclass
class CatalogReport:
    source: Path
    format: SourceFormat
    rows: int = 0
    sets: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)  # number formats: `N/N`, `A-AN`
    shape_examples: dict[str, str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)  # by reason
    skip_examples: dict[str, list[Skip]] = field(default_factory=dict)
    out: Path | None = None

    def skip(self, item: Skip) -> None:
        self.skipped[item.kind] += 1
        examples = self.skip_examples.setdefault(item.kind, [])
        if len(examples) < EXAMPLES:
            examples.append(item)

    def count(self, set_name: str, number: str) -> None:
        self.rows += 1
        self.sets[set_name] += 1
        shape = number_shape(number)
        self.shapes[shape] += 1
        self.shape_examples.setdefault(shape, number)


@dataclass(frozen=True, slots=True)
class _Admitted:
    row: SourceRow
    name: str
    set_name: str
    number: str


def import_catalog(
    source: Path,
    fmt: SourceFormat,
    out: Path | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> CatalogReport:
    """Read `source` as `fmt`; with `out`, write the catalog CSV there. `progress` is called
    with the number of records read so far, now and then."""
    if out is not None and out.resolve() == source.resolve():
        raise CatalogImportError(f"{out} is the file being imported; write somewhere else")
    reading = open_source(source, fmt)
    report = CatalogReport(source=source, format=fmt)
    seen: dict[tuple[str, str, str], tuple[str, str]] = {}  # printing -> (where, name)
    writer = _CatalogWriter(out, reading.columns) if out is not None else None
    try:
        for n, item in enumerate(reading.items, start=1):
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress(n)
            admitted = _admit(item, seen, report)
            if admitted is not None and writer is not None:
                writer.write(admitted)
        if writer is not None:
            if not report.rows:
                raise CatalogImportError(f"{source} has no card to import as {fmt}")
            writer.commit()
            report.out = out
    finally:
        if writer is not None:
            writer.abort()
    return report


def _admit(
    item: Item, seen: dict[tuple[str, str, str], tuple[str, str]], report: CatalogReport
) -> _Admitted | None:
    if isinstance(item, Skip):
        report.skip(item)
        return None
    name, set_name, number = clean_name(item.name), clean_name(item.set_name), item.number.strip()
    problem: tuple[str, str] | None = None
    if not name:
        problem = ("no name", f"{set_name} {number}".strip())
    elif len(name) > MAX_NAME_CHARS or len(set_name) > MAX_NAME_CHARS:
        problem = ("name too long", f"over {MAX_NAME_CHARS} characters")
    elif not number:
        problem = ("no number", f"{name!r} ({set_name})")
    elif len(number) > MAX_NUMBER_CHARS:
        problem = ("number too long", f"{name!r}: over {MAX_NUMBER_CHARS} characters")
    if problem is not None:
        report.skip(Skip(item.where, *problem))
        return None
    parsed = parse_number(number)
    if parsed is None:
        report.skip(Skip(item.where, "number without a digit", f"{name!r} number {number!r}"))
        return None
    key = printing_key(name, set_name, number, item.rarity, parsed)
    if key in seen:
        first, first_name = seen[key]
        also = "" if first_name == name else f" ({first_name!r})"
        detail = f"{name!r} {set_name} {number} {item.rarity}".rstrip()
        report.skip(Skip(item.where, "duplicate printing", f"{detail}: as {first}{also}"))
        return None
    seen[key] = (item.where, name)
    report.count(set_name, number)
    return _Admitted(item, name, set_name, number)


class _CatalogWriter:
    def __init__(self, out: Path, columns: tuple[str, ...]) -> None:
        self.out = out
        self.columns = columns
        self.part = out.with_name(f".{out.name}.part")
        try:
            self.handle = self.part.open("w", newline="", encoding="utf-8")
        except OSError as err:
            raise CatalogImportError(f"cannot write {self.part}: {err.strerror}") from None
        self.csv = csv.writer(self.handle)
        self.csv.writerow([*REQUIRED, *columns])

    def write(self, card: _Admitted) -> None:
        row = card.row
        self.csv.writerow(
            [card.name, card.set_name, card.number, row.rarity.strip()]
            + [price_text(row.market_price)]
            + [row.metadata.get(c, "") for c in self.columns]
        )

    def commit(self) -> None:
        self.handle.close()
        try:
            self.part.replace(self.out)
        except OSError as err:
            raise CatalogImportError(f"cannot write {self.out}: {err.strerror}") from None

    def abort(self) -> None:
        """Drop the partial file, if it is still there (after a commit it is not)."""
        self.handle.close()
        self.part.unlink(missing_ok=True)
