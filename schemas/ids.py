"""Identifiers that travel in topics, file names and ledger keys.

Every identifier that can become a topic segment or a file name is validated here, once:
letters, digits, `.`, `_` and `-`, 1 to 64 characters, no `..`, and never starting with a
dot (so it cannot be a hidden file or a relative path). MQTT wildcards (`+`, `#`), the topic
separator `/`, `$` and control characters are therefore impossible.
"""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from pydantic import AfterValidator, Field

IDENTIFIER_MAX = 64
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class InvalidIdentifierError(ValueError):
    """An identifier would be unsafe as a topic segment or a file name."""


def check_identifier(value: str, what: str = "identifier") -> str:
    """Return `value` unchanged if it is a safe identifier, else raise with the reason."""
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{what} is empty")
    if len(value) > IDENTIFIER_MAX:
        raise InvalidIdentifierError(
            f"{what} is {len(value)} characters long, over the limit of {IDENTIFIER_MAX}"
        )
    if ".." in value:
        raise InvalidIdentifierError(f"{what} {value!r} contains '..'")
    if not _IDENTIFIER_RE.fullmatch(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))})
        shown = ", ".join(repr(c) for c in bad) if bad else "a leading '.'"
        raise InvalidIdentifierError(
            f"{what} {value!r} may hold only letters, digits, '.', '_' and '-' "
            f"and may not start with '.'; found {shown}"
        )
    return value


def _station(value: str) -> str:
    return check_identifier(value, "station id")


def _agent(value: str) -> str:
    return check_identifier(value, "agent id")


def _frame(value: str) -> str:
    return check_identifier(value, "frame id")


# The pattern is documented in the JSON Schema; the check itself is `check_identifier`,
# whose messages say which character was wrong.
_ID_FIELD = Field(
    json_schema_extra={"pattern": f"^{_IDENTIFIER_RE.pattern}$", "maxLength": IDENTIFIER_MAX}
)

StationId = Annotated[str, _ID_FIELD, AfterValidator(_station)]
AgentId = Annotated[str, _ID_FIELD, AfterValidator(_agent)]
FrameId = Annotated[str, _ID_FIELD, AfterValidator(_frame)]


def new_frame_id() -> str:
    """A ULID: 26 characters, sortable by creation time, unique without coordination."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_CROCKFORD[rem])
    return "".join(reversed(chars))
