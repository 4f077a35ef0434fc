"""The card catalog: a CSV file `name,set,number,rarity,market_price` (+ any extra columns,
kept as metadata), loaded, validated and indexed for matching; reloaded when it changes."""

from __future__ import annotations

import csv
import logging
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIRED = ("name", "set", "number", "rarity", "market_price")
_NUMBER_RE = re.compile(r"^\s*([0-9]{1,4})\s*/\s*([0-9]{1,4})\s*$")


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the file, line and column."""


def normalise(text: str) -> str:
    """Compare text the way OCR reads it: accents off, case folded, only letters and digits."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in plain.casefold() if c.isalnum())


def parse_number(text: str) -> tuple[int, int] | None:
    """'025/165' -> (25, 165); None for anything else."""
    m = _NUMBER_RE.match(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class CatalogCard:
    name: str
    set_name: str
    number: str
    rarity: str
    market_price: float | None
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    key: str = ""  # normalised name
    set_key: str = ""
    number_key: tuple[int, int] | None = None


@dataclass
class Catalog:
    path: Path | None
    cards: list[CatalogCard]
    warnings: list[str] = field(default_factory=list)
    by_number: dict[tuple[int, int], list[CatalogCard]] = field(default_factory=dict)
    set_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for card in self.cards:
            if card.number_key is not None:
                self.by_number.setdefault(card.number_key, []).append(card)
        self.set_keys = sorted({c.set_key for c in self.cards if c.set_key})

    def __len__(self) -> int:
        return len(self.cards)


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
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CatalogError(
                f"catalog {path} lacks column(s) {', '.join(missing)}; "
                f"the header must include {','.join(REQUIRED)}"
            )
        reader.fieldnames = header
        cards: list[CatalogCard] = []
        warnings: list[str] = []
        seen: dict[tuple[str, str], int] = {}
        try:
            rows = list(enumerate(reader, start=2))
        except (csv.Error, UnicodeDecodeError) as err:
            raise CatalogError(f"catalog {path} is not valid UTF-8 CSV: {err}") from None
    for line, row in rows:
        where = f"{path.name} line {line}"
        if None in row:
            raise CatalogError(f"{where}: more fields than the header has")
        values = {k: (v or "").strip() for k, v in row.items()}
        name = unicodedata.normalize("NFC", values["name"])
        if not name:
            raise CatalogError(f"{where}: name is empty")
        set_name = unicodedata.normalize("NFC", values["set"])
        number = values["number"]
        ident = (normalise(set_name), number.lstrip("0"))
        if ident in seen:
            warnings.append(
                f"{where}: {name!r} {set_name} {number} repeats line {seen[ident]}; kept the first"
            )
            continue
        seen[ident] = line
        extra = {k: v for k, v in values.items() if k not in REQUIRED and k}
        cards.append(
            CatalogCard(
                name=name,
                set_name=set_name,
                number=number,
                rarity=values["rarity"],
                market_price=_price(values["market_price"], where),
                metadata=extra,
                key=normalise(name),
                set_key=normalise(set_name),
                number_key=parse_number(number),
            )
        )
    if not cards:
        raise CatalogError(f"catalog {path} has no cards")
    for w in warnings:
        logger.warning("catalog: %s", w)
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
