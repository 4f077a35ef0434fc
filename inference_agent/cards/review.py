"""Why a card was not identified, said so a person can act on it: what was read, and which
catalog cards that fits ("name reads 'Galmor', number 049/120 is Galmor V (...)")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from framewire.inference_agent.cards.catalog import Catalog, CatalogCard
from framewire.inference_agent.cards.numbers import Fit
from framewire.inference_agent.cards.set_codes import CodesRead, code_key

if TYPE_CHECKING:
    from framewire.inference_agent.cards.matcher import Candidate

_LISTED = 3  # printings named in a reason; the rest are counted
_COUNTS = {2: "two", 3: "three"}


def describe(card: CatalogCard, *, rarity: bool = False, code: bool = False) -> str:
    """`Emberwing (Emberfall 025/165)`; with the rarity, or the set code, when that is what
    tells two apart (`Sol Ring (Karlov Vaults 123, KRV)`)."""
    tail = f", {card.rarity}" if rarity and card.rarity else ""
    if code and card.metadata.get("set_code"):
        tail += f", {card.metadata['set_code'].upper()}"
    return f"{card.name} ({card.set_name} {card.number}{tail})"


def review_reason(
    scored: Sequence[Candidate],
    catalog: Catalog,
    numbers: Sequence[str],
    hp: int | None,
    *,
    threshold: float,
    margin: float,
    min_name_score: float,
    codes: CodesRead | None = None,
) -> str:
    """Why the best candidate (`scored[0]`) is only `needs_review`; `numbers` are the
    readings that fit a catalog number or read like one (`133/200`), `codes` what could be
    a set code."""
    best = scored[0]
    name = repr(best.name_read) if best.name_read else "nothing"
    if best.number_fit == Fit.FULL:
        return _number_fits(
            scored,
            hp,
            codes or CodesRead(frozenset()),
            threshold=threshold,
            margin=margin,
            min_name=min_name_score,
        )
    by_number = [c for c in scored if c.number_fit == Fit.FULL]
    if by_number:
        other = by_number[0]
        return f"name reads {name}, number {other.number_read} is {describe(other.card)}"
    if best.number_fit == Fit.PARTIAL:
        partial = [c for c in scored if c.number_fit == Fit.PARTIAL and c.card.key == best.card.key]
        if len(partial) == 1:
            card = best.card
            return (
                f"number reads only {best.number_read!r}, short of {card.number} "
                f"({card.name}, {card.set_name})"
            )
        return (
            f"number reads only {best.number_read!r}, which fits {len(partial)} printings: "
            f"{_listing([c.card for c in partial], with_name=True)}"
        )
    printings = catalog.by_name.get(best.card.key) or [best.card]
    if numbers:
        return (
            f"name reads {name}, but number {numbers[0]} is not one of its printings "
            f"({_listing(printings)})"
        )
    return f"number unreadable; name reads {name} ({_listing(printings)})"


def unknown_reason(best: Candidate | None, read_text: bool) -> str:
    if not read_text:
        return "no text read"
    if best is None:
        return "nothing read matches a catalog card"
    return f"no catalog card fits; the closest, {describe(best.card)}, scores {best.confidence:.2f}"


def _number_fits(
    scored: Sequence[Candidate],
    hp: int | None,
    codes: CodesRead,
    *,
    threshold: float,
    margin: float,
    min_name: float,
) -> str:
    best = scored[0]
    rivals = [
        c
        for c in scored[1:]
        if c.number_fit == Fit.FULL and best.confidence - c.confidence < margin
    ]
    if rivals:
        fitting = [best, *rivals]
        same_name = all(c.card.key == best.card.key for c in fitting)
        count = _COUNTS.get(len(fitting), str(len(fitting)))
        what = "printings" if same_name else "cards"
        twins = len({(c.card.set_key, c.card.number) for c in fitting}) < len(fitting)
        by_code = _told_by_code(fitting)
        listed = " and ".join(
            describe(c.card, rarity=twins, code=by_code) for c in fitting[:_LISTED]
        )
        more = f" and {len(fitting) - _LISTED} more" if len(fitting) > _LISTED else ""
        return f"{count} {what} fit: {listed}{more}{_code_said(fitting, codes) if by_code else ''}"
    name_best = max(scored, key=lambda c: (c.name_score, c.confidence))
    if best.name_score < min_name or name_best.name_score > best.name_score + 0.05:
        read = repr(best.name_read) if best.name_read else "nothing"
        return f"name reads {read}, number {best.number_read} is {describe(best.card)}"
    if len(scored) > 1 and best.confidence - scored[1].confidence < margin:
        other = scored[1]
        return (
            f"another card comes close: {describe(other.card)} scores {other.confidence:.2f} "
            f"against {best.confidence:.2f}"
        )
    if best.code_fit is False:
        code = best.card.metadata.get("set_code", "").upper()
        return (
            f"set code reads {best.code_read!r}, the catalog has {code} for {describe(best.card)}"
        )
    card_hp = best.card.metadata.get("hp", "")
    if hp is not None and card_hp.isdigit() and int(card_hp) != hp:
        return f"HP reads {hp}, the catalog has {card_hp} for {describe(best.card)}"
    return (
        f"confidence {best.confidence:.2f} is under the {threshold:.2f} threshold "
        f"(confidence_threshold) for {describe(best.card)}"
    )


def _told_by_code(fitting: Sequence[Candidate]) -> bool:
    """Whether the printings have set codes of their own, which the card prints."""
    codes = [code_key(c.card.metadata.get("set_code", "")) for c in fitting]
    return all(codes) and len(set(codes)) == len(codes)


def _code_said(fitting: Sequence[Candidate], codes: CodesRead) -> str:
    """What the set code read says of printings that only it can tell apart."""
    if sum(c.code_fit is True for c in fitting) > 1:
        return "; the set code read fits more than one"
    if codes.printed:
        return f"; set code reads {codes.printed[0]!r}"
    return "; set code unreadable"


def _listing(cards: Sequence[CatalogCard], *, with_name: bool = False) -> str:
    def one(card: CatalogCard) -> str:
        return describe(card) if with_name else f"{card.set_name} {card.number}"

    named = ", ".join(one(c) for c in cards[:_LISTED])
    return named + (f" and {len(cards) - _LISTED} more" if len(cards) > _LISTED else "")
