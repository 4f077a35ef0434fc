"""Capture agent: every image written into the capture folder becomes exactly one frame.

Files are read, never moved, rewritten or deleted. Each frame is recorded in the state
database before it is first published and stays pending until the ledger acknowledges it;
until then it is resent with backoff (same frame id), so a frame lost anywhere downstream
is sent again, and the ledger's idempotency keeps it from being counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt

from edge_agents.capture.inspect import FrameRejectedError, Inspection, inspect_image, read_bounded
from edge_agents.capture.settings import CaptureSettings
from edge_agents.capture.state import CaptureState, FileVersion, FrameRow
from edge_agents.capture.watcher import FolderWatcher
from edge_agents.runtime import AgentRuntime
from edge_agents.runtime.commands import CommandResult, Scalar
from edge_agents.runtime.homeassistant import status_sensor
from schemas import (
    ErrorKind,
    FrameMeta,
    InferenceResult,
    LedgerAck,
    MessageError,
    decode_json,
    frame_properties,
    new_frame_id,
)

logger = logging.getLogger(__name__)


class CaptureAgent:
    def __init__(self, settings: CaptureSettings, runtime: AgentRuntime, state: CaptureState):
        self.settings = settings
        self.runtime = runtime
        self.state = state
        self.root = settings.watch_dir.resolve()
        self.watcher = FolderWatcher(
            self.root,
            settle=settings.settle_seconds,
            rescan_interval=settings.rescan_interval,
            force_polling=settings.force_polling,
        )
        self.in_flight = 0
        self.paused = False
        self._wake = asyncio.Event()
        runtime.gauge("watcher_pending", lambda: self.watcher.pending)
        runtime.gauge("in_flight", lambda: self.in_flight)
        runtime.details.update(station=settings.station, watch_dir=str(self.root), paused=False)
        runtime.count_throughput("frames.published")
        runtime.entities += [
            status_sensor(
                "ledgered",
                "Frames ledgered",
                "{{ value_json.counters['frames.ledgered'] | default(0) }}",
                state_class="total_increasing",
            ),
            status_sensor(
                "quarantined",
                "Frames quarantined",
                "{{ value_json.counters['frames.quarantined'] | default(0) }}",
                state_class="total_increasing",
            ),
        ]
        runtime.command("pause", self.pause)
        runtime.command("resume", self.resume)
        runtime.command("prune", self._prune_now)

    async def _prune_now(self, args: dict[str, Scalar]) -> CommandResult:
        return await self.prune(), {}

    async def pause(self, args: dict[str, Scalar]) -> CommandResult:
        """Stop sending frames; new files are still recorded, so nothing is lost."""
        self.paused = True
        self.runtime.details["paused"] = True
        return "capture paused: new files are recorded and sent on resume", {}

    async def resume(self, args: dict[str, Scalar]) -> CommandResult:
        self.paused = False
        self.runtime.details["paused"] = False
        self._wake.set()
        return "capture resumed", {}

    async def prune(self) -> str:
        """Forget ledgered or quarantined frames older than `prune_after_days` whose file has
        left the capture folder (while a file is there, its row is what keeps it from being
        sent twice)."""
        cutoff = time.time() - self.settings.prune_after_days * 86400
        removed = await self.state.prune(cutoff, self.root)
        self.runtime.counters["state_rows_pruned"] += removed
        return f"pruned {removed} row(s)"

    # --- intake ----------------------------------------------------------------------------
    async def watch(self) -> None:
        logger.info("watching %s for frames of station %s", self.root, self.settings.station)
        await self.ingest_all(aiter(self.watcher))

    async def ingest_all(self, source: AsyncIterator[tuple[Path, FileVersion]]) -> None:
        async for path, version in source:
            await self.ingest(path, version)

    def _examine(self, path: Path) -> Inspection:
        return inspect_image(read_bounded(path, self.settings.limits), self.settings.limits)

    async def ingest(self, path: Path, version: FileVersion) -> None:
        if await self.state.knows(version):
            return
        now = time.time()
        frame_id = new_frame_id()
        try:
            found = await asyncio.to_thread(self._examine, path)
        except FileNotFoundError:
            return
        except FrameRejectedError as err:
            await self.state.record(
                frame_id,
                version,
                sha256=None,
                state="quarantined",
                reason=err.reason,
                error_kind=err.kind.value,
                now=now,
            )
            self.runtime.counters["frames.quarantined"] += 1
            await self.runtime.dead_letter(
                err.kind, err.reason, source_name=version.relpath, frame_id=frame_id
            )
            return
        except OSError as err:
            logger.warning("cannot read %s yet (%s); will look again", path, err)
            return
        row = await self.state.record(
            frame_id, version, sha256=found.sha256, content_type=found.content_type, now=now
        )
        if row is None:
            logger.debug("%s changed on disk but not in content; nothing new", version.relpath)
            return
        self.runtime.counters["frames.seen"] += 1
        logger.info("frame %s #%d from %s", row.frame_id, row.seq, row.relpath)
        self._wake.set()

    def wake(self) -> None:
        """Look for frames to send now."""
        self._wake.set()

    # --- sending ---------------------------------------------------------------------------
    async def publish_loop(self) -> None:
        while True:
            await self.runtime.connected.wait()
            self._wake.clear()
            if self.paused:
                await self._wake.wait()
                continue
            due, self.in_flight = await self.state.due(time.time(), self.settings.max_in_flight)
            try:
                for row in due:
                    await self.send(row)
            except aiomqtt.MqttError as err:
                logger.info("sending paused: %s", err)
                continue
            next_due = await self.state.next_due()
            timeout = None if next_due is None else max(0.05, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _retry_delay(self, attempt: int) -> float:
        delay = self.settings.ack_timeout * 2.0 ** (attempt - 1)
        return min(self.settings.resend_backoff_max, delay)

    async def send(self, row: FrameRow) -> None:
        now = time.time()
        if row.attempts >= self.settings.max_attempts:
            reason = (
                f"no acknowledgement from the ledger after {row.attempts} attempts "
                "(max_attempts); is the inference agent or the ledger running?"
            )
            await self._quarantine(row, ErrorKind.UNDELIVERABLE, reason)
            return
        payload, problem = await asyncio.to_thread(self._read_original, row)
        if payload is None:
            await self._quarantine(
                row,
                ErrorKind.SOURCE_CHANGED,
                f"the original file can no longer be read as captured ({problem}); "
                "new content in that file is captured as a new frame",
            )
            return
        assert row.sha256 is not None and row.content_type is not None
        attempt = row.attempts + 1
        meta = FrameMeta(
            frame_id=row.frame_id,
            station=self.settings.station,
            seq=row.seq,
            captured_at=row.captured_at,
            sha256=row.sha256,
            content_type=row.content_type,
            size=len(payload),
            source_name=row.relpath,
            attempt=attempt,
        )
        await self.runtime.publish(
            self.runtime.topics.frames(self.settings.station),
            payload,
            qos=1,
            properties=frame_properties(meta),
        )
        await self.state.mark_published(
            row.frame_id, attempt, now + self._retry_delay(attempt), now
        )
        self.runtime.counters["frames.published" if attempt == 1 else "frames.resent"] += 1

    def _read_original(self, row: FrameRow) -> tuple[bytes | None, str]:
        try:
            data = (self.root / row.relpath).read_bytes()
        except OSError as err:
            return None, str(err)
        if hashlib.sha256(data).hexdigest() != row.sha256:
            return None, "its content changed"
        return data, ""

    async def _quarantine(self, row: FrameRow, kind: ErrorKind, reason: str) -> None:
        await self.state.quarantine(row.frame_id, kind.value, reason, time.time())
        self.runtime.counters["frames.quarantined"] += 1
        await self.runtime.dead_letter(kind, reason, source_name=row.relpath, frame_id=row.frame_id)

    # --- what comes back -------------------------------------------------------------------
    async def on_result(self, message: aiomqtt.Message) -> None:
        result = decode_json(InferenceResult, _payload(message))
        before = await self.state.advance(result.frame_id, "inferred", time.time())
        if before is None:
            raise MessageError(
                ErrorKind.UNKNOWN_FRAME,
                f"result for frame {result.frame_id}, which station "
                f"{self.settings.station} never sent",
            )

    async def on_ack(self, message: aiomqtt.Message) -> None:
        ack = decode_json(LedgerAck, _payload(message))
        before = await self.state.advance(ack.frame_id, "ledgered", time.time())
        if before is None:
            self.runtime.counters["acks.unknown"] += 1
            return
        if before != "ledgered":
            self.runtime.counters["frames.ledgered"] += 1
            self._wake.set()


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload).encode()


async def run(settings: CaptureSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the capture agent until `stop` is set or SIGTERM/SIGINT arrives."""
    runtime = AgentRuntime(settings, "capture", persistent=True)
    async with CaptureState(settings.state_path) as state:
        agent = CaptureAgent(settings, runtime, state)
        runtime.subscribe(runtime.topics.acks(settings.station), agent.on_ack)
        runtime.subscribe(runtime.topics.results(settings.station), agent.on_result)
        runtime.schedule("prune", agent.prune, trigger="cron", hour=settings.prune_hour, jitter=600)
        await runtime.run({"watch": agent.watch, "publish": agent.publish_loop}, stop=stop)
