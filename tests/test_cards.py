"""Catalog loading and card matching: pure logic on real files, no broker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from inference_agent.cards.catalog import CatalogError, CatalogSource, load_catalog, normalise
from inference_agent.cards.matcher import CardMatcher, OcrLine, read_hp, read_numbers

HEADER = "name,set,number,rarity,market_price"


def write(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def lines(*texts: str) -> list[OcrLine]:
    return [OcrLine(t, 0.99) for t in texts]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return write(
        tmp_path / "c.csv",
        "Emberwing,Emberfall,025/165,Rare,1.50",
        "Emberling,Emberfall,026/165,Common,0.10",
        "Emberwing,Stormreach,101/198,Holo Rare,6.00",
        "Flabébé,Tidal Court,007/102,Common,",
        "Tideclaw,Tidal Court,050/102,Uncommon,0.30",
    )


def test_catalog_reads_prices_metadata_and_unicode(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "Flabébé,Tidal Court,007/102,Common,$1.25,70,Jo Artist",
        header=f"{HEADER},hp,illustrator",
    )
    (card,) = load_catalog(path).cards
    assert card.name == "Flabébé" and card.market_price == 1.25
    assert card.metadata == {"hp": "70", "illustrator": "Jo Artist"}
    assert card.number_key == (7, 102) and card.key == "flabebe"


def test_catalog_with_a_bom_and_crlf_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(
        ("\ufeff" + HEADER + "\r\nTideclaw,Tidal Court,050/102,Common,0.3\r\n").encode()
    )
    assert load_catalog(path).cards[0].name == "Tideclaw"


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("name,set,number", ["a,b,1/2"], "lacks column(s) rarity, market_price"),
        (HEADER, [",Set,001/002,Common,1"], "line 2: name is empty"),
        (HEADER, ["A,Set,001/002,Common,cheap"], "market_price 'cheap' is not a number"),
        (HEADER, ["A,Set,001/002,Common,-1"], "is negative"),
        (HEADER, ["A,Set,001/002,Common,1,extra"], "more fields than the header"),
        (HEADER, [], "has no cards"),
    ],
)
def test_bad_catalogs_are_refused_with_the_place(
    tmp_path: Path, header: str, rows: list[str], message: str
) -> None:
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(write(tmp_path / "c.csv", *rows, header=header))


def test_duplicate_rows_keep_the_first_with_a_warning(tmp_path: Path) -> None:
    cat = load_catalog(
        write(
            tmp_path / "c.csv",
            "Emberwing,Emberfall,025/165,Rare,1.50",
            "Emberwing again,Emberfall,25/165,Rare,9.99",
        )
    )
    assert [c.name for c in cat.cards] == ["Emberwing"]
    assert "repeats line 2" in cat.warnings[0]


def test_missing_catalog_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "nope.csv")


def test_catalog_source_reloads_on_change_and_keeps_the_old_one_on_error(
    catalog: Path,
) -> None:
    source = CatalogSource(catalog, check_every=0)
    assert len(source.get()) == 5
    write(catalog, "Only,One,001/001,Common,1")
    os.utime(catalog, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert [c.name for c in source.get().cards] == ["Only"] and source.loads == 2
    catalog.write_text("not,a,catalog\n")
    os.utime(catalog, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert [c.name for c in source.get().cards] == ["Only"]  # previous one kept
    assert source.error is not None and "lacks column" in source.error


def test_parsing_numbers_and_hp_tolerates_ocr_confusions() -> None:
    assert read_numbers(lines("O25/l65", "junk", "7 / 102")) == [(25, 165), (7, 102)]
    assert read_hp(lines("Emberwing", "HP 120")) == 120
    assert read_hp(lines("120HP")) == 120
    assert read_hp(lines("Attack 40")) is None
    assert normalise("Flabébé  EX!") == "flabebeex"


def test_clear_name_and_number_is_identified(catalog: Path) -> None:
    m = CardMatcher().match(
        load_catalog(catalog), lines("Emberwing", "HP 90", "Emberfall", "025/165")
    )
    assert m.status == "identified" and m.best is not None
    assert (m.best.card.name, m.best.card.set_name) == ("Emberwing", "Emberfall")
    assert m.best.confidence >= 0.85


def test_the_printed_number_picks_between_reprints(catalog: Path) -> None:
    m = CardMatcher().match(load_catalog(catalog), lines("Emberwing", "101/198"))
    assert m.status == "identified" and m.best is not None
    assert m.best.card.set_name == "Stormreach"


def test_unreadable_number_means_review_not_a_guess(catalog: Path) -> None:
    m = CardMatcher().match(load_catalog(catalog), lines("Emberwing", "Emberfall"))
    assert m.status == "needs_review"
    assert m.candidates[0].card.set_name == "Emberfall"  # the set name it read comes first
    assert ("Emberwing", "Stormreach") in {(c.card.name, c.card.set_name) for c in m.candidates}


def test_name_and_number_disagreeing_means_review(catalog: Path) -> None:
    # the number of Emberling, the name of Emberwing: never pick one silently
    m = CardMatcher().match(load_catalog(catalog), lines("Emberwing", "026/165"))
    assert m.status == "needs_review"


def test_unicode_names_match_what_ocr_reads(catalog: Path) -> None:
    m = CardMatcher().match(load_catalog(catalog), lines("Flabebe", "007/102"))
    assert m.status == "identified" and m.best is not None and m.best.card.name == "Flabébé"


def test_a_card_not_in_the_catalog_is_unknown(catalog: Path) -> None:
    m = CardMatcher().match(load_catalog(catalog), lines("Quazorvix", "HP 60", "133/200"))
    assert m.status == "unknown" and m.best is None


def test_threshold_is_configurable(catalog: Path) -> None:
    text = lines("Emberwlng", "025/165")  # one letter misread
    assert CardMatcher().match(load_catalog(catalog), text).status == "identified"
    strict = CardMatcher(threshold=0.99).match(load_catalog(catalog), text)
    assert strict.status == "needs_review"
