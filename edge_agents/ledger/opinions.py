"""Shadow readings: what a second model says about the frames, beside what counted.

A shadow inference agent reads a copy of every frame with its own model and publishes an
`Opinion` (schemas/messages.py) on its station's shadow topic. The ledger keeps each one in
the `opinions` table, never in the results: a shadow reading is never inventory, never
acknowledged to a station. Comparing it with the result that counted (the same verdict and
the same card, or both not identified) says whether the new model could replace the old
one; `framewire shadow report` shows that and both models' speed.

The statements are written once, with `?` placeholders, for both databases
(`recording.LedgerSql`); the table's types mean the same to SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from framewire.edge_agents.ledger.recording import LedgerSql, Row
from framewire.schemas import Opinion, utc_now

TABLE = """CREATE TABLE IF NOT EXISTS opinions (
    frame_id      TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    role          TEXT NOT NULL,
    station       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    status        TEXT NOT NULL,
    card_status   TEXT,
    card_name     TEXT,
    set_name      TEXT,
    card_number   TEXT,
    confidence    DOUBLE PRECISION,
    processing_ms DOUBLE PRECISION NOT NULL,
    models        TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    PRIMARY KEY (frame_id, agent_id, role)
)"""

_COLUMNS = (
    "frame_id",
    "agent_id",
    "role",
    "station",
    "sha256",
    "status",
    "card_status",
    "card_name",
    "set_name",
    "card_number",
    "confidence",
    "processing_ms",
    "models",
    "received_at",
)
_INSERT = (
    f"INSERT INTO opinions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608 - constants
    " ON CONFLICT (frame_id, agent_id, role) DO NOTHING"
)
_SEEN = "SELECT 1 FROM opinions WHERE frame_id = ? AND agent_id = ? AND role = ?"
_COUNTED = "SELECT card_status, card_name, set_name, card_number FROM results WHERE frame_id = ?"
# a shadow reading beside the result that counted (none yet: NULLs)
# (every column named once: PostgreSQL's readers key rows by name)
SHADOW_ROWS = (
    "SELECT o.agent_id, o.frame_id, o.models, o.card_status, o.card_name, o.set_name,"
    " o.card_number, o.confidence, o.processing_ms, r.agent_id AS r_agent_id,"
    " r.card_status AS r_card_status, r.card_name AS r_card_name, r.set_name AS r_set_name,"
    " r.card_number AS r_card_number, r.confidence AS r_confidence, r.result"
    " FROM opinions o LEFT JOIN results r ON r.frame_id = o.frame_id"
    " WHERE o.role = 'shadow' ORDER BY o.agent_id, o.frame_id"
)

Compared = Literal["agreed", "disagreed", "unmatched", "repeat"]
Verdict = tuple[str | None, str | None, str | None, str | None]


def verdict(card_status: str | None, *card: str | None) -> Verdict:
    """What two readings must share to agree: the verdict, and the card when identified."""
    if card_status != "identified":
        return (card_status, None, None, None)
    name, set_name, number = card
    return (card_status, name, set_name, number)


def write(db: LedgerSql, opinions: Sequence[Opinion]) -> list[Compared]:
    """Store opinions in one transaction; for each, how it compares with the result that
    counted (`unmatched`: not ledgered yet; `repeat`: stored before)."""
    outcome: list[Compared] = []
    now = utc_now().isoformat()
    with db.write():
        for op in opinions:
            if db.one(_SEEN, (op.frame_id, op.agent_id, op.role)) is not None:
                outcome.append("repeat")
                continue
            db.many(_INSERT, [_values(op, now)])
            counted = db.one(_COUNTED, (op.frame_id,))
            if counted is None:
                outcome.append("unmatched")
            elif verdict(*counted) == op.verdict():
                outcome.append("agreed")
            else:
                outcome.append("disagreed")
    return outcome


def _values(op: Opinion, now: str) -> tuple[object, ...]:
    return (
        op.frame_id,
        op.agent_id,
        op.role,
        op.station,
        op.sha256,
        op.status,
        op.card_status,
        op.card_name,
        op.set_name,
        op.card_number,
        op.confidence,
        op.processing_ms,
        json.dumps(op.models, sort_keys=True),
        now,
    )


# --- the report ------------------------------------------------------------------------------
@dataclass
class Disagreement:
    frame_id: str
    counted: str
    shadow: str


@dataclass
class ShadowSummary:
    """One shadow agent's readings against the results that counted."""

    agent_id: str
    models: dict[str, str] = field(default_factory=dict)
    compared: int = 0
    agreed: int = 0
    unmatched: int = 0  # the frame has no result yet
    shadow_ms: list[float] = field(default_factory=list)
    counted_ms: list[float] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def disagreed(self) -> int:
        return self.compared - self.agreed

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def as_dict(self, *, disagreements: int) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "models": self.models,
            "compared": self.compared,
            "agreed": self.agreed,
            "disagreed": self.disagreed,
            "agreement": _round(self.agreement, 4),
            "not_yet_ledgered": self.unmatched,
            "shadow_ms_p50": _round(_median(self.shadow_ms), 1),
            "counted_ms_p50": _round(_median(self.counted_ms), 1),
            "speed_ratio": _round(_ratio(self.counted_ms, self.shadow_ms), 3),
            "disagreements": [vars(d) for d in self.disagreements[:disagreements]],
        }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(counted: list[float], shadow: list[float]) -> float | None:
    """How many times faster the shadow model reads a frame than the counted one (> 1:
    faster), from the medians."""
    a, b = _median(counted), _median(shadow)
    return a / b if a and b else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def describe(v: Verdict) -> str:
    status, name, set_name, number = v
    if status is None:
        return "no card reading"
    if status != "identified":
        return status.replace("_", " ")
    return f"{name} ({set_name} {number})"


def _pipeline_ms(result_json: object) -> float | None:
    try:
        stages = json.loads(str(result_json)).get("stages") or []
        return float(sum(s["ms"] for s in stages))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def summarise(rows: Iterable[Row]) -> list[ShadowSummary]:
    """Per shadow agent, from `SHADOW_ROWS`."""
    by_agent: dict[str, ShadowSummary] = {}
    for row in rows:
        agent, frame_id, models = row[0], row[1], row[2]
        summary = by_agent.get(agent)
        if summary is None:
            summary = by_agent[agent] = ShadowSummary(agent)
        summary.models = json.loads(models) if models else {}
        shadow = verdict(row[3], row[4], row[5], row[6])
        summary.shadow_ms.append(float(row[8]))
        if row[9] is None:  # no result for the frame yet
            summary.unmatched += 1
            continue
        counted = verdict(row[10], row[11], row[12], row[13])
        summary.compared += 1
        ms = _pipeline_ms(row[15])
        if ms is not None:
            summary.counted_ms.append(ms)
        if counted == shadow:
            summary.agreed += 1
        else:
            summary.disagreements.append(
                Disagreement(frame_id, describe(counted), describe(shadow))
            )
    return list(by_agent.values())
