"""The card catalog: a CSV file `name,set,number,rarity,market_price` (+ any extra columns,
kept as metadata), loaded, validated and indexed for matching; reloaded when it changes.

Numbers are kept as the card prints them (`025/165`, `TG05/TG30`, `LOB-EN001`, `169z`) and
indexed by their loose key (see `numbers`), names by their normalised form.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from framewire.inference_agent.cards.names import clean_name
from framewire.inference_agent.cards.names import normalise as normalise
from framewire.inference_agent.cards.numbers import CardNumber, parse_number

logger = logging.getLogger(__name__)

REQUIRED = ("name", "set", "number", "rarity", "market_price")
_LOGGED_WARNINGS = 20  # the rest are counted: a big catalog may repeat thousands of rows


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the file, line and column."""


def printing_key(
    name: str, set_name: str, number: str, rarity: str, parsed: CardNumber | None = None
) -> tuple[str, str, str]:
    """What makes two rows the same printing: set, number (as compared) and rarity.

    Rarity counts because some sets print one number in several rarities (Yu-Gi-Oh's
    `RA01-EN001` as Super, Ultra and Secret Rare); a number with no digit falls back to the
    name, so such rows are not all one printing.
    """
    parsed = parsed or parse_number(number)
    ident = parsed.key if parsed else f"{normalise(number)}:{normalise(name)}"
    return (normalise(set_name), ident, normalise(rarity))


@dataclass(frozen=True)
class CatalogCard:
    name: str
    set_name: str
    number: str  # as printed
    rarity: str
    market_price: float | None
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    key: str = ""  # normalised name
    set_key: str = ""
    parsed_number: CardNumber | None = None  # None: no digit to match, never identified


NumberBucket = dict[CardNumber, list[CatalogCard]]  # distinct numbers: each is checked once


@dataclass
class Catalog:
    path: Path | None
    cards: list[CatalogCard]
    warnings: list[str] = field(default_factory=list)
    # numbers without a set total (`TG05`, `LOB-EN001`, `169`), by loose key
    by_number: dict[str, NumberBucket] = field(default_factory=dict)
    # numbers with one (`025/165`), by the loose keys of both parts
    by_number_total: dict[tuple[str, str], NumberBucket] = field(default_factory=dict)
    by_name: dict[str, list[CatalogCard]] = field(default_factory=dict)  # by normalised name
    names: list[str] = field(default_factory=list)  # the keys of by_name, for fuzzy search
    set_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for card in self.cards:
            number = card.parsed_number
            if number is not None:
                bucket = (
                    self.by_number.setdefault(number.loose, {})
                    if number.total_loose is None
                    else self.by_number_total.setdefault((number.loose, number.total_loose), {})
                )
                bucket.setdefault(number, []).append(card)
            self.by_name.setdefault(card.key, []).append(card)
        self.names = list(self.by_name)
        self.set_keys = sorted({c.set_key for c in self.cards if c.set_key})

    def __len__(self) -> int:
        return len(self.cards)


def make_card(
    name: str,
    set_name: str,
    number: str,
    rarity: str,
    market_price: float | None,
    metadata: dict[str, str] | None = None,
) -> CatalogCard:
    name, set_name = clean_name(name), clean_name(set_name)
    return CatalogCard(
        name=name,
        set_name=set_name,
        number=number.strip(),
        rarity=rarity.strip(),
        market_price=market_price,
        metadata=metadata or {},
        key=normalise(name),
        set_key=normalise(set_name),
        parsed_number=parse_number(number),
    )


def _price(value: str, where: str) -> float | None:
    value = value.strip().lstrip("$€£").replace(",", "")
    if not value:
        return None
    try:
        price = float(value)
    except ValueError:
        raise CatalogError(f"{where}: market_price {value!r} is not a number") from None
    if price < 0:
        raise CatalogError(f"{where}: market_price {value!r} is negative")
    return price


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog CSV. Rows with the same set and number are kept once
    (the first), with a warning; a row with no name is an error."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise CatalogError(f"cannot read catalog {path}: {err.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:  # the header is read here, and may be no better than the rows
            header = [h.strip() for h in (reader.fieldnames or [])]
        except (csv.Error, UnicodeDecodeError) as err:
            raise CatalogError(f"catalog {path} is not valid UTF-8 CSV: {err}") from None
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CatalogError(
                f"catalog {path} lacks column(s) {', '.join(missing)}; "
                f"the header must include {','.join(REQUIRED)}"
            )
        reader.fieldnames = header
        cards: list[CatalogCard] = []
        warnings: list[str] = []
        seen: dict[tuple[str, str, str], int] = {}
        try:
            rows = list(enumerate(reader, start=2))
        except (csv.Error, UnicodeDecodeError) as err:
            raise CatalogError(f"catalog {path} is not valid UTF-8 CSV: {err}") from None
    for line, row in rows:
        where = f"{path.name} line {line}"
        if None in row:
            raise CatalogError(f"{where}: more fields than the header has")
        values = {k: (v or "").strip() for k, v in row.items()}
        if not values["name"]:
            raise CatalogError(f"{where}: name is empty")
        extra = {k: v for k, v in values.items() if k not in REQUIRED and k}
        card = make_card(
            values["name"],
            values["set"],
            values["number"],
            values["rarity"],
            _price(values["market_price"], where),
            extra,
        )
        ident = printing_key(card.name, card.set_name, card.number, card.rarity, card.parsed_number)
        if ident in seen:
            warnings.append(
                f"{where}: {card.name!r} {card.set_name} {card.number} repeats line "
                f"{seen[ident]}; kept the first"
            )
            continue
        seen[ident] = line
        cards.append(card)
    if not cards:
        raise CatalogError(f"catalog {path} has no cards")
    for w in warnings[:_LOGGED_WARNINGS]:
        logger.warning("catalog: %s", w)
    if len(warnings) > _LOGGED_WARNINGS:
        logger.warning("catalog: %d more repeated rows", len(warnings) - _LOGGED_WARNINGS)
    return Catalog(path=path, cards=cards, warnings=warnings)


class CatalogSource:
    """The current catalog, reloaded when its file changes (checked at most once a second).

    A file that fails to load leaves the previous catalog in use, and the error is kept in
    `error` for the status message.
    """

    def __init__(self, path: Path, *, check_every: float = 1.0) -> None:
        self.path = path
        self.check_every = check_every
        self.error: str | None = None
        self.loads = 0
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._catalog = load_catalog(path)
        self.loads = 1
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> Catalog:
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self.reload(stamp)
        return self._catalog

    def reload(self, stamp: tuple[int, int] | None = None) -> Catalog:
        with self._lock:
            stamp = stamp or self._stat()
            try:
                catalog = load_catalog(self.path)
            except CatalogError as err:
                self.error = str(err)
                self._stamp = stamp
                logger.error("catalog not reloaded, keeping the previous one: %s", err)
                return self._catalog
            self._catalog, self._stamp, self.error = catalog, stamp, None
            self.loads += 1
            logger.info("catalog reloaded: %d cards from %s", len(catalog), self.path)
            return catalog
