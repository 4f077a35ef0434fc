"""The card recogniser pipeline stage: OCR, parse, match against the catalog."""

from __future__ import annotations

from framewire.inference_agent.cards.catalog import CatalogSource
from framewire.inference_agent.cards.matcher import CardMatcher, Match
from framewire.inference_agent.cards.ocr import CardOcr
from framewire.inference_agent.stages import FrameWork
from framewire.schemas import CardCandidate, CardRecognition


def to_recognition(match: Match, ocr_text: list[str]) -> CardRecognition:
    best = match.best
    card = best.card if best is not None and match.status != "unknown" else None
    metadata = dict(card.metadata) if card else {}
    return CardRecognition(
        status=match.status,
        card_name=card.name if card else None,
        set_name=card.set_name if card else None,
        card_number=card.number if card else None,
        rarity=card.rarity if card else None,
        market_price=card.market_price if card else None,
        hp=match.hp,
        confidence=best.confidence if best else 0.0,
        ocr_text=ocr_text,
        candidates=[
            CardCandidate(
                card_name=c.card.name,
                set_name=c.card.set_name,
                card_number=c.card.number,
                confidence=c.confidence,
            )
            for c in match.candidates
        ],
        metadata=metadata,
        review_reason=match.reason,
    )


class RecognizeCard:
    name = "recognize_card"

    def __init__(self, ocr: CardOcr, catalog: CatalogSource, matcher: CardMatcher) -> None:
        self.ocr = ocr
        self.catalog = catalog
        self.matcher = matcher

    @property
    def generation(self) -> int:
        """Changes when the catalog is reloaded, so cached results are not reused across it."""
        return self.catalog.loads

    def run(self, frame: FrameWork) -> None:
        assert frame.image is not None
        lines = self.ocr.read(frame.image)
        match = self.matcher.match(self.catalog.get(), lines)
        frame.card = to_recognition(match, [line.text for line in lines])
