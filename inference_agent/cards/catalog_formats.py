"""Published card data read as catalog rows: the Pokémon TCG API, TCGdex, Scryfall,
YGOPRODeck, and framewire's own catalog CSV. No network: each reads a file already
downloaded, one record at a time.

Each printing becomes one row with the number as the card prints it: the Pokémon formats
keep the number without its set total, so a plain number gets the set's printed total
(`4` in a set of 102 -> `4/102`; promos print none), while `TG05`, `SWSH050` or `24a` stay
as they are (matching takes `TG05` for `TG05/TG30`). Prices and ids become metadata
columns. So is the set code a card prints (Scryfall's `set`: `m10`; for Yu-Gi-Oh! the code
that opens the number: `LOB` of `LOB-EN001`), which tells apart one name under one number
in several sets.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from framewire.inference_agent.cards.catalog import REQUIRED, CatalogError
from framewire.inference_agent.cards.json_stream import JsonStreamError, iter_records


class SourceFormat(StrEnum):
    pokemontcg = "pokemontcg"
    tcgdex = "tcgdex"
    scryfall = "scryfall"
    ygoprodeck = "ygoprodeck"
    csv = "csv"


class CatalogImportError(CatalogError):
    """The source file cannot be read as the format named; the message says where."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    where: str  # `record 12 (base1-4)`, `line 7`: for messages
    name: str
    set_name: str
    number: str
    rarity: str
    market_price: float | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Skip:
    where: str
    kind: str  # short, for counting: `no number`, `digital-only`, ...
    detail: str = ""


Item = SourceRow | Skip
_Reader = Callable[[dict[str, object], str], Iterator[Item]]


@dataclass(frozen=True)
class Source:
    columns: tuple[str, ...]  # the metadata columns, in the order they are written
    items: Iterator[Item]


_POKEMON_PRICES = (
    "price_currency",
    "tcgplayer_normal",
    "tcgplayer_holofoil",
    "tcgplayer_reverse_holofoil",
    "tcgplayer_unlimited",
    "tcgplayer_unlimited_holofoil",
    "tcgplayer_1st_edition",
    "tcgplayer_1st_edition_holofoil",
    "cardmarket_trend",
    "cardmarket_avg",
)
_POKEMONTCG_VARIANTS = {
    "normal": "tcgplayer_normal",
    "holofoil": "tcgplayer_holofoil",
    "reverseHolofoil": "tcgplayer_reverse_holofoil",
    "unlimited": "tcgplayer_unlimited",
    "unlimitedHolofoil": "tcgplayer_unlimited_holofoil",
    "1stEdition": "tcgplayer_1st_edition",
    "1stEditionNormal": "tcgplayer_1st_edition",
    "1stEditionHolofoil": "tcgplayer_1st_edition_holofoil",
}
_TCGDEX_VARIANTS = {
    "normal": "tcgplayer_normal",
    "holofoil": "tcgplayer_holofoil",
    "holoFoil": "tcgplayer_holofoil",
    "reverse-holofoil": "tcgplayer_reverse_holofoil",
    "unlimited": "tcgplayer_unlimited",
    "unlimited-holofoil": "tcgplayer_unlimited_holofoil",
    "1st-edition": "tcgplayer_1st_edition",
    "1st-edition-holofoil": "tcgplayer_1st_edition_holofoil",
}
_SCRYFALL_IDS = ("id", "set_code", "lang", "layout", "full_name", "tcgplayer_id", "cardmarket_id")
_SCRYFALL_PRICES = ("usd", "usd_foil", "usd_etched", "eur", "eur_foil", "tix")
_YGOPRODECK_COLUMNS = (
    "id",
    "type",
    "set_code",
    "set_rarity_code",
    "price_currency",
    "tcgplayer_price",
    "cardmarket_price",
)


def open_source(path: Path, fmt: SourceFormat) -> Source:
    if fmt is SourceFormat.csv:
        return _csv(path)
    readers: dict[SourceFormat, tuple[tuple[str, ...], _Reader]] = {
        SourceFormat.pokemontcg: (("id", "set_id", "series", "hp", *_POKEMON_PRICES), _pokemontcg),
        SourceFormat.tcgdex: (("id", "set_id", "local_id", "hp", *_POKEMON_PRICES), _tcgdex),
        SourceFormat.scryfall: (
            (*_SCRYFALL_IDS, "price_currency", *_SCRYFALL_PRICES),
            _scryfall,
        ),
        SourceFormat.ygoprodeck: (
            _YGOPRODECK_COLUMNS,
            _ygoprodeck,
        ),
    }
    columns, read = readers[fmt]
    return Source(columns, _json_items(path, read))


def _json_items(path: Path, read: _Reader) -> Iterator[Item]:
    try:
        for n, record in enumerate(iter_records(path), start=1):
            if not isinstance(record, dict):
                yield Skip(f"record {n}", "not a card object", type(record).__name__)
                continue
            ident = _text(record.get("id"))
            yield from read(record, f"record {n}" + (f" ({ident})" if ident else ""))
    except JsonStreamError as err:
        raise CatalogImportError(str(err)) from None


def _pokemontcg(card: dict[str, object], where: str) -> Iterator[Item]:
    """A Pokémon TCG API v2 card, its set embedded: `number` is `4`, `TG05`, `SWSH050`."""
    card_set = _obj(card.get("set"))
    set_name = _text(card_set.get("name"))
    tcgplayer = _obj(_obj(card.get("tcgplayer")).get("prices"))
    by_variant = {
        column: _price(_obj(tcgplayer.get(variant)).get("market"))
        for variant, column in _POKEMONTCG_VARIANTS.items()
        if variant in tcgplayer
    }
    cardmarket = _obj(_obj(card.get("cardmarket")).get("prices"))
    price, prices = _pokemon_prices(
        by_variant, _price(cardmarket.get("trendPrice")), _price(cardmarket.get("averageSellPrice"))
    )
    yield SourceRow(
        where=where,
        name=_text(card.get("name")),
        set_name=set_name,
        number=_with_total(
            _text(card.get("number")), _text(card_set.get("printedTotal")), set_name
        ),
        rarity=_text(card.get("rarity")),
        market_price=price,
        metadata={
            "id": _text(card.get("id")),
            "set_id": _text(card_set.get("id")),
            "series": _text(card_set.get("series")),
            "hp": _text(card.get("hp")),
            **prices,
        },
    )


def _tcgdex(card: dict[str, object], where: str) -> Iterator[Item]:
    """A TCGdex card: `localId` `001`, `TG05` (inside the main set), `24a`; set ids `sv03.5`."""
    card_set = _obj(card.get("set"))
    set_name = _text(card_set.get("name"))
    official = _text(_obj(card_set.get("cardCount")).get("official"))
    local_id = _text(card.get("localId"))
    pricing = _obj(card.get("pricing"))
    tcgplayer = _obj(pricing.get("tcgplayer"))
    by_variant: dict[str, float | None] = {}
    for variant, column in _TCGDEX_VARIANTS.items():
        if variant in tcgplayer:
            by_variant[column] = _price(_obj(tcgplayer.get(variant)).get("marketPrice"))
    cardmarket = _obj(pricing.get("cardmarket"))
    price, prices = _pokemon_prices(
        by_variant, _price(cardmarket.get("trend")), _price(cardmarket.get("avg"))
    )
    yield SourceRow(
        where=where,
        name=_text(card.get("name")),
        set_name=set_name,
        number=_with_total(local_id, official, set_name),
        rarity=_text(card.get("rarity")),
        market_price=price,
        metadata={
            "id": _text(card.get("id")),
            "set_id": _text(card_set.get("id")),
            "local_id": local_id,
            "hp": _text(card.get("hp")),
            **prices,
        },
    )


def _scryfall(card: dict[str, object], where: str) -> Iterator[Item]:
    """A Scryfall card object (bulk data): `collector_number` `169`, `169z`, `PLC-30`, `1★`."""
    kind = _text(card.get("object")) or "card"
    if kind != "card":
        yield Skip(where, "not a card object", kind)
        return
    name = _text(card.get("name"))
    if card.get("digital") is True:
        yield Skip(where, "digital-only", f"{name!r} is only on MTG Arena/Online")
        return
    full_name = ""
    faces = card.get("card_faces")
    if isinstance(faces, list) and faces and " // " in name:
        # a two-faced card shows one face's name, the front's (a split card shows both)
        full_name, name = name, _text(_obj(faces[0]).get("name")) or name
    prices = _obj(card.get("prices"))
    values = {key: _price(prices.get(key)) for key in _SCRYFALL_PRICES}
    usd = values["usd"] or values["usd_foil"] or values["usd_etched"]
    eur = values["eur"] or values["eur_foil"]
    rarity = _text(card.get("rarity"))
    yield SourceRow(
        where=where,
        name=name,
        set_name=_text(card.get("set_name")),
        number=_text(card.get("collector_number")),
        rarity=rarity[:1].upper() + rarity[1:],
        market_price=usd or eur,
        metadata={
            "id": _text(card.get("id")),
            "set_code": _text(card.get("set")),
            "lang": _text(card.get("lang")),
            "layout": _text(card.get("layout")),
            "full_name": full_name,
            "tcgplayer_id": _text(card.get("tcgplayer_id")),
            "cardmarket_id": _text(card.get("cardmarket_id")),
            "price_currency": "USD" if usd else "EUR" if eur else "",
            **{key: price_text(value) for key, value in values.items()},
        },
    )


def _ygoprodeck(card: dict[str, object], where: str) -> Iterator[Item]:
    """A YGOPRODeck card: one row per printing in `card_sets` (`LOB-EN001`, `MP20-EN126`)."""
    name = _text(card.get("name"))
    printings = card.get("card_sets")
    if not isinstance(printings, list) or not printings:
        yield Skip(where, "no printings", f"{name!r} has no card_sets")
        return
    prices = card.get("card_prices")
    card_prices = _obj(prices[0]) if isinstance(prices, list) and prices else {}
    for k, entry in enumerate(printings, start=1):
        printing = _obj(entry)
        price = _price(printing.get("set_price"))
        number = _text(printing.get("set_code"))
        yield SourceRow(
            where=f"{where} printing {k}",
            name=name,
            set_name=_text(printing.get("set_name")),
            number=number,
            rarity=_text(printing.get("set_rarity")),
            market_price=price,
            metadata={
                "id": _text(card.get("id")),
                "type": _text(card.get("type")),
                "set_code": number.partition("-")[0] if "-" in number else "",
                "set_rarity_code": _text(printing.get("set_rarity_code")),
                "price_currency": "USD" if price is not None else "",
                "tcgplayer_price": price_text(_price(card_prices.get("tcgplayer_price"))),
                "cardmarket_price": price_text(_price(card_prices.get("cardmarket_price"))),
            },
        )


def _csv(path: Path) -> Source:
    """framewire's own catalog CSV (`name,set,number,rarity,market_price`, + metadata)."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise CatalogImportError(f"cannot read {path}: {err.strerror}") from None
    reader = csv.DictReader(handle)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except (csv.Error, UnicodeDecodeError) as err:
        handle.close()
        raise CatalogImportError(f"{path} is not valid UTF-8 CSV: {err}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        handle.close()
        raise CatalogImportError(
            f"{path} lacks column(s) {', '.join(missing)}; "
            f"the header must include {','.join(REQUIRED)}"
        )
    reader.fieldnames = header
    columns = tuple(dict.fromkeys(h for h in header if h and h not in REQUIRED))
    return Source(columns, _csv_rows(path, handle, reader))


def _csv_rows(path: Path, handle: TextIO, reader: csv.DictReader[str]) -> Iterator[Item]:
    with handle:
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                where = f"line {line}"
                if None in row:
                    yield Skip(where, "more fields than the header has")
                    continue
                values = {k: (v or "").strip() for k, v in row.items()}
                price, bad = _csv_price(values["market_price"])
                if bad:
                    yield Skip(where, "bad price", f"market_price {values['market_price']!r}")
                    continue
                yield SourceRow(
                    where=where,
                    name=values["name"],
                    set_name=values["set"],
                    number=values["number"],
                    rarity=values["rarity"],
                    market_price=price,
                    metadata={k: v for k, v in values.items() if k not in REQUIRED and k},
                )
        except (csv.Error, UnicodeDecodeError) as err:
            raise CatalogImportError(
                f"{path} after line {line}: not valid UTF-8 CSV: {err}"
            ) from None


def _csv_price(text: str) -> tuple[float | None, bool]:
    """As the catalog loader reads it: `$1.25` is 1.25, empty is none; (price, bad)."""
    text = text.lstrip("$€£").replace(",", "")
    if not text:
        return None, False
    try:
        price = float(text)
    except ValueError:
        return None, True
    return (price, False) if math.isfinite(price) and price >= 0 else (None, True)


def _with_total(number: str, total: str, set_name: str) -> str:
    """The number as a Pokémon card prints it: `4` + 102 -> `4/102`; others as they are."""
    plain = number.isascii() and number.isdigit() and total.isdigit() and int(total) > 0
    if plain and "promo" not in set_name.casefold():  # black-star promos print no set total
        return f"{number}/{int(total)}"
    return number


def _pokemon_prices(
    by_variant: dict[str, float | None], trend: float | None, average: float | None
) -> tuple[float | None, dict[str, str]]:
    """The market price (TCGplayer's, USD, of the first variant there is; else Cardmarket's
    trend, EUR) and every price as metadata."""
    metadata = {column: price_text(value) for column, value in by_variant.items()}
    metadata |= {"cardmarket_trend": price_text(trend), "cardmarket_avg": price_text(average)}
    for column in _POKEMON_PRICES[1:-2]:
        value = by_variant.get(column)
        if value is not None:
            return value, metadata | {"price_currency": "USD"}
    euros = trend if trend is not None else average
    return euros, metadata | {"price_currency": "EUR" if euros is not None else ""}


def _obj(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    return ""


def _price(value: object) -> float | None:
    """A price from a number or a numeric string; none for 0, negative, NaN or junk."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def price_text(value: float | None) -> str:
    """A price as the catalog CSV writes it: `1.25`; a fraction of a cent as it is."""
    return "" if value is None else f"{value:.2f}" if value >= 0.01 else str(value)
