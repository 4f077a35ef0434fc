"""Catalog loading, card numbers and matching: pure logic on real files, no broker."""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
from pathlib import Path

import pytest

from framewire.inference_agent.cards.catalog import (
    Catalog,
    CatalogError,
    CatalogSource,
    load_catalog,
)
from framewire.inference_agent.cards.matcher import (
    CardMatcher,
    Match,
    OcrLine,
    read_hp,
    read_numbers,
)
from framewire.inference_agent.cards.names import normalise
from framewire.inference_agent.cards.numbers import (
    Fit,
    fit,
    number_shape,
    parse_number,
    read_number,
)
from framewire.inference_agent.cards.recognizer import to_recognition
from framewire.inference_agent.cards.set_codes import read_codes
from framewire.samples import CardSpec
from framewire.samples_catalog import TRAITS, by_trait, hard_catalog, hard_stranger, write_catalog

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
    assert card.number == "007/102" and card.key == "flabebe"
    assert card.parsed_number is not None and card.parsed_number.key == "7/102"


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
    read = read_numbers(lines("O25/l65", "junk", "7 / 102", "HP 120"))
    assert [r.text for r in read] == ["O25/l65", "7/102"]  # slashes joined, HP left out
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


# --- card numbers as printed -------------------------------------------------------------

FULL, PARTIAL, SAME_TOTAL, NONE = Fit.FULL, Fit.PARTIAL, Fit.SAME_TOTAL, Fit.NONE


@pytest.mark.parametrize(
    ("catalog_number", "read", "expected"),
    [
        # Pokémon: leading zeros, either padding, secret rares above the set total
        ("025/165", "025/165", FULL),
        ("025/165", "25/165", FULL),
        ("4/102", "004/102", FULL),
        ("172/165", "172/165", FULL),
        ("025/165", "O25/l65", FULL),  # O/0, l/1 where the catalog has digits
        ("058/120", "O5B/I2O", FULL),  # B/8, I/1
        ("055/198", "OSS/198", FULL),  # S/5
        ("025/165", "025", PARTIAL),  # the set total did not read
        ("025/165", "026/165", SAME_TOTAL),  # another card of the set
        ("025/165", "025/198", NONE),  # the same number in another set
        ("025/165", "252/165", SAME_TOTAL),
        # gallery, shiny vault, radiant collection, promos: with or without the total
        ("TG05/TG30", "TG05/TG30", FULL),
        ("TG05/TG30", "tg 05/tg 30", FULL),
        ("TG05/TG30", "TGO5/TG3O", FULL),
        ("TG05", "TG05/TG30", FULL),  # the Pokémon TCG API keeps no total
        ("TG05", "TG5", FULL),
        ("TG05", "T605", NONE),  # a catalog letter must read as that letter
        ("SV049/SV094", "SV49/SV94", FULL),
        ("SWSH050", "SWSH050", FULL),
        ("SWSH050", "SWSH 050", FULL),
        ("SWSH050", "SWSHO5O", FULL),
        ("SWSH050", "SWSH051", NONE),
        ("RC12/RC32", "RC12/RC32", FULL),
        ("RC12", "RC12/RC32", FULL),
        ("H01", "H1/H32", FULL),
        ("24a", "24A", FULL),
        ("15A1", "15a1", FULL),
        # Magic collector numbers
        ("169z", "169z", FULL),
        ("169", "169/303", FULL),
        ("169", "0169", FULL),
        ("154s", "154s", FULL),
        ("154s", "1545", NONE),  # the catalog's `s` is a letter: no S/5 there
        ("154s", "154", NONE),
        ("PLC-30", "PLC-30", FULL),
        ("PLC-30", "PLC30", FULL),
        ("1★", "1★", FULL),
        ("1★", "1", PARTIAL),  # the star may not read: not certain, not excluded
        ("1", "1★", NONE),  # a star that reads is another printing
        ("72†", "72†", FULL),
        ("2", "2/2", PARTIAL),  # power/toughness is no collector number
        ("2", "2", PARTIAL),
        # Yu-Gi-Oh set codes
        ("LOB-EN001", "LOB-EN001", FULL),
        ("LOB-EN001", "LOBEN001", FULL),
        ("LOB-EN001", "lob-en001", FULL),
        ("LOB-EN001", "LOB-ENOO1", FULL),
        ("LOB-EN001", "L0B-EN001", NONE),  # letters stay letters
        ("LOB-EN001", "LOB-001", NONE),  # another printing
        ("LOB-001", "LOB-001", FULL),
        ("MP20-EN126", "MP20-EN126", FULL),
        ("MP20-EN126", "MP2O-EN126", FULL),
        ("MP20-EN126", "MP20-EN127", NONE),
        ("LDK2-ENK01", "LDK2-ENK01", FULL),
        ("LDK2-ENK01", "LDK2-ENKO1", FULL),
        ("RA01-EN051", "RAO1-EN051", FULL),
    ],
)
def test_a_number_as_read_fits_the_catalog_number_as_printed(
    catalog_number: str, read: str, expected: Fit
) -> None:
    number, reading = parse_number(catalog_number), read_number(read)
    assert number is not None and reading is not None
    assert fit(reading, number) == expected
    if expected is FULL:
        assert reading.loose == number.loose  # so the index finds it in the number's bucket


def test_numbers_compare_without_case_separators_or_leading_zeros() -> None:
    def key(text: str) -> str:
        number = parse_number(text)
        assert number is not None
        return number.key

    assert key("004/165") == key("4/165") == "4/165"
    assert key("TG05/TG30") == key("tg5 / tg30") == "TG5/TG30"
    assert key("LOB-EN001") == key("lob en 001") == "LOBEN1"
    assert key("\uff11\uff12\uff13") == "123"  # full-width digits
    assert key("123-045") != key("12-345")  # digit runs stay apart
    assert parse_number("") is None and parse_number("★") is None and parse_number("—") is None
    assert [number_shape(n) for n in ("025/165", "TG05/TG30", "LOB-EN001", "169z", "1★")] == [
        "N/N",
        "AN/AN",
        "A-AN",
        "NA",
        "N★",
    ]


def test_names_normalise_the_same_on_both_sides() -> None:
    assert normalise("Nidoran ♀") == normalise("Nidoran♀") != normalise("Nidoran♂")
    assert normalise("Farfetch'd") == normalise("Farfetch\N{RIGHT SINGLE QUOTATION MARK}d")
    assert normalise("Farfetch'd") == normalise("Farfetchd")
    assert normalise("Mr. Mime") == normalise("Mr Mime") == "mrmime"
    assert normalise("Flabébé") == normalise("FLABEBE") == "flabebe"
    assert normalise("Porygon2") == "porygon2" != normalise("Porygon-Z")
    assert normalise("Æther Vial") == normalise("Aether Vial")


# --- matching across number formats ------------------------------------------------------

PRINTINGS = (
    "Galmor,Emberfall,012/120,Common,0.10",
    "Galmor V,Emberfall,049/120,Ultra Rare,4.20",
    "Kricketune V,Brilliant Stars Trainer Gallery,TG05,Ultra Rare,2.50",
    "Zeraora V,Astral Radiance,TG05/TG30,Ultra Rare,2.00",
    "Belquil's Galros,Black Star Promos,SWSH141,Promo,3.00",
    "Nidoran ♀,Jungle,57/64,Common,0.35",
    "Nidoran ♂,Jungle,58/64,Common,0.35",
    "Farfetch'd,Base,27/102,Uncommon,1.10",
    "Mr. Mime,Jungle,6/64,Rare Holo,",
    "Porygon2,Sword & Shield,172/202,Rare Secret,0.75",
    "Ineffable Blessing,Unstable,169z,Rare,0.45",
    "Anguished Unmaking,Shadows over Innistrad Promos,154s,Rare,7.80",
    "Damnation,The List,PLC-30,Rare,38.00",
    "Sol Ring,Secret Lair Drop,72†,Rare,15.00",
    "Ugin the Ineffable,War of the Spark,2★,Uncommon,12.00",
    "Ugin the Ineffable,War of the Spark,2,Rare,0.90",
    "Lightning Bolt,Magic 2010,146,Common,1.99",
    "Lightning Bolt,Double Masters 2022,117,Uncommon,1.25",
    "Blue-Eyes White Dragon,Legend of Blue Eyes White Dragon,LOB-EN001,Ultra Rare,106.23",
    "Blue-Eyes White Dragon,Legend of Blue Eyes White Dragon,LOB-001,Ultra Rare,150.50",
    "Blue-Eyes White Dragon,Legendary Decks II,LDK2-ENK01,Common,1.48",
    "Dark Magician,2020 Tin of Lost Memories,MP20-EN126,Common,",
    "Pot of Greed,Rarity Collection,RA01-EN051,Super Rare,2.00",
    "Pot of Greed,Rarity Collection,RA01-EN051,Secret Rare,6.00",
)


@pytest.fixture
def printings(tmp_path: Path) -> Path:
    return write(tmp_path / "printings.csv", *PRINTINGS)


def match(path: Path, *texts: str) -> Match:
    return CardMatcher().match(load_catalog(path), lines(*texts))


@pytest.mark.parametrize(
    ("texts", "name", "number"),
    [
        (
            ("Belquil's Galros", "HP 210", "SWSH141", "BlackStarPromos"),
            "Belquil's Galros",
            "SWSH141",
        ),
        (("Belquil's Galros HP 210", "SWSH141"), "Belquil's Galros", "SWSH141"),  # one line
        (("Kricketune V", "TG05/TG30"), "Kricketune V", "TG05"),
        (("Zeraora V", "TGO5/TG3O"), "Zeraora V", "TG05/TG30"),
        (("Nidoran♀", "57/64"), "Nidoran ♀", "57/64"),
        (("Nidoran ♂", "058/064"), "Nidoran ♂", "58/64"),
        (("Farfetch\N{RIGHT SINGLE QUOTATION MARK}d", "27/102"), "Farfetch'd", "27/102"),
        (("Mr Mime", "6/64"), "Mr. Mime", "6/64"),
        (("Porygon2", "172/202"), "Porygon2", "172/202"),
        (("Ineffable Blessing", "169z"), "Ineffable Blessing", "169z"),
        (("Anguished Unmaking", "154s"), "Anguished Unmaking", "154s"),
        (("Damnation", "PLC-30"), "Damnation", "PLC-30"),
        (("Ugin the Ineffable", "2★"), "Ugin the Ineffable", "2★"),
        (("Ugin the Ineffable", "2*"), "Ugin the Ineffable", "2★"),  # how OCR reads a star
        (("Sol Ring", "72t"), "Sol Ring", "72†"),  # ... and a dagger
        (("Lightning Bolt", "0146", "M10 • EN"), "Lightning Bolt", "146"),
        (("Lightning Bolt", "117/332"), "Lightning Bolt", "117"),
        (("Blue-Eyes White Dragon", "LOB-ENOO1"), "Blue-Eyes White Dragon", "LOB-EN001"),
        (("Blue-Eyes White Dragon", "LOB-001"), "Blue-Eyes White Dragon", "LOB-001"),
        (("Blue-Eyes White Dragon", "LDK2-ENK01"), "Blue-Eyes White Dragon", "LDK2-ENK01"),
        (("Dark Magician", "ATK/2500 DEF/2100", "MP20- EN126"), "Dark Magician", "MP20-EN126"),
    ],
)
def test_every_number_format_identifies_when_name_and_number_read(
    printings: Path, texts: tuple[str, ...], name: str, number: str
) -> None:
    m = match(printings, *texts)
    assert m.status == "identified", m.reason
    assert m.best is not None and (m.best.card.name, m.best.card.number) == (name, number)
    assert m.reason is None


def test_another_cards_number_with_this_name_is_review_with_the_reason(printings: Path) -> None:
    m = match(printings, "Galmor", "HP 70", "049/120")
    assert m.status == "needs_review"
    assert m.reason == "name reads 'Galmor', number 049/120 is Galmor V (Emberfall 049/120)"
    m = match(printings, "Dark Magician", "LOB-EN001")
    assert m.status == "needs_review" and m.reason is not None
    assert "number LOB-EN001 is Blue-Eyes White Dragon" in m.reason


def test_a_name_alone_never_identifies(printings: Path) -> None:
    for name in ("Belquil's Galros", "Damnation", "Blue-Eyes White Dragon", "Lightning Bolt"):
        m = match(printings, name, "Illus. Someone")
        assert m.status == "needs_review" and m.best is not None and m.best.card.name == name
        assert m.reason is not None and m.reason.startswith("number unreadable; name reads")
    m = match(printings, "Lightning Bolt")
    assert m.reason == (
        "number unreadable; name reads 'Lightning Bolt' (Magic 2010 146, Double Masters 2022 117)"
    )


def test_a_number_that_fits_two_printings_is_review(printings: Path) -> None:
    m = match(printings, "Pot of Greed", "RA01-EN051")
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("two printings fit: Pot of Greed (Rarity Collection RA01-EN051,")
    assert "Super Rare" in m.reason and "Secret Rare" in m.reason
    # the star did not read: the plain `2` and the `2★` printing both fit
    m = match(printings, "Ugin the Ineffable", "0002")
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("two printings fit")


def test_a_short_or_incomplete_number_is_review(printings: Path) -> None:
    m = match(printings, "Galmor V", "049")
    assert m.status == "needs_review"
    assert m.reason == "number reads only '049', short of 049/120 (Galmor V, Emberfall)"
    m = match(printings, "Ugin the Ineffable", "2")  # 1-2 digits alone: rules text as often
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("number reads only '2', which fits 2 printings")


def test_a_number_in_no_printing_of_the_name_is_review(printings: Path) -> None:
    m = match(printings, "Galmor V", "133/200")
    assert m.status == "needs_review"
    assert m.reason == (
        "name reads 'Galmor V', but number 133/200 is not one of its printings (Emberfall 049/120)"
    )


def test_no_mix_of_one_cards_name_and_anothers_number_is_ever_identified(
    printings: Path,
) -> None:
    catalog = load_catalog(printings)
    matcher = CardMatcher()
    for a in catalog.cards:
        for b in catalog.cards:
            if a.key == b.key:
                continue
            m = matcher.match(catalog, lines(a.name, b.number))
            if m.status != "identified":
                continue
            # only a card whose own number is what was read (Kricketune V's `TG05` is in
            # Zeraora V's `TG05/TG30`) and whose own name is what was read, or reads like
            # it (Galmor / Galmor V)
            assert m.best is not None and m.best.number_fit == Fit.FULL, (a.name, b.number)
            assert m.best.card.key == a.key or m.best.card is b, (a.name, b.number)
            assert m.best.name_score >= 0.85, (a.name, b.number)


def test_unknown_cards_say_why(printings: Path) -> None:
    assert match(printings).reason == "no text read"
    m = match(printings, "Quazorvix", "HP 60")
    assert m.status == "unknown" and m.reason == "nothing read matches a catalog card"


def test_the_reason_reaches_the_recognition_result(printings: Path) -> None:
    review = to_recognition(match(printings, "Galmor", "049/120"), ["Galmor", "049/120"])
    assert review.status == "needs_review" and review.card_number == "049/120"
    data = review.model_dump()
    reason = data["review_reason"]
    assert reason == "name reads 'Galmor', number 049/120 is Galmor V (Emberfall 049/120)"
    identified = to_recognition(match(printings, "Galmor V", "049/120"), [])
    assert identified.status == "identified"
    assert "review_reason" not in identified.metadata
    assert identified.model_dump().get("review_reason") is None


# --- one name in many sets: the number decides ------------------------------------------

MANY = (
    "Pikachu,Silver Hollow,25/159,Common,0.20",
    "Pikachu,Lost Meridian,025/196,Common,0.25",
    "Pikachu,Astral Forge,TG05,Ultra Rare,4.00",  # as the Pokémon TCG API keeps it
    "Zeraora V,Lost Meridian,TG05/TG30,Ultra Rare,2.00",
    "Ashbloom,Twilight Orchard,TG05,Ultra Rare,1.00",
    "Pikachu,Black Star Promos,SWSH050,Promo,1.50",
    "Pikachu,Shimmer Vault,SV049,Shiny Holo Rare,9.00",
    "Pikachu,Radiant Hoard,RC12,Holo Rare,3.00",
    "Pikachu,Emberfall,201/165,Secret Rare,30.00",
    "Pikachu V,Silver Hollow,26/159,Ultra Rare,5.00",
    "Volthorn,Verdant Wilds,012/120,Common,0.10",
    "Volthorn ex,Verdant Wilds,121/120,Secret Rare,8.00",
    "Quartzfang VMAX,Astral Forge,TG03,Ultra Rare,6.00",
    "Type: Null,Sunken Reliquary,131/172,Rare,0.50",
    "Nidoran♀,Velvet Storm,044/108,Common,0.10",
    "Nidoran♂,Velvet Storm,045/108,Common,0.10",
    "Hollow Drake,Echoes of Valor,250,Common,0.10,eov",
    "Hollow Drake,Mirrorwood,226,Common,0.10,mrw",
    "Lightning Bolt,Karlov Vaults,141,Common,1.00,krv",
    "Toon Serpent,Rarity Vault,RA01-EN088,Common,0.10,ra01",
    "Mystic Sentry,Dawn of Legends,DOL-012,Common,0.10,",  # the catalog knows no code
    # one name under one collector number in several Magic sets: the set code decides
    "Sol Ring,Karlov Vaults,123,Uncommon,1.00,krv",
    "Sol Ring,Dominion Rising,123,Uncommon,1.20,dmr",
    "Sol Ring,Shards of Ilvar,123,Rare,2.00,soi",
    "Sol Ring,Karlov Vaults Promos,123p,Rare,9.00,pkrv",
)


@pytest.fixture
def many(tmp_path: Path) -> Path:
    return write(tmp_path / "many.csv", *MANY, header=f"{HEADER},set_code")


@pytest.mark.parametrize(
    ("texts", "set_name", "number"),
    [
        (("Pikachu", "HP 60", "Silver Hollow", "025/159"), "Silver Hollow", "25/159"),
        (("Pikachu", "Lost Meridian", "025/196"), "Lost Meridian", "025/196"),
        (("Pikachu", "Astral Forge", "TG05/TG30"), "Astral Forge", "TG05"),
        (("Pikachu", "SWSH050"), "Black Star Promos", "SWSH050"),
        (("Pikachu", "SV049/SV094"), "Shimmer Vault", "SV049"),
        (("Pikachu", "RC12/RC32"), "Radiant Hoard", "RC12"),
        (("Pikachu", "201/165", "Secret Rare"), "Emberfall", "201/165"),  # above the total
        (("Volthorn", "ex", "HP 170", "121/120"), "Verdant Wilds", "121/120"),  # cut in two
        (("Quartzfang VMAXIP 290", "TG03/TG30"), "Astral Forge", "TG03"),  # HP run into it
        (("Type: Null", "131/172"), "Sunken Reliquary", "131/172"),
        (("Nidoran♀", "044/108"), "Velvet Storm", "044/108"),
        (("NidoranQ", "045/108"), "Velvet Storm", "045/108"),  # the sign misread: the number
        (("Hollow Drake", "5/3", "C.0250", "EOV · EN"), "Echoes of Valor", "250"),
        (("Hollow Drake", "R0226", "MRW • EN"), "Mirrorwood", "226"),  # rarity letter stuck
        (("Lightning Bolt", "0141/0281 R", "KRV • EN"), "Karlov Vaults", "141"),
        (("Bolt", "Lightning", "0141/0281 R"), "Karlov Vaults", "141"),  # tilted: read upwards
        (("Toon Serpent", "RA01-END88"), "Rarity Vault", "RA01-EN088"),  # 0 read as D
        (("Sol Ring", "0123/0281 U", "KRV • EN  Jo Vale"), "Karlov Vaults", "123"),
        (("Sol Ring", "123/290 U", "DMR·EN"), "Dominion Rising", "123"),
        (("Sol Ring", "R 0123", "S0I • EN"), "Shards of Ilvar", "123"),  # O read as 0
        (("Sol Ring", "0123/0281 R", "SOIEN Jo Vale"), "Shards of Ilvar", "123"),  # run together
        (("Sol Ring", "0123p", "KRV • EN"), "Karlov Vaults Promos", "123p"),  # its main set's
    ],
)
def test_among_many_printings_of_a_name_the_printed_number_picks_one(
    many: Path, texts: tuple[str, ...], set_name: str, number: str
) -> None:
    m = match(many, *texts)
    assert m.status == "identified", m.reason
    assert m.best is not None and (m.best.card.set_name, m.best.card.number) == (set_name, number)


def test_among_many_printings_a_name_alone_or_a_like_names_number_is_review(many: Path) -> None:
    m = match(many, "Pikachu", "HP 60")
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("number unreadable; name reads 'Pikachu' (") and "4 more" in m.reason
    m = match(many, "Pikachu", "26/159")  # Pikachu V's number
    assert m.status == "needs_review"
    assert m.reason == "name reads 'Pikachu', number 26/159 is Pikachu V (Silver Hollow 26/159)"
    m = match(many, "Volthorn", "121/120")  # the `ex` did not read
    assert m.status == "needs_review"
    assert m.reason is not None and "number 121/120 is Volthorn ex" in m.reason
    m = match(many, "Zeraora V", "TG05/TG30")  # TG05 of three sets: this name has one
    assert m.status == "identified" and m.best is not None
    assert m.best.card.set_name == "Lost Meridian"


def test_set_codes_are_read_in_capitals_with_ocr_confusions() -> None:
    codes = read_codes(["Sol Ring", "0123/0281 U", "KRV • EN  Jo Vale"])
    assert codes.printed == ("KRV",) and codes.fits("krv") and not codes.fits("dmr")
    assert read_codes(["S0I·EN"]).fits("soi")  # O read as 0, the bullet as a dot
    assert read_codes(["KRVEN Jo Vale"]).fits("krv")  # bullet and spaces not read
    assert read_codes(["MKM • EN"]).fits("pmkm")  # a promo set prints its main set's code
    assert read_codes(["LOB-EN001"]).fits("LOB")  # a Yu-Gi-Oh! number opens with it
    assert not read_codes(["Destroy target krv creature"]).fits("krv")  # rules text
    assert not read_codes(["0123/0281", "EN"]).fits("en")  # a language is no set code
    # a code before a language that is clearly another set's contradicts; one edit off
    # may be a misread and does not
    assert read_codes(["DMR • EN"]).contradicts("krv") == "DMR"
    assert read_codes(["KRY • EN"]).contradicts("krv") is None
    assert read_codes(["<RV· EN"]).contradicts("krv") is None  # K lost
    assert read_codes(["<RV· EN"]).contradicts("soi") == "RV"  # KRV on a card of SOI's
    # a misread this bad cannot be told from another set's code: review, not a guess
    garbled = "PR\N{MULTIPLICATION SIGN}EN"  # `MRW • EN` as OCR read it off a small photo
    assert read_codes([garbled]).contradicts("mrw") == "PR"
    assert read_codes(["DMR • EN"]).contradicts("pkrv") == "DMR"  # a promo of KRV: not DMR
    assert read_codes(["KRV • EN"]).contradicts("krv") is None
    assert read_codes(["DMR Jo Vale"]).contradicts("krv") is None  # not surely a code


def test_one_name_and_number_in_several_sets_without_their_code_is_review(many: Path) -> None:
    m = match(many, "Sol Ring", "0123/0281 U", "Jo Vale")
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("three printings fit: ")
    assert m.reason.endswith("; set code unreadable")
    for printing in (
        "Karlov Vaults 123, KRV",
        "Dominion Rising 123, DMR",
        "Shards of Ilvar 123, SOI",
    ):
        assert f"Sol Ring ({printing})" in m.reason
    m = match(many, "Sol Ring", "0123/0281 U", "MRW • EN")  # a code none of the three has
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("three printings fit: ") and m.reason.endswith(
        "; set code reads 'MRW'"
    )
    m = match(many, "Sol Ring", "0123/0281 U", "krv • en")  # codes are printed in capitals
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.endswith("; set code unreadable")
    m = match(many, "Sol Ring", "KRV • EN")  # the set, but no number: a name alone
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("number unreadable; name reads 'Sol Ring'")


def test_a_set_code_clearly_another_sets_is_review_and_a_misread_one_is_not(many: Path) -> None:
    m = match(many, "Hollow Drake", "C 0250", "KRV • EN")  # the catalog has it in EOV only
    assert m.status == "needs_review"
    assert m.reason == (
        "set code reads 'KRV', the catalog has EOV for Hollow Drake (Echoes of Valor 250)"
    )
    m = match(many, "Hollow Drake", "C 0250", "E0U • EN")  # one character off: a misread
    assert m.status == "identified" and m.best is not None
    assert m.best.card.set_name == "Echoes of Valor" and m.best.code_fit is None


def test_a_set_code_read_raises_confidence_to_that_of_a_set_name_read(many: Path) -> None:
    """Magic and Yu-Gi-Oh! print no set name, only its code: read, it counts the same."""
    pokemon = match(many, "Pikachu", "Silver Hollow", "025/159").best
    bolt = match(many, "Lightning Bolt", "0141/0281 R", "KRV • EN").best
    bolt_uncoded = match(many, "Lightning Bolt", "0141/0281 R").best
    serpent = match(many, "Toon Serpent", "RA01-EN088").best
    sentry = match(many, "Mystic Sentry", "DOL-012").best  # no code in the catalog
    assert pokemon and bolt and bolt_uncoded and serpent and sentry
    assert pokemon.confidence == bolt.confidence == serpent.confidence == 1.0
    assert bolt.code_fit is True and serpent.code_fit is True and sentry.code_fit is None
    assert bolt_uncoded.code_fit is None and bolt_uncoded.confidence < 0.95
    assert sentry.confidence < 0.95


def test_no_mix_of_name_number_and_set_code_identifies_another_printing(many: Path) -> None:
    catalog = load_catalog(many)
    magic = [c for c in catalog.cards if c.metadata.get("set_code")]
    codes = sorted({c.metadata["set_code"].upper() for c in magic} | {"XQZ"})
    matcher = CardMatcher()
    twins_identified: set[str] = set()
    for a in magic:
        for b in magic:
            for code in codes:
                m = matcher.match(catalog, lines(a.name, b.number, f"{code} • EN"))
                if m.status != "identified":
                    continue
                assert m.best is not None and m.best.card.key == a.key, (a, b, code)
                assert m.best.number_fit == Fit.FULL, (a, b, code)
                # of one name under one number in several sets, only the one whose code
                # was read (a promo set `pkrv` prints its main set's `KRV`)
                if sum(c.number == b.number for c in catalog.by_name[a.key]) > 1:
                    assert m.best.card.metadata["set_code"].upper() in (code, f"P{code}")
                    twins_identified.add(code)
    assert twins_identified == {"KRV", "DMR", "SOI"}  # Sol Ring 123 in each, by its code


def test_no_mix_of_a_name_and_another_printings_number_is_identified_among_many(
    many: Path,
) -> None:
    catalog = load_catalog(many)
    matcher = CardMatcher()
    for a in catalog.cards:
        for b in catalog.cards:
            if a.key == b.key:
                continue
            m = matcher.match(catalog, lines(a.name, b.number))
            if m.status == "identified":
                assert m.best is not None and m.best.number_fit == Fit.FULL, (a.name, b.number)
                assert m.best.card.key == a.key, (a.name, b.number)


# --- the hard tier's generated catalog ---------------------------------------------------


@pytest.fixture(scope="module")
def hard() -> tuple[list[CardSpec], Catalog]:
    specs = hard_catalog(3)
    with tempfile.TemporaryDirectory() as tmp:
        return specs, load_catalog(write_catalog(specs, Path(tmp) / "hard.csv", seed=3))


def as_printed(spec: CardSpec) -> list[str]:
    """What perfect OCR reads off the generated card, in its layout."""
    number = spec.printed or spec.number
    if spec.layout == "magic":
        return [spec.name, "Creature — Elf", "2/2", number, f"{spec.set_code} • EN  Jo Vale"]
    if spec.layout == "yugioh":
        return [spec.name, "[Spell Card]", number, "ATK/1200 DEF/800", "89631139"]
    return [spec.name, f"HP {spec.hp}", "Attack 40", spec.set_name, number, spec.rarity]


def test_the_hard_catalog_holds_many_printings_of_one_name_in_every_format(
    hard: tuple[list[CardSpec], Catalog],
) -> None:
    specs, catalog = hard
    assert len(catalog) == len(specs) > 2500 and not catalog.warnings
    assert hard_catalog(3) == specs  # generated, the same for the same seed
    pikachu = catalog.by_name[normalise("Pikachu")]
    assert len(pikachu) == 40 and len({(c.set_name, c.number) for c in pikachu}) == 40
    assert set(by_trait(specs)) == set(TRAITS)
    printed = [s.printed or s.number for s in specs]
    shapes = (r"TG\d\d/TG30", r"SV\d{3}/SV094", r"RC\d+/RC32", r"SWSH\d{3}", r"\d{4}/\d{4} [CURM]")
    for shape in shapes:
        assert any(re.fullmatch(shape, p) for p in printed), shape
    secret = [s.number.split("/") for s in specs if s.trait == "secret rare"]
    assert secret and all(int(n) > int(total) for n, total in secret)  # above the set total
    names = {s.name for s in specs}
    assert {"Farfetch'd", "Mr. Mime", "Flabébé", "Nidoran♀", "Porygon2", "Type: Null"} <= names
    assert any(re.fullmatch(r"[A-Z0-9]+-(EN)?\d{3}", s.number) for s in specs)
    reprints: dict[tuple[str, str], set[str]] = {}
    for s in by_trait(specs)["set code"]:
        reprints.setdefault((s.name, s.number), set()).add(s.set_code)
    assert len(reprints) >= 5 and all(len(codes) >= 2 for codes in reprints.values())


def test_on_the_hard_catalog_what_a_card_prints_identifies_it_and_its_name_never_alone(
    hard: tuple[list[CardSpec], Catalog],
) -> None:
    specs, catalog = hard
    matcher = CardMatcher()
    rng = random.Random(4)
    for spec in rng.sample(specs, 120):
        m = matcher.match(catalog, lines(*as_printed(spec)))
        assert m.status == "identified", (spec, m.reason)
        assert m.best is not None
        assert (m.best.card.name, m.best.card.set_name, m.best.card.number) == (
            spec.name,
            spec.set_name,
            spec.number,
        )
        alone = matcher.match(catalog, lines(spec.name, "Attack 40"))
        assert alone.status == "needs_review", spec
    for spec in by_trait(specs)["set code"]:  # one name and number in several sets
        m = matcher.match(catalog, lines(*as_printed(spec)))
        assert m.status == "identified" and m.best is not None, (spec, m.reason)
        assert m.best.card.set_name == spec.set_name and m.best.code_fit is True
        uncoded = matcher.match(catalog, lines(*as_printed(spec)[:-1]))
        assert uncoded.status == "needs_review" and uncoded.reason is not None, spec
        assert "printings fit: " in uncoded.reason and f", {spec.set_code})" in uncoded.reason
        assert uncoded.reason.endswith("; set code unreadable")
    in_another_set = 0
    for _ in range(100):
        stranger = hard_stranger(rng, specs)
        m = matcher.match(catalog, lines(*as_printed(stranger)))
        assert m.status != "identified", (stranger, m.best)
        if stranger.layout == "magic" and any(
            (s.name, s.number) == (stranger.name, stranger.number) for s in specs
        ):  # a name and number the catalog has, but in another set: the code says so
            in_another_set += 1
            assert m.reason is not None and f"set code reads '{stranger.set_code}'" in m.reason
    assert in_another_set > 0
