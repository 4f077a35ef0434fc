"""Finding the card in a photo: its outline as four corners.

On a scaled-down copy, the picture's straight edges are found as lines (`edges`); every
two pairs of roughly opposite lines make a quadrilateral, and those with a card's
proportions (63 x 88 mm, perspective allowed for) whose four sides really run along edges
are candidates. Working from lines rather than from shapes, a rounded corner, a thumb or
a glare over part of a side, or a busy background touching the card do not hide its
outline. Where the photo cuts the card off, its border is an edge too: the picture is
framed in the background's colour before edges are looked for (`edges.segments`).

The largest candidate wins, a side's part off the photo counting less than an edge. The
corners come back in card order (top-left, top-right, bottom-right, bottom-left) with the
top a short side, so a card lying sideways comes out portrait; whether it is then upright
or upside down is for its text to tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from framewire.inference_agent.cards import edges
from framewire.inference_agent.cards.edges import Line

WORK_SIDE = 400  # the outline is looked for on a copy this many pixels on its long side
MIN_AREA = 0.06  # a card smaller than this share of the photo is not looked for
MAX_AREA = 0.97  # a "card" as large as the photo is its border, not a card
ASPECT_RANGE = (0.5, 0.92)  # short/long side ratios accepted, perspective included
MIN_ANGLE, MAX_ANGLE = 55.0, 125.0  # corner angles, degrees
OPPOSITE_SIDES = math.radians(30)  # opposite sides differ in direction by at most this
NEIGHBOUR_SIDES = math.radians(45)  # neighbouring sides differ by at least this
MAX_LINES = 16  # the best-supported lines tried as sides
CORNER_MARGIN = 0.1  # corners may lie this share of the photo off it (a clipped card)
MIN_SIDE_SUPPORT = 0.7  # share of each side that runs along an edge (a thumb may cover some)
MIN_MEAN_SUPPORT = 0.9  # ... and over the four sides
# ... and next to each corner (the first samples along a side: ~8 % of it), so that a line
# running on past the card's corner to some parallel edge beyond does not make a side
CORNER_SAMPLES, MIN_CORNER_SUPPORT = 5, 0.6
OFF_PHOTO_QUALITY = 0.6  # how much a side's part off the photo counts, against an edge

Quad = np.ndarray  # float32, shape (4, 2): x, y per corner
_Sides = list[tuple[np.ndarray, np.ndarray]]  # per side: samples on an edge, off the photo


@dataclass(frozen=True)
class CardOutline:
    corners: Quad  # in the photo's pixels, card order (TL, TR, BR, BL), top side short
    area: float  # share of the photo the card covers
    support: float  # share of its outline that runs along edges (or off the photo)


def find_card(bgr: np.ndarray) -> CardOutline | None:
    """The card's outline in the photo, or None when no card-shaped outline is there."""
    h, w = bgr.shape[:2]
    if min(h, w) < 16:
        return None
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    rows = edges.segments(small)
    found = edges.lines(rows, min_length=0.05 * max(sh, sw), limit=MAX_LINES)
    quads, areas = _quads(found, sw, sh)
    best: tuple[float, Quad, float] | None = None  # score, corners, support
    for quad, area in zip(quads, areas, strict=True):
        if best is not None and area <= best[0]:
            break  # largest first, and a score is never above the area
        sides = _sides(quad, rows, sw, sh)
        if sides is None:
            continue
        shares = [float((real | off).mean()) for real, off in sides]
        if sum(shares) / 4 < MIN_MEAN_SUPPORT:
            continue
        # a side's part off the photo counts less than an edge; a gap in an edge (a thumb,
        # a glare) does not count against it once the quad has enough support
        quality = 1 - (1 - OFF_PHOTO_QUALITY) * sum(off.mean() for _, off in sides) / 4
        if best is None or area * quality > best[0]:
            best = (float(area * quality), quad, sum(shares) / 4)
    if best is None:
        return None
    _, quad, support = best
    area = float(cv2.contourArea(quad)) / (sw * sh)
    return CardOutline(order_card_corners(quad / scale), area, support)


def _sides(quad: Quad, rows: np.ndarray, width: int, height: int) -> _Sides | None:
    """Each side's coverage by edges, or None as soon as one side is too poorly covered,
    overall or near either end: a card's corner is where two covered sides meet, so a
    line running on past the card does not make a side."""
    sides = []
    for i in range(4):
        real, off = edges.coverage(quad[i], quad[(i + 1) % 4], rows, width, height)
        seen = real | off
        ends = min(seen[:CORNER_SAMPLES].mean(), seen[-CORNER_SAMPLES:].mean())
        if seen.mean() < MIN_SIDE_SUPPORT or ends < MIN_CORNER_SUPPORT:
            return None
        sides.append((real, off))
    return sides


def _quads(lines: list[Line], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Every card-shaped quadrilateral made of two pairs of roughly opposite lines, with
    corners on or near the picture: corners (n, 4, 2) and areas (n,), largest first."""
    angle = np.array([line.angle for line in lines])
    offset = np.array([line.offset for line in lines])
    c, s = np.cos(angle), np.sin(angle)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = c[:, None] * s[None, :] - s[:, None] * c[None, :]
        xs = (offset[:, None] * s[None, :] - offset[None, :] * s[:, None]) / det
        ys = (c[:, None] * offset[None, :] - c[None, :] * offset[:, None]) / det
    turn = np.abs(angle[:, None] - angle[None, :])
    turn = np.minimum(turn, math.pi - turn)
    first, second = np.triu_indices(len(lines), 1)
    opposite = turn[first, second] <= OPPOSITE_SIDES
    pa, pb = first[opposite], second[opposite]
    one, two = np.triu_indices(len(pa), 1)
    a, b, c2, d = pa[one], pb[one], pa[two], pb[two]
    keep = turn[a, c2] >= NEIGHBOUR_SIDES
    a, b, c2, d = a[keep], b[keep], c2[keep], d[keep]
    # corners where neighbouring sides meet, going round: (a, c), (c, b), (b, d), (d, a)
    corners = np.stack(
        [np.stack([xs[p, q], ys[p, q]], axis=-1) for p, q in ((a, c2), (c2, b), (b, d), (d, a))],
        axis=1,
    )
    margin = CORNER_MARGIN * max(width, height)
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(corners).all(axis=(1, 2))
        inside &= (corners[..., 0] >= -margin).all(axis=1)
        inside &= (corners[..., 0] <= width + margin).all(axis=1)
        inside &= (corners[..., 1] >= -margin).all(axis=1)
        inside &= (corners[..., 1] <= height + margin).all(axis=1)
    corners = corners[inside]
    shaped, areas = _card_shaped(corners, width * height)
    corners, areas = corners[shaped], areas[shaped]
    order = np.argsort(-areas)
    return corners[order].astype(np.float32), areas[order]


def _card_shaped(corners: np.ndarray, photo_area: float) -> tuple[np.ndarray, np.ndarray]:
    """Which quadrilaterals are convex, of a card's size, proportions and corner angles;
    and their areas."""
    sides = np.roll(corners, -1, axis=1) - corners  # side i runs from corner i to i + 1
    lengths = np.linalg.norm(sides, axis=2)
    cross = sides[:, :, 0] * np.roll(sides, -1, axis=1)[:, :, 1]
    cross -= sides[:, :, 1] * np.roll(sides, -1, axis=1)[:, :, 0]
    convex = (cross > 0).all(axis=1) | (cross < 0).all(axis=1)
    x, y = corners[..., 0], corners[..., 1]
    areas = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    across, along = (lengths[:, 0] + lengths[:, 2]) / 2, (lengths[:, 1] + lengths[:, 3]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(across, along) / np.maximum(across, along)
        # the angle at each corner, between the side coming in and the side going out
        cos = -(sides * np.roll(sides, -1, axis=1)).sum(axis=2)
        cos /= lengths * np.roll(lengths, -1, axis=1)
    angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    ok = convex & (lengths.min(axis=1) >= 8)
    ok &= (areas >= MIN_AREA * photo_area) & (areas <= MAX_AREA * photo_area)
    ok &= (ratio >= ASPECT_RANGE[0]) & (ratio <= ASPECT_RANGE[1])
    ok &= ((angles >= MIN_ANGLE) & (angles <= MAX_ANGLE)).all(axis=1)
    return ok, areas


def order_card_corners(quad: Quad) -> Quad:
    """Corners clockwise from the top-left, starting on a short side (the card's top)."""
    points = np.asarray(quad, np.float32).reshape(4, 2)
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    points = points[np.argsort(angles)]  # clockwise on screen: y grows downwards
    sides = [float(np.linalg.norm(points[(i + 1) % 4] - points[i])) for i in range(4)]
    start = 0 if sides[0] + sides[2] <= sides[1] + sides[3] else 1
    # of the two short sides, the upper one (then the left one) is taken as the top
    first, second = points[[start, start + 1]], points[[start + 2, (start + 3) % 4]]
    if (second[:, 1].mean(), second[:, 0].mean()) < (first[:, 1].mean(), first[:, 0].mean()):
        start += 2
    return np.ascontiguousarray(points[[(start + i) % 4 for i in range(4)]])
