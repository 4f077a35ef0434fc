"""The hard tier's catalog: thousands of generated printings, the same for the same seed.

It holds what makes a real catalog hard and a name alone unable to tell cards apart: one
name in many sets (`Pikachu` 40 times, each with its own number), names with symbols and
punctuation (`Farfetch'd`, `Mr. Mime`, `Flabébé`, `Nidoran♀`, `Porygon2`, `Type: Null`),
numbers as the cards print them (`201/165` above the set total, `TG05/TG30`,
`SV049/SV094`, `RC12/RC32`, `SWSH050`), Magic collector numbers (`0123/0281 R` over
`MKM • EN`), one Magic name under one collector number in several sets (`Sol Ring` 123 in
three: only the set code tells them apart) and Yu-Gi-Oh! set codes (`LOB-EN001`). A
number is kept the way the importers write it (the Pokémon TCG API's `TG05` or `4/102` for
a card printing `TG05/TG30` or `004/102`, Scryfall's `123` for `0123/0281`), so printed and
catalog numbers differ as they do for real catalogs.

Within the catalog no name prints a number that another printing of a similar name fits
(such a pair is told apart only by a set symbol, which nothing here reads), but for Magic
printings of one name in sets of different codes: the card prints its set's code.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from rapidfuzz import fuzz

from framewire.inference_agent.cards.matcher import OcrLine, read_numbers
from framewire.inference_agent.cards.names import normalise
from framewire.inference_agent.cards.numbers import CardNumber, Fit, fit, parse_number
from framewire.samples import CardSpec, load_specs

TRAITS = (
    "number",  # 025/165, 4/102
    "secret rare",  # above the set total: 201/165
    "gallery",  # TG05/TG30
    "shiny vault",  # SV049/SV094
    "radiant",  # RC12/RC32
    "promo",  # SWSH050
    "symbol name",  # Farfetch'd, Nidoran♀, Type: Null, ...
    "many printings",  # Pikachu 40 times
    "magic",  # 0123/0281 R, MKM • EN
    "set code",  # Sol Ring 0123 in three Magic sets: KRV • EN, DMR • EN, THC • EN
    "yugioh",  # LOB-EN001 under the artwork
)
COLUMNS = ("name", "set", "number", "rarity", "market_price", "hp", "set_code")
SIMILAR = 80  # names this alike (ratio, %) never share a number the card prints

_PREFIXES = ("Ash", "Éclair", "Rune", "Bramble", "Tide", "Nimbus", "Glimmer", "Thorn", "Ember",
             "Drift", "Shade", "Flint", "Moss", "Blaze", "Frost", "Pebble", "Fang", "Coral",
             "Gale", "Volt", "Zéphyr", "Cinder", "Sable", "Quartz")  # fmt: skip
_SUFFIXES = ("bloom", "fin", "paw", "tail", "shell", "spark", "fang", "claw", "scale", "howl",
             "horn", "root", "wing", "ling", "crest", "mane")  # fmt: skip
_STAGES = ("", "", "", "", "", "", " V", " ex", " GX", " VMAX")
# name: how many printings it has; names with many printings, then names with symbols and
# punctuation (and the names OCR may take them for)
_MANY = {
    "Pikachu": 40,
    "Pikachu V": 6,
    "Pikachu VMAX": 3,
    "Pikachu ex": 4,
    "Charizard": 14,
    "Charizard ex": 4,
    "Raichu": 6,
    "Eevee": 12,
    "Mew": 6,
    "Mewtwo": 6,
}
_SYMBOLS = {
    "Farfetch'd": 6,
    "Sirfetch'd": 3,
    "Mr. Mime": 6,
    "Mr. Rime": 2,
    "Mime Jr.": 3,
    "Flabébé": 5,
    "Nidoran♀": 5,
    "Nidoran♂": 5,
    "Nidorina": 3,
    "Nidorino": 3,
    "Porygon": 5,
    "Porygon2": 5,
    "Porygon-Z": 4,
    "Type: Null": 4,
    "Ho-Oh": 4,
    "Kommo-o": 3,
}
_POKEMON_SETS = (  # name, total (0: drawn), how many TG cards it holds
    ("Verdant Wilds", 120, 0),
    ("Emberfall", 165, 0),
    ("Stormreach", 198, 0),
    ("Tidal Court", 102, 0),
    ("Silver Hollow", 0, 30),
    ("Lost Meridian", 0, 30),
    ("Astral Forge", 0, 30),
    ("Sunken Reliquary", 0, 0),
    ("Twilight Orchard", 0, 30),
    ("Brass Canyon", 0, 0),
    ("Velvet Storm", 0, 0),
    ("Hollow Peaks", 0, 0),
)
_TOTALS = (64, 78, 94, 108, 132, 159, 165, 172, 185, 189, 196, 203)
_RARITIES = ("Common",) * 6 + ("Uncommon",) * 3 + ("Rare", "Holo Rare")

_MAGIC_SETS = (  # name, code, printed style
    ("Karlov Vaults", "KRV", "slash4"),
    ("Dominion Rising", "DMR", "slash3"),
    ("Shards of Ilvar", "SOI", "slash3"),
    ("Ashen Reaches", "ASR", "slash4"),
    ("Mirrorwood", "MRW", "rarity first"),
    ("Thundering Coast", "THC", "slash4"),
    ("Echoes of Valor", "EOV", "rarity first"),
    ("Gilded Expanse", "GXP", "slash3"),
)
_MAGIC_MANY = {
    "Lightning Bolt": 8,
    "Sol Ring": 8,
    "Counterspell": 6,
    "Llanowar Elves": 5,
    "Æther Vial": 3,
    "Jötun Grunt": 2,
    "Lim-Dûl's Vault": 2,
    "Circle of Protection: Red": 3,
    "Ach! Hans, Run!": 2,
    "Séance": 2,
}
# one name under one collector number in this many Magic sets, told apart by the set code
_MAGIC_REPRINTS = {
    "Sol Ring": 3,
    "Counterspell": 2,
    "Lightning Bolt": 2,
    "Llanowar Elves": 2,
    "Brainstorm": 3,
    "Dark Ritual": 2,
    "Swords to Plowshares": 2,
    "Æther Vial": 2,
}
_MAGIC_WORDS = (
    ("Ashen", "Gilded", "Hollow", "Veiled", "Sunlit", "Grim", "Feral", "Arcane", "Storm", "Iron",
     "Mire", "Hallowed", "Silent", "Wild", "Ancient", "Shattered"),
    ("Vow", "Drake", "Sentinel", "Pact", "Harbinger", "Rebuke", "Familiar", "Colossus", "Tithe",
     "Recall", "Wurm", "Oracle", "Blade", "Ritual", "Aegis", "Reckoning"),
)  # fmt: skip
_MAGIC_RARITIES = ("Common",) * 5 + ("Uncommon",) * 3 + ("Rare", "Rare", "Mythic")

_YUGIOH_SETS = (  # name, code prefix, region letters
    ("Legacy of the Abyss", "LOTA", "EN"),
    ("Metal Raiders", "MRD", "EN"),
    ("Dawn of Legends", "DOL", ""),
    ("Starter Deck Kaiba", "SDK", ""),
    ("Mega Pack 2020", "MP20", "EN"),
    ("Rarity Vault", "RA01", "EN"),
    ("Duel Devastator", "DUDE", "EN"),
    ("Phantom Spires", "PHSP", "EN"),
)
_YUGIOH_MANY = {
    "Blue-Eyes White Dragon": 6,
    "Dark Magician": 6,
    "Pot of Greed": 4,
    "Red-Eyes Black Dragon": 4,
    "Mystical Space Typhoon": 4,
    "Number 39: Utopia": 2,
    "D.D. Crow": 2,
    "Ash Blossom & Joyous Spring": 2,
    "Elemental HERO Neos": 2,
}
_YUGIOH_WORDS = (
    ("Cyber", "Ancient", "Chaos", "Mystic", "Armored", "Phantom", "Crimson", "Celestial", "Toon",
     "Giant", "Dark", "Frost"),
    ("Knight", "Wyvern", "Sorcerer", "Golem", "Serpent", "Guardian", "Beast", "Dragon", "Shaman",
     "Warrior", "Fiend", "Sentry"),
)  # fmt: skip
_YUGIOH_RARITIES = ("Common",) * 4 + ("Rare", "Super Rare", "Ultra Rare", "Secret Rare")


@dataclass
class _Book:
    """The printings so far, indexed to tell whether a new one would clash."""

    specs: list[CardSpec]
    by_loose: dict[str, list[tuple[str, CardNumber, str]]]  # name key, number, set code

    def clashes(self, name: str, printed: str, set_code: str = "") -> bool:
        """Whether what the card prints as its number fits a printing of a name like this;
        with `set_code` (a Magic card, which prints it), not one of the same name in a set
        of another code."""
        key = normalise(name)
        for reading in read_numbers([OcrLine(printed, 1.0)]):
            for other, number, code in self.by_loose.get(reading.loose, ()):
                if fuzz.ratio(key, other) >= SIMILAR and fit(reading, number) == Fit.FULL:
                    if set_code and other == key and code and code != set_code:
                        continue  # a reprint, told apart by the code it prints
                    return True
        return False

    def add(self, spec: CardSpec) -> bool:
        code = spec.set_code if spec.layout == "magic" else ""
        if self.clashes(spec.name, spec.printed or spec.number, code):
            return False
        self.index(spec)
        self.specs.append(spec)
        return True

    def index(self, spec: CardSpec) -> None:
        number = parse_number(spec.number)
        if number is not None:
            entry = (normalise(spec.name), number, spec.set_code)
            self.by_loose.setdefault(number.loose, []).append(entry)


def hard_catalog(seed: int = 0) -> list[CardSpec]:
    """About 3,000 printings: Pokémon-like sets with their special numbers, Magic-like and
    Yu-Gi-Oh!-like sets; every spec has its `trait`, `layout` and printed number."""
    rng = random.Random(f"hard-catalog-{seed}")
    book = _Book([], {})
    _pokemon(rng, book)
    _magic(rng, book)
    _yugioh(rng, book)
    return book.specs


def by_trait(specs: Iterable[CardSpec]) -> dict[str, list[CardSpec]]:
    out: dict[str, list[CardSpec]] = {trait: [] for trait in TRAITS}
    for spec in specs:
        out.setdefault(spec.trait, []).append(spec)
    return {k: v for k, v in out.items() if v}


def write_catalog(specs: Iterable[CardSpec], path: Path, *, seed: int = 0) -> Path:
    """The printings as a catalog CSV, with made-up prices."""
    rng = random.Random(f"prices-{seed}")
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for s in specs:
            price = f"{rng.uniform(0.05, 40):.2f}"
            out.writerow([s.name, s.set_name, s.number, s.rarity, price, s.hp, s.set_code.lower()])
    return path


# -- Pokémon-like -------------------------------------------------------------------------


def _pokemon(rng: random.Random, book: _Book) -> None:
    fantasy = [p + s for p in _PREFIXES for s in _SUFFIXES]
    sample: dict[str, list[CardSpec]] = {}
    for spec in load_specs():
        sample.setdefault(spec.set_name, []).append(spec)
    slots: list[tuple[CardSpec, str]] = []  # a printing without its name yet; its trait
    for set_name, total, gallery in _POKEMON_SETS:
        total = total or rng.choice(_TOTALS)
        padded = rng.random() < 0.7  # modern cards print 004/165, older ones 4/102
        api = rng.random() < 0.5  # the catalog as the Pokémon TCG API writes numbers
        if set_name in sample:  # the sample catalog's own rows: as they are written
            padded, api = True, False
        taken = {int(s.number.split("/")[0]) for s in sample.get(set_name, ())}
        for spec in sample.get(set_name, ()):
            book.add(replace(spec, trait="number"))
        for n in range(1, total + rng.randint(6, 40) + 1):
            if n in taken:
                continue
            secret = n > total
            printed = f"{n:03d}/{total:03d}" if padded else f"{n}/{total}"
            number = f"{n}/{total}" if api else printed
            rarity = "Secret Rare" if secret else rng.choice(_RARITIES)
            spec = CardSpec("", set_name, number, rarity, _hp(rng), printed=printed)
            slots.append((spec, "secret rare" if secret else "number"))
        for n in range(1, gallery + 1):
            printed = f"TG{n:02d}/TG{gallery}"
            number = f"TG{n:02d}" if api else printed  # the API keeps no total: `TG05`
            spec = CardSpec("", set_name, number, "Ultra Rare", _hp(rng), printed=printed)
            slots.append((spec, "gallery"))
    for n in range(1, 95):
        printed = f"SV{n:03d}/SV094"
        spec = CardSpec("", "Shimmer Vault", f"SV{n:03d}", "Shiny Holo Rare", _hp(rng))
        slots.append((replace(spec, printed=printed), "shiny vault"))
    for n in range(1, 33):
        spec = CardSpec("", "Radiant Hoard", f"RC{n}", "Holo Rare", _hp(rng))
        slots.append((replace(spec, printed=f"RC{n}/RC32"), "radiant"))
    for n in sorted(rng.sample(range(1, 301), 150)):
        slots.append(
            (CardSpec("", "Black Star Promos", f"SWSH{n:03d}", "Promo", _hp(rng)), "promo")
        )
    rng.shuffle(slots)
    free = list(range(len(slots)))
    for names, trait in ((_MANY, "many printings"), (_SYMBOLS, "symbol name")):
        for name, count in names.items():
            placed = 0
            for i in list(free):
                spec, slot_trait = slots[i]
                if placed == count:
                    break
                if name.startswith("Nidoran") and slot_trait != "number":
                    continue
                if book.add(replace(spec, name=name, trait=trait)):
                    free.remove(i)
                    placed += 1
            rng.shuffle(free)
    for i in free:
        spec, trait = slots[i]
        while not book.add(
            replace(spec, name=rng.choice(fantasy) + rng.choice(_STAGES), trait=trait)
        ):
            pass


def _hp(rng: random.Random) -> str:
    return str(rng.randrange(30, 340, 10))


# -- Magic-like and Yu-Gi-Oh!-like --------------------------------------------------------


def _magic(rng: random.Random, book: _Book) -> None:
    adjectives, nouns = _MAGIC_WORDS
    famous = [name for name, count in _MAGIC_MANY.items() for _ in range(count)]
    rng.shuffle(famous)
    totals: dict[str, int] = {}
    taken: dict[str, set[int]] = {}
    for set_name, code, style in _MAGIC_SETS:
        total = totals[set_name] = rng.randint(250, 300)
        numbers = taken[set_name] = set(rng.sample(range(1, total + 1), rng.randint(45, 60)))
        for n in sorted(numbers):
            spec = _magic_card(rng, (set_name, code, style), total, n)
            name = famous.pop() if famous and rng.random() < 0.2 else ""
            while not book.add(replace(spec, name=name or _two(rng, adjectives, nouns))):
                name = ""
    for name, count in _MAGIC_REPRINTS.items():
        while True:  # a number free in `count` sets, which no printing of a like name fits
            sets = rng.sample(_MAGIC_SETS, count)
            n = rng.randint(1, min(totals[s[0]] for s in sets))
            if any(n in taken[s[0]] for s in sets):
                continue
            cards = [replace(_magic_card(rng, s, totals[s[0]], n), name=name) for s in sets]
            if not any(book.clashes(name, c.printed, c.set_code) for c in cards):
                break
        for card in cards:
            taken[card.set_name].add(n)
            if not book.add(replace(card, trait="set code")):  # checked above: cannot be
                raise AssertionError(f"{name} {n} clashes in {card.set_name}")


def _magic_card(rng: random.Random, at: tuple[str, str, str], total: int, n: int) -> CardSpec:
    """A nameless Magic printing, number `n` of `total` in the set `at` (name, code, how
    its numbers print)."""
    set_name, code, style = at
    rarity = rng.choice(_MAGIC_RARITIES)
    letter = rarity[0]
    printed = {
        "slash4": f"{n:04d}/{total:04d} {letter}",
        "slash3": f"{n:03d}/{total:03d} {letter}",
        "rarity first": f"{letter} {n:04d}",
    }[style]
    return CardSpec("", set_name, str(n), rarity, "", "magic", printed, code, "magic")


def _yugioh(rng: random.Random, book: _Book) -> None:
    first, second = _YUGIOH_WORDS
    famous = [name for name, count in _YUGIOH_MANY.items() for _ in range(count)]
    rng.shuffle(famous)
    for set_name, code, region in _YUGIOH_SETS:
        for n in sorted(rng.sample(range(1, 121), rng.randint(40, 55))):
            number = f"{code}-{region}{n:03d}"
            rarity = rng.choice(_YUGIOH_RARITIES)
            spec = CardSpec("", set_name, number, rarity, "", "yugioh", "", code, "yugioh")
            name = famous.pop() if famous and rng.random() < 0.25 else ""
            while not book.add(replace(spec, name=name or _two(rng, first, second))):
                name = ""


def _two(rng: random.Random, first: tuple[str, ...], second: tuple[str, ...]) -> str:
    return f"{rng.choice(first)} {rng.choice(second)}"


# -- cards that are not in the catalog ----------------------------------------------------

_SYLLABLES = ("zor", "qua", "vix", "lum", "tek", "rah", "mip", "gol", "yun", "dre", "kos", "baz")


def hard_stranger(rng: random.Random, specs: list[CardSpec]) -> CardSpec:
    """A printing the catalog lacks, laid out like one of its cards: a made-up name, or a
    name the catalog has with a number that no printing of a name like it has; or (one in
    ten) a Magic name and number the catalog has, in a set it lacks them in, whose code the
    card prints."""
    book = _Book([], {})
    for spec in specs:
        book.index(spec)
    layouts: dict[str, list[CardSpec]] = {}
    for spec in specs:
        layouts.setdefault(spec.layout, []).append(spec)
    if rng.random() < 0.1:
        return _in_another_set(rng, layouts["magic"])
    while True:
        template = rng.choice(specs)
        if rng.random() < 0.5:
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            if template.layout != "pokemon":
                name += " " + rng.choice(("Vow", "Knight", "Drake", "Golem"))
        else:  # a name of the same game
            name = rng.choice(layouts[template.layout]).name
        printed = _another_number(rng, template.printed or template.number)
        if not book.clashes(name, printed):
            return replace(template, name=name, number=printed, printed=printed, trait="stranger")


def _in_another_set(rng: random.Random, magic: list[CardSpec]) -> CardSpec:
    """A Magic printing as another set would print it (that set's name and code) where no
    printing of a name like it has the number."""
    by_set = {code: _Book([], {}) for _, code, _ in _MAGIC_SETS}
    for spec in magic:
        by_set[spec.set_code].index(spec)
    while True:
        template = rng.choice(magic)
        set_name, code, _ = rng.choice(_MAGIC_SETS)
        if code != template.set_code and not by_set[code].clashes(template.name, template.printed):
            return replace(template, set_name=set_name, set_code=code, trait="stranger")


def _another_number(rng: random.Random, printed: str) -> str:
    """The printed number with its card number changed (the last digits before any slash):
    most likely another card's, or no card's at all."""
    head, slash, tail = printed.partition("/")
    runs = list(re.finditer(r"[0-9]+", head))
    if not runs:
        return printed
    run = runs[-1]
    n = rng.randint(1, max(30, 2 * int(run.group())))
    return f"{head[: run.start()]}{n:0{len(run.group())}d}{head[run.end() :]}{slash}{tail}"
