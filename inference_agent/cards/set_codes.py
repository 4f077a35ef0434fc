"""Set codes read off a card, as evidence of which set's printing it is.

Magic prints its set code and language under the collector number (`KRV • EN`, bottom
left); a Yu-Gi-Oh! number opens with its set's code (`LOB` of `LOB-EN001`). A catalog
row has its code in the `set_code` column (Scryfall's `set`, lower case: `krv`; the
YGOPRODeck import writes the code before the hyphen).

Codes compare without case and with OCR's confusions folded (O/0, I/1, S/5, B/8, ...),
since codes mix letters and digits (`M10`, `2X2`, `MP20`). Only words read in capitals
count: a code is printed so, rules text and names rarely are. A code followed by a
language (`KRV • EN`) is surely the set code, so one two or more edits from a printing's
code is evidence against it (`DMR • EN` on a card the catalog has in KRV), even when that
may be a bad misread (`PR EN` for `MRW • EN`): a card goes to review rather than risk a
printing the catalog lacks. One edit off (`RV`, `KRY` for `KRV`) counts for nothing
either way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

# the languages Magic prints after its set code
LANGUAGES = frozenset(
    {"EN", "DE", "FR", "IT", "ES", "PT", "JP", "JA", "RU", "KO", "KR", "CS", "CT", "PH", "ZH"}
)
_SPLIT = re.compile(r"[^0-9A-Za-z]+")  # spaces, `•`, `·`, `-`, `.`, `/`, ...
_FOLD = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "S": "5", "B": "8"})
_MIN, _MAX = 2, 6  # characters in a set code
_APART = 2  # a code read this many edits from the card's is another set's, not a misread


def code_key(code: str) -> str:
    """A set code as compared: `krv` -> `KRV`, `SOI` -> `501`."""
    return "".join(c for c in code.upper() if c.isalnum()).translate(_FOLD)


@dataclass(frozen=True)
class CodesRead:
    """What was read that could be a set code."""

    seen: frozenset[str]  # code keys of every word in capitals that could be one
    printed: tuple[str, ...] = ()  # codes read before a language (`KRV • EN`), as read

    def fits(self, code: str) -> bool:
        """Whether the catalog's code for a printing was read. A Scryfall promo or token
        set (`pmkm`, `tmkm`) prints its main set's code (`MKM`)."""
        return any(k in self.seen for k in _keys(code))

    def contradicts(self, code: str) -> str | None:
        """A code read before a language that is clearly not this printing's (`DMR • EN`
        on a card the catalog has in KRV); None when none is."""
        keys = _keys(code)
        if not keys or self.fits(code):
            return None
        for printed in self.printed:
            read = code_key(printed)
            if all(Levenshtein.distance(read, k) >= _APART for k in keys):
                return printed
        return None


def read_codes(texts: Iterable[str]) -> CodesRead:
    seen: set[str] = set()
    printed: list[str] = []
    for text in texts:
        words = [w for w in _SPLIT.split(text) if w]
        for i, word in enumerate(words):
            if not _capitals(word):
                continue
            if _MIN <= len(word) <= _MAX and word not in LANGUAGES:
                seen.add(code_key(word))
                if i + 1 < len(words) and words[i + 1] in LANGUAGES:
                    printed.append(word)
            if _MIN + 2 <= len(word) <= _MAX + 2 and word[-2:] in LANGUAGES:
                seen.add(code_key(word[:-2]))  # `KRVEN`: the bullet and space not read
    return CodesRead(frozenset(seen), tuple(dict.fromkeys(printed)))


def _keys(code: str) -> tuple[str, ...]:
    """The keys a catalog code is read as: its own, and a promo or token set's main set's."""
    key = code_key(code)
    if not key:
        return ()
    return (key, key[1:]) if len(key) >= 4 and key[0] in "PT" else (key,)


def _capitals(word: str) -> bool:
    """Capital letters and digits, at least one letter, no lower case."""
    return word.isascii() and word.isalnum() and word.upper() == word and not word.isdigit()
