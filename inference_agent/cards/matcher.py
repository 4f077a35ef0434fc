"""From OCR lines to a catalog card: read name, number and HP, then match.

Tuned so that a wrong `identified` is rarer than a `needs_review`: a card is identified only
when its name reads clearly, its printed number fits (`numbers.fit`), and no other card
comes close. A name alone never identifies a card, nor does a printing whose set code
reads as another set's. Anything short of that is `needs_review`, with a reason a person
can act on (`review`).

Where the set is printed, it is evidence too: its name (Pokémon), or its code (Magic's
`KRV • EN`, the `LOB` of Yu-Gi-Oh!'s `LOB-EN001`; `set_codes`), which is what tells apart
one name under one collector number in several Magic sets.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rapidfuzz import fuzz, process

from framewire.inference_agent.cards.catalog import Catalog, CatalogCard
from framewire.inference_agent.cards.names import normalise
from framewire.inference_agent.cards.numbers import Fit, NumberReading, fit, read_number
from framewire.inference_agent.cards.review import review_reason, unknown_reason
from framewire.inference_agent.cards.set_codes import CodesRead, read_codes

_HP = re.compile(r"(?:HP\s*([0-9]{2,3}))|(?:([0-9]{2,3})\s*HP)", re.IGNORECASE)
_HP_TAIL = re.compile(r"\s*[HIl|]?\s*P\s*[0-9]{2,3}\s*$")  # `HP 290` at a line's end, misread
_SLASH = re.compile(r"\s*/\s*")
_SEPARATORS = re.compile(r"[.,:;·•]+")  # never inside a card number
# a Magic rarity letter read together with the collector number after it (`R 0123`)
_RARITY_FIRST = re.compile(r"[CURMSLTP]([0-9]{3,4})")
_MAX_READINGS = 400  # words taken as possible numbers, per card photo
# what OCR makes of a symbol after a collector number (`72†` -> `72t`, `1★` -> `1*`)
_SYMBOL_MISREADS = {"t": "†", "+": "†", "*": "★"}
_NUMBER_SCORES = {Fit.FULL: 1.0, Fit.PARTIAL: 0.6, Fit.SAME_TOTAL: 0.2}
_NAMES_PER_LINE = 5
_FRAGMENT = 16  # characters of a line that may be part of a name cut in two
_NAME_CUTOFF = 60  # a name less like any line than this is not worth a look (ratio, %)


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float


@dataclass(frozen=True)
class Candidate:
    card: CatalogCard
    confidence: float
    name_score: float
    number_score: float
    set_score: float
    name_read: str = ""  # the OCR line the card's name reads best in
    number_read: str = ""  # the reading its number fits best, if any fits
    number_fit: Fit = Fit.NONE
    # True: the printing's set code was read; False: a code read is another set's (it is
    # `code_read`); None: no code read tells either way, or the catalog has none for it
    code_fit: bool | None = None
    code_read: str = ""


@dataclass(frozen=True)
class Match:
    status: Literal["identified", "needs_review", "unknown"]
    best: Candidate | None
    candidates: list[Candidate]
    numbers: list[str]  # what was read as a card number: it fits one, or reads like 025/165
    hp: int | None
    reason: str | None = None  # why it is not identified, for a person; None when it is


def read_numbers(lines: list[OcrLine]) -> list[NumberReading]:
    """Every word (and pair of adjacent words, for `LOB- EN001`) that could be a number.

    Slashes join what is around them (`025 / 165`), the HP reading is left out, a word is
    also tried in the parts its dots and bullets make (`C.0250`, `MKM•EN`) and without a
    Magic rarity letter stuck to it (`R0123`), and a letter OCR reads for a trailing symbol
    is tried as that symbol too.
    """
    found: dict[str, NumberReading] = {}
    for line in lines:
        text = _SLASH.sub("/", _HP.sub(" ", unicodedata.normalize("NFKC", line.text)))
        words = text.split()
        pairs = [a + b for a, b in itertools.pairwise(words) if _has_digit(a + b)]
        for word in (*words, *pairs, *_parts(words)):
            for text in (word, *_as_symbol(word)):
                reading = read_number(text)
                if reading is not None and reading.text not in found:
                    found[reading.text] = reading
            if len(found) >= _MAX_READINGS:
                return list(found.values())
    return list(found.values())


def _parts(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        parts = [p for p in _SEPARATORS.split(word) if p]
        if len(parts) > 1:
            out += parts
        for part in parts:
            bare = _RARITY_FIRST.fullmatch(part)
            if bare:
                out.append(bare.group(1))
    return out


def _as_symbol(word: str) -> list[str]:
    """`72t` may be `72†` misread: both are tried, and the catalog says which exists."""
    last = word[-1:]
    if last in _SYMBOL_MISREADS and len(word) > 1 and word[-2].isdigit():
        return [word[:-1] + _SYMBOL_MISREADS[last]]
    return []


def read_hp(lines: list[OcrLine]) -> int | None:
    for line in lines:
        m = _HP.search(line.text.replace(" ", ""))
        if m:
            return int(m.group(1) or m.group(2))
    return None


def _has_digit(text: str) -> bool:
    return any("0" <= c <= "9" for c in text)


@dataclass(frozen=True)
class _Reading:
    """What was read off one photo, prepared for scoring."""

    raw: dict[str, str]  # normalised line -> the line as read (the first, if repeated)
    numbers: list[NumberReading]
    hp: int | None
    codes: CodesRead

    @property
    def keys(self) -> list[str]:
        return list(self.raw)


def _read(lines: list[OcrLine]) -> _Reading:
    raw: dict[str, str] = {}
    # `Galros HP 210` is the name, and so is `Galros IP 210`: the HP misread
    texts = [_HP_TAIL.sub("", _HP.sub(" ", line.text)).strip() for line in lines]
    for text, line in zip(texts, lines, strict=True):
        key = normalise(text)
        if key:
            raw.setdefault(key, line.text.strip())
    # a name the detector cut in two (`Volthorn` `ex`): two lines in a row, read together;
    # two short ones the other way round too, for a tilted card whose second word sits
    # higher (`Bolt` `Lightning`)
    for a, b in itertools.pairwise(texts):
        if normalise(a) and normalise(b):
            raw.setdefault(normalise(f"{a} {b}"), f"{a} {b}")
            if len(a) <= _FRAGMENT and len(b) <= _FRAGMENT:
                raw.setdefault(normalise(f"{b} {a}"), f"{b} {a}")
    codes = read_codes(line.text for line in lines)
    return _Reading(raw, read_numbers(lines), read_hp(lines), codes)


class CardMatcher:
    def __init__(
        self,
        *,
        threshold: float = 0.85,
        min_name_score: float = 0.85,
        margin: float = 0.08,
        plausible: float = 0.55,
    ) -> None:
        self.threshold = threshold
        self.min_name_score = min_name_score
        self.margin = margin
        self.plausible = plausible

    def match(self, catalog: Catalog, lines: list[OcrLine]) -> Match:
        read = _read(lines)
        pool: dict[int, CatalogCard] = {}
        numbers: dict[str, None] = {r.text: None for r in read.numbers if r.slashed}
        for reading in read.numbers:
            for card in _fitting(catalog, reading):
                pool[id(card)] = card
                numbers[reading.text] = None
        for key in _names_like(catalog, read.keys):
            for card in catalog.by_name[key]:
                pool[id(card)] = card
        scored = self._score(list(pool.values()), read, numbers_read=bool(numbers))
        number_list = list(numbers)
        best = scored[0] if scored else None
        plausible = best is not None and (
            best.confidence >= self.plausible
            or best.name_score >= 0.8
            or (best.number_score == 1.0 and best.name_score >= 0.5)
        )
        if best is None or not plausible:
            reason = unknown_reason(best, bool(read.raw))
            return Match("unknown", None, scored[:3], number_list, read.hp, reason)
        runner_up = scored[1].confidence if len(scored) > 1 else 0.0
        # another card whose name reads better means name and number disagree: ask a person
        best_name = max(c.name_score for c in scored)
        clear = (
            best.confidence >= self.threshold
            and best.name_score >= self.min_name_score
            and best.name_score >= best_name - 0.05
            and best.number_fit == Fit.FULL
            and best.code_fit is not False  # the card says it is of another set
            and best.confidence - runner_up >= self.margin
        )
        if clear:
            return Match("identified", best, scored[:3], number_list, read.hp)
        reason = review_reason(
            scored,
            catalog,
            number_list,
            read.hp,
            threshold=self.threshold,
            margin=self.margin,
            min_name_score=self.min_name_score,
            codes=read.codes,
        )
        return Match("needs_review", best, scored[:3], number_list, read.hp, reason)

    def _score(
        self, cards: list[CatalogCard], read: _Reading, *, numbers_read: bool
    ) -> list[Candidate]:
        names = _best_of(list({c.key: None for c in cards}), read.keys)
        sets = _best_of(list({c.set_key: None for c in cards if c.set_key}), read.keys)
        # a set code read that is one of these printings' is evidence against the others
        code_of = {id(c): c.metadata.get("set_code", "") for c in cards}
        fitting_code = next(
            (code for code in code_of.values() if code and read.codes.fits(code)), ""
        )
        out = []
        for card in cards:
            name_score, name_line = names.get(card.key, (0.0, ""))
            level, number_read = _number_fit(card, read.numbers)
            # no number legible is no evidence either way; a number that is another card's is
            number_score = _NUMBER_SCORES.get(level, 0.0 if numbers_read else 0.4)
            set_score = sets.get(card.set_key, (0.0, ""))[0]
            code_fit, code_read = _code_fit(code_of[id(card)], read.codes, fitting_code)
            if code_fit:
                set_score = 1.0  # the set is read, by its code rather than its name
            confidence = 0.55 * name_score + 0.35 * number_score + 0.10 * set_score
            card_hp = card.metadata.get("hp", "")
            if read.hp is not None and card_hp.isdigit() and int(card_hp) != read.hp:
                confidence -= 0.1  # printed HP disagrees with the catalog
            if code_fit is False:
                confidence -= 0.1  # so does the set code
            out.append(
                Candidate(
                    card=card,
                    confidence=round(max(0.0, min(1.0, confidence)), 4),
                    name_score=round(name_score, 4),
                    number_score=number_score,
                    set_score=round(set_score, 4),
                    name_read=read.raw.get(name_line, ""),
                    number_read=number_read,
                    number_fit=level,
                    code_fit=code_fit,
                    code_read=code_read,
                )
            )
        out.sort(key=lambda c: c.confidence, reverse=True)
        return out


def _code_fit(code: str, codes: CodesRead, fitting: str) -> tuple[bool | None, str]:
    """Whether the printing's set code `code` was read, and if another set's was, which
    (`fitting`: a code of another candidate that was read)."""
    if not code:
        return None, ""
    if codes.fits(code):
        return True, ""
    other = codes.contradicts(code) or fitting.upper()
    return (False, other) if other else (None, "")


def _fitting(catalog: Catalog, reading: NumberReading) -> Iterator[CatalogCard]:
    """The cards whose number the reading fits in full: from its buckets of the index."""
    buckets = [catalog.by_number.get(reading.loose)]
    if reading.total_loose is not None:
        buckets.append(catalog.by_number_total.get((reading.loose, reading.total_loose)))
    for bucket in buckets:
        for number, cards in (bucket or {}).items():
            if fit(reading, number) == Fit.FULL:
                yield from cards


def _names_like(catalog: Catalog, keys: list[str]) -> set[str]:
    """The catalog names closest to each line (at most 5 a line, none under 60 %)."""
    if not keys or not catalog.names:
        return set()
    scores = process.cdist(
        keys, catalog.names, scorer=fuzz.ratio, score_cutoff=_NAME_CUTOFF, dtype=np.uint8, workers=1
    )
    found: set[str] = set()
    for row in scores:
        top = (
            np.argpartition(row, -_NAMES_PER_LINE)[-_NAMES_PER_LINE:]
            if len(row) > _NAMES_PER_LINE
            else range(len(row))
        )
        found.update(catalog.names[i] for i in top if row[i])
    return found


def _best_of(choices: list[str], keys: list[str]) -> dict[str, tuple[float, str]]:
    """For each choice: its best ratio (0..1) against the lines, and that line."""
    if not choices or not keys:
        return {}
    scores = process.cdist(choices, keys, scorer=fuzz.ratio, workers=1)
    best = scores.argmax(axis=1)
    return {c: (float(scores[i, best[i]]) / 100, keys[best[i]]) for i, c in enumerate(choices)}


def _number_fit(card: CatalogCard, readings: list[NumberReading]) -> tuple[Fit, str]:
    """How well the best reading fits the card's number, and that reading."""
    number = card.parsed_number
    best: tuple[Fit, str] = (Fit.NONE, "")
    if number is None:
        return best
    for reading in readings:
        if reading.loose != number.loose and (
            reading.total_loose is None or reading.total_loose != number.total_loose
        ):
            continue  # cannot fit: not the number, not the set total
        level = fit(reading, number)
        if level > best[0]:
            best = (level, reading.text)
            if level == Fit.FULL:
                break
    return best
