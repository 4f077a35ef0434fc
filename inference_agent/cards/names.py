"""Card and set names compared the way OCR reads them.

Both sides (the catalog and the OCR lines) go through `normalise`, so `Nidoran ♀` and
`Nidoran♀`, `Flabébé` and `Flabebe`, `Farfetch'd` with either apostrophe, `Mr. Mime` and
`Mr Mime` compare equal, while `Porygon2` keeps its digit.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Letters and signs that Unicode does not decompose into plain letters, spelled the way
# OCR is most likely to read them. The gender signs stay distinct, so Nidoran♀ and
# Nidoran♂ remain two names.
_SPELLED = str.maketrans(
    {
        "♀": "f",
        "♂": "m",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "ø": "o",
        "Ø": "o",
        "ł": "l",
        "Ł": "l",
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "þ": "th",
    }
)


_NOT_ASCII_ALNUM = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=1 << 16)  # a catalog repeats set names and rarities; OCR lines repeat
def normalise(text: str) -> str:
    """Accents off, case folded, only letters and digits: `Flabébé  EX!` -> `flabebeex`."""
    if text.isascii():
        return _NOT_ASCII_ALNUM.sub("", text.lower())
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPELLED))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in plain.casefold() if c.isalnum())


def clean_name(text: str) -> str:
    """A name as it is stored: NFC, whitespace runs (newlines included) made one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())
