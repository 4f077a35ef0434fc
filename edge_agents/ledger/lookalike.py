"""Look-alike frames across the whole ledger: every row's perceptual hash, in memory.

A new frame is compared with every frame ledgered before it, not with a recent window, so a
card captured again months later is still found. The hashes are 64-bit integers in numpy
arrays and one comparison is a few vectorised passes over them (a few nanoseconds a row, no
Python work per row); an identified card is compared only with the rows of the same catalog
card. The ledger's store owns the index: it loads it once when it opens, appends each row it
inserts and forgets them again if their transaction fails, so the index holds exactly the
committed rows plus those of the open transaction. It takes about 110 bytes a row (11 MB
for 100,000 frames), most of it the frame ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

# Perceptual-hash distances (of 64 bits) under which a frame counts as a re-capture of an
# earlier one: loose when the OCR identified the same catalog card in both, strict otherwise.
SAME_CARD_DISTANCE = 28
LOOKALIKE_DISTANCE = 6

_U64_MASK = 0xFFFF_FFFF_FFFF_FFFF

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
NUMPY_POPCOUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0
_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

CardKey = tuple[str, str, str]  # (set_name, card_number, card_name)
U64 = npt.NDArray[np.uint64]


def popcount(values: U64) -> npt.NDArray[np.uint8]:
    """Set bits of each value: numpy's own on numpy 2, a byte table on older numpy."""
    if NUMPY_POPCOUNT:
        counted: npt.NDArray[np.uint8] = np.bitwise_count(values)
        return counted
    return popcount_by_bytes(values)


def popcount_by_bytes(values: U64) -> npt.NDArray[np.uint8]:
    counts = _BYTE_BITS[values.view(np.uint8)].reshape(-1, 8)
    total: npt.NDArray[np.uint8] = counts.sum(axis=1, dtype=np.uint8)
    return total


def phash_bits(phash: str) -> int:
    """The hex perceptual hash as the signed 64-bit integer a database column holds."""
    value = int(phash, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def micros(at: datetime) -> int:
    """A time as microseconds since 1970 (UTC when it carries no offset): exact, and
    ordered as the instants are."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class Probe:
    """What a frame is compared by: its hash, when it was captured, whether it is an
    identified card and, if so, which catalog card (None: one without a full catalog key)."""

    bits: int
    captured_us: int
    identified: bool
    card: CardKey | None


@dataclass(frozen=True)
class Relatives:
    """The rows a probe's frame re-captures or is re-captured by."""

    earliest_before: str | None  # the earliest captured before it (ties: smallest frame id)
    captured_after: list[str]  # every one captured after it


class PhashIndex:
    """Every ledger row that has a perceptual hash, in arrays that grow by doubling.

    An unidentified frame is compared with every row (one pass of xor, popcount and compare,
    into buffers kept for it, so a comparison allocates nothing the size of the ledger); an
    identified one only with the rows identified as the same catalog card.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._bits: U64 = np.zeros(capacity, dtype=np.uint64)
        self._at = np.zeros(capacity, dtype=np.int64)
        self._xor: U64 = np.zeros(capacity, dtype=np.uint64)
        self._count = np.zeros(capacity, dtype=np.uint8)
        self._near = np.zeros(capacity, dtype=np.bool_)
        self._frame_ids: list[str] = []
        self._by_card: dict[CardKey, list[int]] = {}  # positions, ascending

    @classmethod
    def of(
        cls,
        frame_ids: list[str],
        bits: list[int],
        captured_us: list[int],
        cards: list[CardKey | None],
    ) -> PhashIndex:
        """An index of many rows at once (a ledger being opened), in the order given."""
        n = len(frame_ids)
        index = cls(max(1024, 1 << n.bit_length()))
        index._bits[:n] = np.array(bits, dtype=np.int64).view(np.uint64)
        index._at[:n] = captured_us
        index._frame_ids = list(frame_ids)
        for position, card in enumerate(cards):
            if card is not None:
                index._by_card.setdefault(card, []).append(position)
        return index

    def __len__(self) -> int:
        return len(self._frame_ids)

    def _reserve(self, size: int) -> None:
        if size <= len(self._bits):
            return
        grown = max(2 * len(self._bits), 1 << size.bit_length())
        self._bits = np.resize(self._bits, grown)
        self._at = np.resize(self._at, grown)
        self._xor = np.zeros(grown, dtype=np.uint64)
        self._count = np.zeros(grown, dtype=np.uint8)
        self._near = np.zeros(grown, dtype=np.bool_)

    def append(self, frame_id: str, bits: int, captured_us: int, card: CardKey | None) -> None:
        """One row; `card` is its catalog key when it is an identified card."""
        n = len(self._frame_ids)
        self._reserve(n + 1)
        self._bits[n] = bits & _U64_MASK
        self._at[n] = captured_us
        self._frame_ids.append(frame_id)
        if card is not None:
            self._by_card.setdefault(card, []).append(n)

    def extend(self, other: PhashIndex) -> None:
        """Append every row of `other`, in its order."""
        n, k = len(self._frame_ids), len(other)
        self._reserve(n + k)
        self._bits[n : n + k] = other._bits[:k]
        self._at[n : n + k] = other._at[:k]
        self._frame_ids.extend(other._frame_ids)
        for card, positions in other._by_card.items():
            self._by_card.setdefault(card, []).extend(n + p for p in positions)

    def truncate(self, size: int) -> None:
        """Forget the rows appended after the index held `size` (their transaction failed)."""
        for card, positions in list(self._by_card.items()):
            while positions and positions[-1] >= size:
                positions.pop()
            if not positions:
                del self._by_card[card]
        del self._frame_ids[size:]

    def _candidates(self, probe: Probe) -> npt.NDArray[np.intp]:
        """Positions of the rows that look like the probe, captured at any time."""
        query = np.uint64(probe.bits & _U64_MASK)
        if probe.identified:
            same = self._by_card.get(probe.card) if probe.card is not None else None
            if not same:
                return np.zeros(0, dtype=np.intp)
            positions = np.array(same, dtype=np.intp)
            distance = popcount(self._bits[positions] ^ query)
            return positions[distance <= SAME_CARD_DISTANCE]
        n = len(self._frame_ids)
        xor, count, near = self._xor[:n], self._count[:n], self._near[:n]
        np.bitwise_xor(self._bits[:n], query, out=xor)
        if NUMPY_POPCOUNT:
            np.bitwise_count(xor, out=count)
        else:
            count[:] = popcount_by_bytes(xor)
        np.less_equal(count, LOOKALIKE_DISTANCE, out=near)
        return np.flatnonzero(near)

    def relatives(self, probe: Probe) -> Relatives:
        found = self._candidates(probe)
        if not found.size:  # most frames: nothing looks like them
            return Relatives(None, [])
        at = self._at[found]
        # frames captured at the very same instant are never each other's re-capture
        before = found[at < probe.captured_us]
        earliest = None
        if before.size:
            times = self._at[before]
            first = before[times == int(np.min(times))]
            earliest = min(self._frame_ids[int(i)] for i in first)
        after = found[at > probe.captured_us]
        return Relatives(earliest, [self._frame_ids[int(i)] for i in after])
