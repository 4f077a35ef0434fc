"""File names, and any other text, as MQTT strings: escaped so they always travel.

A file name is a string of bytes chosen by whoever wrote the file: it may hold a newline,
an escape character, U+FFFF, or bytes that are not UTF-8 at all. An MQTT string must be
well-formed UTF-8, and Mosquitto closes the connection of a client that sends one holding
U+0000-U+001F, U+007F-U+009F or a non-character (U+FDD0-U+FDEF, U+xFFFE, U+xFFFF), so a
raw name in a user property can take the whole capture station off the broker.

A name therefore travels percent-encoded: `%`, every byte that is not UTF-8, and every
character MQTT refuses or that rewrites a line (U+2028, U+2029, bidirectional controls)
appear as `%XX`, one per byte of the original. Everything else is kept as it is, so
`card-1.jpg` or `café.jpg` read the same on the wire, and the form is reversible:
`unescape_name(escape_name(raw)) == raw`, byte for byte (it is what
`urllib.parse.unquote_to_bytes` decodes).
"""

from __future__ import annotations

import os
from urllib.parse import unquote_to_bytes

# Not refused by Mosquitto, but they change how a line reads: line and paragraph
# separators, and bidirectional embedding/override/isolate controls.
_DISPLAY_UNSAFE = frozenset(
    [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F]
)


def mqtt_refuses(cp: int) -> bool:
    """True for a code point that Mosquitto refuses in an MQTT string (MQTT 5 §1.5.4)."""
    return (
        cp <= 0x1F
        or 0x7F <= cp <= 0x9F
        or 0xD800 <= cp <= 0xDFFF  # surrogates: not encodable as UTF-8
        or 0xFDD0 <= cp <= 0xFDEF
        or (cp & 0xFFFE) == 0xFFFE
    )


def mqtt_string_problem(value: str, *, max_chars: int = 1024) -> str | None:
    """Why `value` cannot be sent as an MQTT string, or None when it can."""
    if len(value) > max_chars:
        return f"it is {len(value)} characters long, over the {max_chars} limit"
    for i, ch in enumerate(value):
        if mqtt_refuses(ord(ch)):
            return f"it holds U+{ord(ch):04X} at position {i}, which MQTT brokers refuse"
    return None


def _unsafe(cp: int) -> bool:
    return cp == 0x25 or mqtt_refuses(cp) or cp in _DISPLAY_UNSAFE  # 0x25 is "%"


def escape_name(name: str | bytes) -> str:
    """The percent-encoded form of a file name (bytes, or str as os.fsdecode gives it)."""
    text = os.fsdecode(name) if isinstance(name, bytes) else name
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if not _unsafe(cp):
            out.append(ch)
        elif 0xDC80 <= cp <= 0xDCFF:  # surrogateescape: one byte that was not UTF-8
            out.append(f"%{cp - 0xDC00:02X}")
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def unescape_name(escaped: str) -> bytes:
    """The original bytes of a name escaped by `escape_name`."""
    return unquote_to_bytes(escaped)


def name_as_text(raw: bytes) -> str | None:
    """The original name as text when it is valid UTF-8 (exact), else None."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def printable(text: str, *, limit: int = 500) -> str:
    """`text` made safe for a log line, a database row or a terminal (display only, not
    reversible): characters MQTT refuses become Python-style escapes; cut at `limit`."""
    out = []
    for ch in text:
        cp = ord(ch)
        if mqtt_refuses(cp) or cp in _DISPLAY_UNSAFE:
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    result = "".join(out)
    return result if len(result) <= limit else result[: limit - 1] + "…"
