"""Ledger agent: every result stored once, then acknowledged to the capture station."""

from __future__ import annotations

import asyncio
import logging

import aiomqtt

from edge_agents.ledger.settings import LedgerSettings
from edge_agents.ledger.store import LedgerStore
from edge_agents.runtime import AgentRuntime
from schemas import (
    ErrorKind,
    InferenceResult,
    LedgerAck,
    MessageError,
    decode_json,
    encode_json,
)

logger = logging.getLogger(__name__)


class LedgerAgent:
    def __init__(self, runtime: AgentRuntime, store: LedgerStore) -> None:
        self.runtime = runtime
        self.store = store
        runtime.details.update(ledger=str(store.path))

    async def on_result(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        result = decode_json(InferenceResult, payload)
        station = self.runtime.topics.segment(message.topic.value, 1)
        if station != result.station:
            raise MessageError(
                ErrorKind.SCHEMA_INVALID,
                f"result for station {result.station!r} arrived on the topic of {station!r}",
            )
        recorded = await self.store.record(result)
        if recorded.inserted:
            self.runtime.counters["results.ledgered"] += 1
            if recorded.duplicate_of:
                self.runtime.counters["results.recaptures"] += 1
            card = result.card
            logger.info(
                "ledgered %s from %s: %s%s",
                result.frame_id,
                station,
                f"{card.status} {card.card_name or ''}" if card else result.status,
                f" (re-capture of {recorded.duplicate_of})" if recorded.duplicate_of else "",
            )
        else:
            self.runtime.counters["results.duplicate"] += 1
            logger.debug("frame %s already in the ledger", result.frame_id)
        ack = LedgerAck(
            frame_id=result.frame_id,
            station=result.station,
            ledgered_at=recorded.ledgered_at,
            duplicate=not recorded.inserted,
            duplicate_of=recorded.duplicate_of,
            result_status=recorded.status,
        )
        await self.runtime.publish(self.runtime.topics.acks(result.station), encode_json(ack))


async def run(settings: LedgerSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the ledger agent until `stop` is set or SIGTERM/SIGINT arrives."""
    runtime = AgentRuntime(settings, "ledger", persistent=True)
    async with LedgerStore(settings.ledger_path) as store:
        agent = LedgerAgent(runtime, store)
        runtime.subscribe(runtime.topics.all_results(), agent.on_result)
        await runtime.run({}, stop=stop)
