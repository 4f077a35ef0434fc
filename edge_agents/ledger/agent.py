"""Ledger agent: every result stored once, then acknowledged to the capture station.

A result is inventory only for a frame its station announced (FrameAnnouncement, which
only the station's broker user may publish) with the same sha256; any other is stored as
suspect, with the reason, and acknowledged all the same (a station whose announcement is
late stops resending), but never counted. An announcement arriving after its result makes
the suspect row trusted (recording.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from framewire.edge_agents.ledger.opinions import Compared
from framewire.edge_agents.ledger.recording import Announced, Recorded, Written
from framewire.edge_agents.ledger.settings import LedgerSettings
from framewire.edge_agents.ledger.store import newest_backup
from framewire.edge_agents.ledger.stores import Ledger, LedgerUnavailable, open_ledger
from framewire.edge_agents.runtime import (
    AgentRuntime,
    AgentSpec,
    CommandError,
    Inbound,
    Lane,
    Receive,
    Send,
)
from framewire.edge_agents.runtime.batching import Batcher
from framewire.edge_agents.runtime.commands import CommandResult, Scalar
from framewire.edge_agents.runtime.homeassistant import Fact, StoredFacts
from framewire.schemas import (
    ErrorKind,
    FrameAnnouncement,
    InferenceResult,
    LedgerAck,
    MessageError,
    Opinion,
    check_identifier,
    encode_json,
)
from framewire.schemas.channels import ACKS, ANNOUNCEMENTS, RESULTS, SHADOW

logger = logging.getLogger(__name__)
T = TypeVar("T")

# results and announcements committed together, at most: a burst shares one transaction
# (one fsync), and each result is acknowledged only once its transaction is on disk
COMMIT_BATCH = 256

SPEC = AgentSpec(
    kind="ledger",
    receives=(
        Receive(RESULTS, "Every result, stored once; acknowledged once committed.", "results"),
        Receive(
            ANNOUNCEMENTS,
            "The frames each station vouches for: only their results are inventory.",
            "announcements",
        ),
        Receive(
            SHADOW,
            "Shadow agents' readings: kept beside the results, compared, never inventory.",
            "opinions",
        ),
    ),
    sends=(
        Send(ACKS, "Sent once the result is committed (or was already in the ledger)."),
        Send(RESULTS, "A ledgered result again, on request (replay), for watchers."),
    ),
    lanes=(
        Lane(
            "results",
            capacity=2 * COMMIT_BATCH,
            workers=COMMIT_BATCH,
            summary="results waiting for their group commit",
        ),
        Lane(
            "announcements",
            capacity=2 * COMMIT_BATCH,
            workers=COMMIT_BATCH,
            summary="announcements waiting for their group commit (the results' commit)",
        ),
        Lane(
            "opinions",
            capacity=2 * COMMIT_BATCH,
            workers=COMMIT_BATCH,
            summary="shadow readings waiting for their group commit",
        ),
    ),
    counters={
        "results.ledgered": "results stored as inventory (their station announced them)",
        "results.suspect": "results stored as suspect, not inventory: no station announced "
        "the frame, or not with that sha256",
        "results.trusted_late": "suspect results made inventory by an announcement that came "
        "after them",
        "announcements": "frames announced by their station (resends' included)",
        "results.recaptures": "stored results that are another capture of a ledgered card",
        "results.duplicate": "results already in the ledger (a resend), acknowledged again",
        "ledger.write_failures": "results not stored: the database could not be written",
        "ledger.commits": "transactions committed (each holds one or more results)",
        "shadow.agreed": "shadow readings that agree with the frame's result",
        "shadow.disagreed": "shadow readings that do not agree with the frame's result",
        "shadow.unmatched": "shadow readings stored before the frame's result",
    },
    commands={
        "replay": "publish a ledgered result again (frame_id=...)",
        "backup": "back the ledger up now",
    },
)


class LedgerAgent:
    def __init__(self, settings: LedgerSettings, runtime: AgentRuntime, store: Ledger):
        self.settings = settings
        self.runtime = runtime
        self.store = store
        self._commits: Batcher[InferenceResult | FrameAnnouncement, Written] = Batcher(
            self._commit, max_size=COMMIT_BATCH
        )
        self._opinions: Batcher[Opinion, Compared] = Batcher(
            self.store.record_opinions, max_size=COMMIT_BATCH
        )
        runtime.details.update(ledger=store.location)
        runtime.count_throughput("results.ledgered")
        # from the ledger itself, so a restart does not start them again from 0
        self.stored = StoredFacts(runtime, self._counts, self._last_backup)
        self.stored.count(
            "ledgered", "Results ledgered", unit="results", state_class="total_increasing"
        )
        self.stored.count(
            "recaptures", "Re-captures found", unit="frames", state_class="total_increasing"
        )
        self.stored.timestamp("last_backup", "Last backup", entity_category="diagnostic")
        self.latency = runtime.metrics.histogram(
            "framewire_capture_to_ledger_seconds", "From the camera writing a file to its row"
        ).labels(agent=runtime.agent_id)
        runtime.command("replay", self.replay)
        if not store.backs_up_itself:  # a database server is backed up its own way
            runtime.command("backup", self._backup_now)

    async def _counts(self) -> dict[str, Fact]:
        rows, recaptures = await self.store.totals()
        return {"ledgered": rows, "recaptures": recaptures}

    async def _last_backup(self) -> dict[str, Fact]:
        backed_up = await asyncio.to_thread(newest_backup, self.settings.backup_path)
        return {"last_backup": backed_up.isoformat() if backed_up else None}

    async def _backup_now(self, args: dict[str, Scalar]) -> CommandResult:
        keep = self.settings.backup_keep or 1
        path = await self.store.backup(self.settings.backup_path, keep=keep)
        await self.stored.refresh()
        return f"backed up to {path}", {"path": str(path)}

    async def backup(self) -> str:
        """Online backup (SQLite backup API: consistent while the agent writes), keeping the
        newest `backup_keep` copies."""
        path = await self.store.backup(self.settings.backup_path, keep=self.settings.backup_keep)
        await self.stored.refresh()  # the last backup, and a full recount once a night
        return f"backed up to {path}"

    async def replay(self, args: dict[str, Scalar]) -> CommandResult:
        """Publish a ledgered result again on its results topic (for watchers and
        dashboards); the ledger itself keeps its row as it is."""
        frame_id = check_identifier(str(args.get("frame_id") or ""), "frame_id")
        stored = await self.store.result(frame_id)
        if stored is None:
            raise CommandError(f"frame {frame_id} is not in the ledger")
        await self.runtime.send(RESULTS, stored.station, encode_json(stored))
        return f"replayed frame {frame_id}", {"station": stored.station}

    async def _commit(self, items: list[InferenceResult | FrameAnnouncement]) -> list[Written]:
        written = await self.store.write_many(items)
        self.runtime.count("ledger.commits")
        return written

    async def _write(self, item: InferenceResult | FrameAnnouncement) -> Written:
        return await self._guarded(self._commits.submit(item))

    async def _guarded(self, write: Awaitable[T]) -> T:
        try:
            written = await write
        except LedgerUnavailable as err:
            # A full or read-only disk: stay up and say so. The result is not acknowledged,
            # so the capture station resends its frame and nothing is lost.
            self.runtime.count("ledger.write_failures")
            if self.runtime.degraded_reason is None:
                logger.error("cannot write the ledger %s: %s", self.store.location, err)
            self.runtime.set_degraded(
                f"cannot write the ledger database ({err}); results are not acknowledged "
                "and capture stations resend them; retrying with each result"
            )
            await self.runtime.publish_status()
            raise MessageError(ErrorKind.PROCESSING_ERROR, f"not ledgered: {err}") from None
        if self.runtime.degraded_reason is not None:
            logger.warning("the ledger database writes again (%s)", self.store.location)
            self.runtime.set_degraded(None)
        return written

    async def on_shadow(self, message: Inbound[Opinion]) -> None:
        """A shadow reading: stored and compared, acknowledged to the broker only; it never
        touches the results or the station."""
        compared = await self._guarded(self._opinions.submit(message.value))
        if compared != "repeat":
            self.runtime.count(f"shadow.{compared}")

    async def on_announcement(self, message: Inbound[FrameAnnouncement]) -> None:
        announced = await self._write(message.value)
        assert isinstance(announced, Announced)
        self.runtime.count("announcements")
        if announced.conflict is not None:
            logger.warning("suspect result kept as suspect: %s", announced.conflict)
        if announced.trusted is not None:
            self.runtime.count("results.trusted_late")
            self._count_inventory(announced.duplicate_of)
            logger.info(
                "frame %s from %s announced after its result: now inventory",
                announced.trusted,
                message.value.station,
            )

    def _count_inventory(self, duplicate_of: str | None) -> None:
        self.runtime.count("results.ledgered")
        self.stored.add("ledgered")
        if duplicate_of:
            self.runtime.count("results.recaptures")
            self.stored.add("recaptures")

    async def on_result(self, message: Inbound[InferenceResult]) -> None:
        result = message.value
        recorded = await self._write(result)
        assert isinstance(recorded, Recorded)
        if recorded.contradicted:
            # its station announced the frame otherwise: no acknowledgement, so the station
            # resends it and the genuine result takes the suspect row's place
            if recorded.inserted:
                self.runtime.count("results.suspect")
            logger.warning(
                "result for frame %s from %s (agent %s) held as suspect and not acknowledged: %s",
                result.frame_id,
                result.station,
                result.agent_id,
                recorded.suspect,
            )
            return
        if recorded.inserted and recorded.suspect is not None:
            self.runtime.count("results.suspect")
            logger.warning(
                "result for frame %s from %s (agent %s) stored as suspect, not inventory: %s",
                result.frame_id,
                result.station,
                result.agent_id,
                recorded.suspect,
            )
        elif recorded.inserted:
            if recorded.replaced_suspect is not None:
                logger.warning(
                    "frame %s: its announced result replaced a suspect one (%s)",
                    result.frame_id,
                    recorded.replaced_suspect,
                )
            self._count_inventory(recorded.duplicate_of)
            self.latency.observe(
                max(0.0, (recorded.ledgered_at - result.captured_at).total_seconds())
            )
            card = result.card
            logger.info(
                "ledgered %s from %s: %s%s",
                result.frame_id,
                result.station,
                f"{card.status} {card.card_name or ''}" if card else result.status,
                f" (re-capture of {recorded.duplicate_of})" if recorded.duplicate_of else "",
            )
        else:
            self.runtime.count("results.duplicate")
            logger.debug("frame %s already in the ledger", result.frame_id)
        ack = LedgerAck(
            frame_id=result.frame_id,
            station=result.station,
            ledgered_at=recorded.ledgered_at,
            duplicate=not recorded.inserted,
            duplicate_of=recorded.duplicate_of,
            result_status=recorded.status,
        )
        await self.runtime.send(ACKS, result.station, encode_json(ack))


async def run(settings: LedgerSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the ledger agent until `stop` is set or SIGTERM/SIGINT arrives."""
    async with open_ledger(settings.ledger_url, password=settings.database_password()) as store:
        await serve(settings, store, stop=stop)


async def serve(
    settings: LedgerSettings, store: Ledger, *, stop: asyncio.Event | None = None
) -> None:
    """`run` on a ledger already open (a caller that wants to reach it)."""
    runtime = AgentRuntime(settings, SPEC, persistent=True)
    agent = LedgerAgent(settings, runtime, store)
    await agent.stored.refresh()
    runtime.receive(RESULTS, agent.on_result)
    runtime.receive(ANNOUNCEMENTS, agent.on_announcement)
    runtime.receive(SHADOW, agent.on_shadow)
    if settings.backup_keep > 0 and not store.backs_up_itself:
        runtime.schedule(
            "backup",
            agent.backup,
            trigger="cron",
            hour=settings.backup_hour,
            minute=settings.backup_minute,
        )
    await runtime.run({}, stop=stop)
