"""Card recognition: OCR of the card, parsing, and matching against a catalog."""
