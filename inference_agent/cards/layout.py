"""Where a card's identifying text is printed, and the geometry of text boxes on it.

Coordinates here are those of the *upright* card (or photo): x to the right, y down, text
reading left to right. A box is four corners, top-left, top-right, bottom-right,
bottom-left of its text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = np.ndarray  # float64, shape (4, 2)


@dataclass(frozen=True)
class Band:
    """A region of the upright card, in fractions of its width and height."""

    top: float
    bottom: float
    left: float = 0.0
    right: float = 1.0
    what: str = ""
    name: bool = False  # the card's name is printed here

    def holds(self, box: Box, width: float, height: float) -> bool:
        """Whether the box reaches into the band (its middle within the band's sides): a
        card rectified a little off still has its name and number read."""
        x = float(box[:, 0].mean())
        y0, y1 = float(box[:, 1].min()), float(box[:, 1].max())
        return (
            y0 <= self.bottom * height
            and y1 >= self.top * height
            and self.left * width <= x <= self.right * width
        )


# Pokemon-like cards: name (and HP) on top; set, number and rarity at the bottom. Magic
# prints its collector number bottom-left, inside the bottom band too; Yu-Gi-Oh! prints
# its set code on the right just under the artwork.
CARD_BANDS = (
    Band(0.0, 0.18, what="name, HP", name=True),
    Band(0.85, 1.0, what="number, set"),
    Band(0.70, 0.78, 0.45, 1.0, what="set code (Yu-Gi-Oh!)"),
)


def in_bands(box: Box, width: float, height: float, bands: tuple[Band, ...]) -> bool:
    return any(band.holds(box, width, height) for band in bands)


def quarter_turn(k: int, width: float, height: float) -> tuple[np.ndarray, float, float]:
    """The 3x3 transform turning a `width` x `height` picture k times 90 degrees
    clockwise, and the turned picture's size."""
    k %= 4
    if k == 0:
        return np.eye(3), width, height
    if k == 1:  # (x, y) -> (height - y, x)
        return np.array([[0, -1, height], [1, 0, 0], [0, 0, 1]], float), height, width
    if k == 2:
        return np.array([[-1, 0, width], [0, -1, height], [0, 0, 1]], float), width, height
    return np.array([[0, 1, 0], [-1, 0, width], [0, 0, 1]], float), height, width


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points (n, 2) through a 3x3 projective transform."""
    homogeneous = np.c_[points, np.ones(len(points))] @ matrix.T
    return np.asarray(homogeneous[:, :2] / homogeneous[:, 2:3])


def order_box(points: np.ndarray) -> Box:
    """A box's corners as top-left, top-right, bottom-right, bottom-left, for text that
    runs along its long side from left to right."""
    points = np.asarray(points, np.float64).reshape(4, 2)
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    points = points[np.argsort(angles)]  # clockwise on screen
    start = int(np.argmin(points.sum(axis=1)))
    return np.roll(points, -start, axis=0)


def box_size(box: Box) -> tuple[float, float]:
    """Width (along the text) and height of a box."""
    width = max(np.linalg.norm(box[1] - box[0]), np.linalg.norm(box[2] - box[3]))
    height = max(np.linalg.norm(box[3] - box[0]), np.linalg.norm(box[2] - box[1]))
    return float(width), float(height)


def reading_order(boxes: list[Box]) -> list[int]:
    """Indices of the boxes top to bottom, then left to right within a line of text."""
    if not boxes:
        return []
    heights = sorted(box_size(b)[1] for b in boxes)
    row = max(4.0, heights[len(heights) // 2] * 0.6)
    tops = [float(b[:, 1].min()) for b in boxes]
    lefts = [float(b[:, 0].min()) for b in boxes]
    order = sorted(range(len(boxes)), key=lambda i: tops[i])
    rows: list[list[int]] = []
    for i in order:
        if rows and tops[i] - tops[rows[-1][0]] < row:
            rows[-1].append(i)
        else:
            rows.append([i])
    return [i for r in rows for i in sorted(r, key=lambda i: lefts[i])]
