"""The records of a large JSON file, one at a time: the items of its top-level array, or of
the array under one key of its top-level object (`{"data": [...]}`), without holding the
whole document in memory. A card-data dump is hundreds of MiB; one record is a few KiB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

CHUNK = 1 << 20
MAX_RECORD_CHARS = 16 << 20  # one record larger than this is refused, not buffered forever
# What may follow a number that a chunk cut short: nothing yet, or the start of its fraction
# or exponent, which the decoder leaves unread (it reads "1." as 1, then stops at the ".")
_NUMBER_GOES_ON = frozenset(["", ".", "e", "E", "e+", "e-", "E+", "E-"])


class JsonStreamError(ValueError):
    """The file is not the JSON expected; the message names the file and the offset."""


class _Buffer:
    def __init__(self, handle: TextIO, name: str) -> None:
        self.handle = handle
        self.name = name
        self.text = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the front of `text`
        self.eof = False
        self.decoder = json.JSONDecoder()

    def more(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.handle.read(CHUNK)
        except UnicodeDecodeError as err:
            raise JsonStreamError(f"{self.name} is not UTF-8: {err.reason}") from None
        if not chunk:
            self.eof = True
            return False
        self.consumed += self.pos
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace, or '' at the end."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            found = repr(ch) if ch else "the end of the file"
            raise JsonStreamError(
                f"{self.name} at offset {self.offset}: expected {what}, found {found}"
            )
        self.pos += 1
        return ch

    def value(self) -> object:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                where = self.consumed + err.pos
                if len(self.text) - self.pos > MAX_RECORD_CHARS:
                    raise JsonStreamError(
                        f"{self.name} at offset {self.offset}: a record over "
                        f"{MAX_RECORD_CHARS} characters"
                    ) from None
                if self.more():
                    continue  # the record runs on into the next chunk
                raise JsonStreamError(f"{self.name} at offset {where}: {err.msg}") from None
            except RecursionError:
                raise JsonStreamError(
                    f"{self.name} at offset {self.offset}: nested too deeply"
                ) from None
            if len(self.text) - end <= 2 and self.text[end:] in _NUMBER_GOES_ON and self.more():
                # a number may go on past the chunk ("12" of "125", "1" of "1.5" or "1e5"):
                # decode it again with the next chunk
                continue
            self.pos = end
            return value

    @property
    def offset(self) -> int:
        return self.consumed + self.pos


def iter_records(path: Path, *, key: str = "data") -> Iterator[object]:
    """The items of the top-level array, or of the array at `key` of the top-level object."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise JsonStreamError(f"cannot read {path}: {err.strerror}") from None
    with handle:
        buf = _Buffer(handle, str(path))
        first = buf.expect("[{", "a JSON array or object")
        if first == "{" and not _seek_key(buf, key):
            raise JsonStreamError(f"{path} has no {key!r} array at the top level")
        if buf.peek() == "]":
            return
        while True:
            yield buf.value()
            if buf.expect(",]", "',' or ']' after a record") == "]":
                return


def _seek_key(buf: _Buffer, key: str) -> bool:
    """Inside the top-level object: skip members until `key`'s array opens."""
    if buf.peek() == "}":
        return False
    while True:
        if buf.peek() != '"':
            buf.expect('"', "a member name")
        name = buf.value()
        buf.expect(":", "':'")
        if name == key and buf.peek() == "[":
            buf.pos += 1
            return True
        buf.value()  # another member (`meta`, `page`, ...): small, decoded and dropped
        if buf.expect(",}", "',' or '}'") == "}":
            return False
