"""Card numbers as the card prints them, and how a number OCR read fits one.

A catalog number is kept as text (`025/165`, `TG05/TG30`, `SWSH050`, `169z`, `1★`,
`LOB-EN001`, `MP20-EN126`) and split into segments: letter runs, digit runs and the
symbols ★ ☆ † ‡. Case, spaces and separators (`-`, `.`, ...) do not count, nor do
leading zeros within a digit run, so `TG05` is `tg5`, `LOB-EN001` is `LOBEN1` and `004/165`
is `4/165`. A number OCR read fits a catalog number when it reads the same segments,
where a catalog digit may be read as a letter OCR confuses it with (O/0, D/0, I/1, l/1,
|/1, S/5, B/8), but a catalog letter must be read as that letter.

For lookup, both sides also reduce to a loose key (confusable letters made digits, zeros
dropped): every reading that fits a number has that number's loose key, so the catalog
indexes its numbers by it and a reading is checked only against its own bucket.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

SYMBOLS = frozenset("★☆†‡")
MAX_NUMBER_CHARS = 40  # a longer "number" is not one (and bounds the work on hostile text)
_DIGITS = frozenset("0123456789")
# what OCR reads in place of a digit; used only where the catalog number has a digit
_DIGIT_FIXES = str.maketrans(
    {"O": "0", "o": "0", "D": "0", "I": "1", "l": "1", "|": "1", "S": "5", "B": "8"}
)
_DIGIT_LIKE = _DIGITS | frozenset("OoDIl|SB")
_LOOSE = str.maketrans({"O": "0", "D": "0", "I": "1", "L": "1", "|": "1", "S": "5", "B": "8"})
_RUNS = re.compile(r"[0-9]+|[^\W\d_]+|[★☆†‡]")  # digit runs, letter runs, symbols


class Fit(IntEnum):
    """How a number OCR read fits a catalog number, worst to best."""

    NONE = 0
    SAME_TOTAL = 1  # the set total agrees, the number does not: another card of the set
    PARTIAL = 2  # the number agrees, but the reading lacks the set total (or is 1-2 digits)
    FULL = 3


@dataclass(frozen=True, slots=True)
class CardNumber:
    """A catalog card's number: the text as printed and its segments."""

    text: str
    primary: tuple[str, ...]  # before the slash
    total: tuple[str, ...] | None  # after it, when the card prints one (`/165`, `/TG30`)
    loose: str
    total_loose: str | None
    key: str  # canonical, equal for equal numbers: `TG05/TG30` -> `TG5/TG30`

    @property
    def plain(self) -> bool:
        """Only digits (and symbols), no set total: `169`, `1★`."""
        return self.total is None and not any(s.isalpha() for s in self.primary)


@dataclass(frozen=True, slots=True)
class NumberReading:
    """A word OCR read, taken as a possible card number."""

    text: str
    primary: str  # letters, digits, symbols and `|` only; case as read
    total: str | None
    loose: str
    total_loose: str | None

    @property
    def weak(self) -> bool:
        """One or two digits alone (`2`, `2/2`): power/toughness or rules text as often as
        a collector number, so no evidence of a plain one (`2`) by itself."""
        return (
            len(self.primary) < 3
            and all(c in _DIGIT_LIKE for c in self.primary)
            and (self.total is None or len(self.total) < 2)
        )

    @property
    def slashed(self) -> bool:
        """Digits on both sides of a slash: it reads like `025/165` whatever it fits."""
        return self.total is not None and _has_digit(self.primary) and _has_digit(self.total)


@lru_cache(maxsize=1 << 17)  # catalogs repeat numbers (`1`..`300`, `025/165`): share them
def parse_number(text: str) -> CardNumber | None:
    """A catalog number, or None when it has no digit to match (or is absurdly long)."""
    plain = unicodedata.normalize("NFKC", text).strip()
    if not plain or len(plain) > MAX_NUMBER_CHARS:
        return None
    head, slash, tail = plain.partition("/")
    primary = _segments(head)
    if not any(s[0] in _DIGITS for s in primary):
        return None
    total = _segments(tail) if slash else ()
    return CardNumber(
        text=text.strip(),
        primary=primary,
        total=total or None,
        loose=_loose(head),
        total_loose=_loose(tail) if total else None,
        key=f"{_join(primary)}/{_join(total)}" if total else _join(primary),
    )


def read_number(word: str) -> NumberReading | None:
    """A word of OCR text as a possible number; None when it cannot be one."""
    plain = unicodedata.normalize("NFKC", word).strip()
    if not plain or len(plain) > MAX_NUMBER_CHARS:
        return None
    head, slash, tail = plain.partition("/")
    primary, total = _ocr_clean(head), _ocr_clean(tail) if slash else ""
    if not primary or not any(c in _DIGIT_LIKE for c in primary + total):
        return None  # no digit, nor a letter read in place of one: `junk`, `Attack`
    return NumberReading(
        text=plain,
        primary=primary,
        total=total or None,
        loose=_loose(primary),
        total_loose=_loose(total) if total else None,
    )


def fit(reading: NumberReading, number: CardNumber) -> Fit:
    if reading.loose == number.loose and _fits(reading.primary, number.primary):
        if number.total is None:
            return Fit.PARTIAL if number.plain and reading.weak else Fit.FULL
        if reading.total is None:
            return Fit.PARTIAL
        same_total = reading.total_loose == number.total_loose and _fits(
            reading.total, number.total
        )
        return Fit.FULL if same_total else Fit.NONE  # the same number in another set
    if (
        number.total is not None
        and reading.total is not None
        and reading.slashed
        and reading.total_loose == number.total_loose
        and _fits(reading.total, number.total)
    ):
        return Fit.SAME_TOTAL
    return Fit.NONE


def number_shape(text: str) -> str:
    """The format of a number, for catalog statistics: `LOB-EN001` -> `A-AN`."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", text).strip():
        kind = "N" if ch in _DIGITS else "A" if ch.isalpha() else ch
        if not (out and kind in "NA" and out[-1] == kind):
            out.append(kind)
    return "".join(out)


def _segments(part: str) -> tuple[str, ...]:
    """`LOB-EN001` -> ('LOBEN', '1'); `123-045` -> ('123', '45'); `1★` -> ('1', '★')."""
    out: list[str] = []
    for run in _RUNS.findall(part):
        if run[0] in _DIGITS:
            out.append(run.lstrip("0") or "0")
        elif run in SYMBOLS:
            out.append(run)
        elif out and out[-1][0] not in _DIGITS and out[-1] not in SYMBOLS:
            out[-1] += run.upper()  # letters across a separator are one run: LOB-EN -> LOBEN
        else:
            out.append(run.upper())
    return tuple(out)


def _join(segments: tuple[str, ...]) -> str:
    out = ""
    for i, seg in enumerate(segments):
        if i and seg[0] in _DIGITS and segments[i - 1][-1] in _DIGITS:
            out += "."  # two digit runs stay apart: 123-45 is not 12-345
        out += seg
    return out


def _loose(part: str) -> str:
    up = "".join(c for c in part.upper() if c.isalnum() or c == "|")
    return up.translate(_LOOSE).replace("0", "") or "0"


def _ocr_clean(part: str) -> str:
    return "".join(c for c in part if c.isalnum() or c in SYMBOLS or c == "|")


def _has_digit(text: str) -> bool:
    return any(c in _DIGITS for c in text)


def _fits(read: str, segments: tuple[str, ...]) -> bool:
    return _fits_from(read, 0, segments, 0)


def _fits_from(read: str, i: int, segments: tuple[str, ...], j: int) -> bool:
    if j == len(segments):
        return i == len(read)
    seg = segments[j]
    if seg in SYMBOLS:
        # OCR often misses a ★ or †: absent is allowed, another character is not
        if read.startswith(seg, i) and _fits_from(read, i + 1, segments, j + 1):
            return True
        return _fits_from(read, i, segments, j + 1)
    if seg[0] not in _DIGITS:
        end = i + len(seg)
        return read[i:end].upper() == seg and _fits_from(read, end, segments, j + 1)
    end = i
    while end < len(read) and read[end] in _DIGIT_LIKE:
        end += 1
    for stop in range(end, i, -1):  # longest first; shorter when a letter follows (154s)
        digits = read[i:stop].translate(_DIGIT_FIXES)
        if (digits.lstrip("0") or "0") == seg and _fits_from(read, stop, segments, j + 1):
            return True
    return False
