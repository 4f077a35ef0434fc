"""From OCR lines to a catalog card: parse name, number and HP, then fuzzy-match.

Tuned so that a wrong `identified` is rarer than a `needs_review`: a card is identified only
when its name reads clearly, its printed number agrees, and no other card comes close.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rapidfuzz import fuzz, process

from inference_agent.cards.catalog import Catalog, CatalogCard, normalise

_NUMBER = re.compile(r"([0-9OoIl|SB]{1,4})\s*/\s*([0-9OoIl|SB]{1,4})")
_HP = re.compile(r"(?:HP\s*([0-9]{2,3}))|(?:([0-9]{2,3})\s*HP)", re.IGNORECASE)
_DIGIT_FIXES = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "|": "1", "S": "5", "B": "8"})


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


@dataclass(frozen=True)
class Match:
    status: Literal["identified", "needs_review", "unknown"]
    best: Candidate | None
    candidates: list[Candidate]
    numbers: list[tuple[int, int]]
    hp: int | None


def read_numbers(lines: list[OcrLine]) -> list[tuple[int, int]]:
    found = []
    for line in lines:
        for a, b in _NUMBER.findall(line.text):
            try:
                found.append((int(a.translate(_DIGIT_FIXES)), int(b.translate(_DIGIT_FIXES))))
            except ValueError:
                continue
    return found


def read_hp(lines: list[OcrLine]) -> int | None:
    for line in lines:
        m = _HP.search(line.text.replace(" ", ""))
        if m:
            return int(m.group(1) or m.group(2))
    return None


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
        texts = [normalise(line.text) for line in lines if line.text.strip()]
        texts = [t for t in texts if t]
        numbers = read_numbers(lines)
        hp = read_hp(lines)
        pool: dict[int, CatalogCard] = {}
        for number in numbers:
            for card in catalog.by_number.get(number, []):
                pool[id(card)] = card
        keys = [c.key for c in catalog.cards]
        for text in texts:
            for _, _, index in process.extract(text, keys, scorer=fuzz.ratio, limit=5):
                card = catalog.cards[index]
                pool[id(card)] = card
        scored = sorted(
            (self._score(card, texts, numbers, hp) for card in pool.values()),
            key=lambda c: c.confidence,
            reverse=True,
        )
        best = scored[0] if scored else None
        plausible = best is not None and (
            best.confidence >= self.plausible
            or best.name_score >= 0.8
            or (best.number_score == 1.0 and best.name_score >= 0.5)
        )
        if best is None or not plausible:
            return Match("unknown", None, scored[:3], numbers, hp)
        runner_up = scored[1].confidence if len(scored) > 1 else 0.0
        # another card whose name reads better means name and number disagree: ask a person
        best_name = max(c.name_score for c in scored)
        clear = (
            best.confidence >= self.threshold
            and best.name_score >= self.min_name_score
            and best.name_score >= best_name - 0.05
            and best.number_score == 1.0
            and best.confidence - runner_up >= self.margin
        )
        return Match("identified" if clear else "needs_review", best, scored[:3], numbers, hp)

    @staticmethod
    def _score(
        card: CatalogCard, texts: list[str], numbers: list[tuple[int, int]], hp: int | None
    ) -> Candidate:
        name_score = max((fuzz.ratio(card.key, t) for t in texts), default=0.0) / 100
        if card.number_key is not None and card.number_key in numbers:
            number_score = 1.0
        elif not numbers:
            number_score = 0.4  # nothing legible: no evidence either way
        elif card.number_key is not None and any(n[1] == card.number_key[1] for n in numbers):
            number_score = 0.2  # same set size, another number
        else:
            number_score = 0.0
        set_score = (
            max((fuzz.ratio(card.set_key, t) for t in texts), default=0.0) / 100
            if card.set_key
            else 0.0
        )
        confidence = 0.55 * name_score + 0.35 * number_score + 0.10 * set_score
        card_hp = card.metadata.get("hp", "")
        if hp is not None and card_hp.isdigit() and int(card_hp) != hp:
            confidence -= 0.1  # printed HP disagrees with the catalog
        return Candidate(
            card=card,
            confidence=round(max(0.0, min(1.0, confidence)), 4),
            name_score=round(name_score, 4),
            number_score=number_score,
            set_score=round(set_score, 4),
        )
