"""The straight edges of a picture, as evidence for where a card's sides are.

The line segment detector, run on each colour channel, follows where the gradient keeps
one direction, so printed texture, holo foil and noise give only short pieces, while a
card's side gives long ones (broken where a thumb or a glare lies over it). Pieces on one
line count together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MIN_SEGMENT = 4.0  # pixels: shorter edge segments are ignored
SAME_LINE_ANGLE = math.radians(3)  # segments within this angle ...
SAME_LINE_OFFSET = 3.0  # ... and this many pixels of each other lie on one line
EDGE_TOLERANCE = 2.5  # pixels an edge segment may be off a side and still support it
# where along a side its support is looked at: not the last 5 % at either end, where a
# card's corner is rounded (a radius of ~3 mm on a 63 mm side)
SAMPLES = np.linspace(0.05, 0.95, 60)
NEAR_BORDER = 8.0  # pixels; see `coverage`
NEAR_BORDER_SUPPORT = 0.4
FRAME = 6  # pixels of background shade put round the picture ...
PLAIN_RIM, PLAIN_RIM_SHARE = 18, 0.6  # ... when this share of its border is within this


@dataclass(frozen=True)
class Line:
    angle: float  # of the normal, radians in [0, pi)
    offset: float  # signed distance from the origin along the normal
    support: float  # total length of the edge segments on it

    @property
    def normal(self) -> np.ndarray:
        return np.array([math.cos(self.angle), math.sin(self.angle)])


def segments(bgr: np.ndarray) -> np.ndarray:
    """Straight edge segments of the picture, rows of (x0, y0, x1, y1), from each colour
    channel: a card and a background of one brightness still differ in hue.

    Where the picture's border runs mostly through a plain background, the picture is
    first framed in that background's shade: where the photo cuts a card off, the border
    becomes an edge, and where it runs through background it does not. (Framing a busy
    background would make the whole border an edge.)"""
    detector = cv2.createLineSegmentDetector()
    found = []
    for channel in cv2.split(bgr):
        rim = np.concatenate([channel[0], channel[-1], channel[:, 0], channel[:, -1]])
        shade = float(np.median(rim))
        plain = (np.abs(rim.astype(np.float64) - shade) <= PLAIN_RIM).mean() >= PLAIN_RIM_SHARE
        frame = FRAME if plain else 0
        if frame:
            channel = cv2.copyMakeBorder(
                channel, frame, frame, frame, frame, cv2.BORDER_CONSTANT, value=shade
            )
        lines = detector.detect(channel)[0]
        if lines is not None:
            found.append(lines.reshape(-1, 4).astype(np.float64) - frame)
    if not found:
        return np.zeros((0, 4), np.float64)
    rows = np.concatenate(found)
    return rows[_lengths(rows) >= MIN_SEGMENT]


def lines(rows: np.ndarray, *, min_length: float, limit: int) -> list[Line]:
    """The `limit` best-supported lines through the segments, strongest first. A line
    starts from a segment at least `min_length` long; pieces down to a quarter of that
    add to the line they lie on (shorter ones only count as coverage, see `coverage`)."""
    lengths = _lengths(rows)
    pieces = lengths >= min_length / 4
    rows, lengths = rows[pieces], lengths[pieces]
    angles = (np.arctan2(rows[:, 3] - rows[:, 1], rows[:, 2] - rows[:, 0]) + math.pi / 2) % math.pi
    middles = (rows[:, :2] + rows[:, 2:]) / 2
    n = len(rows)
    angle, cos, sin, offset, support = (np.empty(n) for _ in range(5))
    count = 0
    for i in np.argsort(-lengths):
        turn = np.abs(angles[i] - angle[:count])
        turn = np.minimum(turn, math.pi - turn)
        apart = np.abs(middles[i, 0] * cos[:count] + middles[i, 1] * sin[:count] - offset[:count])
        same = np.flatnonzero((turn <= SAME_LINE_ANGLE) & (apart <= SAME_LINE_OFFSET))
        if same.size:
            support[same[0]] += lengths[i]
        elif lengths[i] >= min_length:
            angle[count], cos[count], sin[count] = angles[i], np.cos(angles[i]), np.sin(angles[i])
            offset[count] = middles[i, 0] * cos[count] + middles[i, 1] * sin[count]
            support[count] = lengths[i]
            count += 1
    best = np.argsort(-support[:count])[:limit]
    return [Line(float(angle[j]), float(offset[j]), float(support[j])) for j in best]


def coverage(
    a: np.ndarray, b: np.ndarray, rows: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """For the samples along a-b: which lie on a segment running along it, and which
    others lie off the picture. A side that mostly runs along edges may also pass within
    NEAR_BORDER pixels of the border there: a card's edge just inside a photo that cuts
    it off lies that close to the border, and on a line of its own too short to find."""
    length = float(np.linalg.norm(b - a))
    direction = (b - a) / length
    normal = np.array([-direction[1], direction[0]])
    starts, ends = rows[:, :2] - a, rows[:, 2:] - a
    near = (np.abs(starts @ normal) <= EDGE_TOLERANCE) & (np.abs(ends @ normal) <= EDGE_TOLERANCE)
    s0, s1 = starts[near] @ direction / length, ends[near] @ direction / length
    lo, hi = np.minimum(s0, s1)[:, None] - 0.01, np.maximum(s0, s1)[:, None] + 0.01
    covered = ((lo <= SAMPLES) & (hi >= SAMPLES)).any(axis=0)
    x, y = (a + SAMPLES[:, None] * (b - a)).T
    slack = NEAR_BORDER if covered.mean() >= NEAR_BORDER_SUPPORT else 0.0
    off = (x < slack) | (x > width - 1 - slack) | (y < slack) | (y > height - 1 - slack)
    return covered, off & ~covered


def _lengths(rows: np.ndarray) -> np.ndarray:
    return np.asarray(np.hypot(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]))
