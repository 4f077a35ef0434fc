"""Capture agent: every image written into the capture folder becomes exactly one frame.

Files are read, never moved, rewritten or deleted. Each frame is recorded in the state
database before it is first published and stays pending until the ledger acknowledges it;
until then it is resent with backoff (same frame id), so a frame lost anywhere downstream
is sent again, and the ledger's idempotency keeps it from being counted twice.

Every file ends ledgered or quarantined with a reason a person can read: a file that
cannot be a frame (not an image, truncated, too large, not a regular file, unreadable, a
path too long) is quarantined when it is taken, and anything that goes wrong with one frame
while it is sent quarantines that frame, never the frames behind it. A state database that
cannot be written (disk full, read-only) makes the agent report itself degraded and wait
(guard.py), then go on where it stopped, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiomqtt

from framewire.edge_agents.capture.files import not_a_file, path_of, read_in_folder
from framewire.edge_agents.capture.guard import StateGuard
from framewire.edge_agents.capture.inspect import FrameRejectedError, Inspection, inspect_image
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.capture.state import CaptureState, FileVersion, FrameRow, FrameState
from framewire.edge_agents.capture.watcher import FolderWatcher
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
from framewire.edge_agents.runtime.presence import AgentPresence
from framewire.schemas import (
    ErrorKind,
    FrameAnnouncement,
    FrameMeta,
    InferenceResult,
    LedgerAck,
    MessageError,
    encode_json,
    frame_properties,
    new_frame_id,
)
from framewire.schemas.channels import ACKS, ANNOUNCEMENTS, AVAILABILITY, FRAMES, RESULTS, STATUS
from framewire.schemas.messages import SOURCE_NAME_MAX
from framewire.schemas.names import printable

logger = logging.getLogger(__name__)

# what a file still being written looks like
_MAYBE_UNFINISHED = frozenset({ErrorKind.TRUNCATED, ErrorKind.EMPTY})
# frames read into memory and published together, at most (and at most this many bytes)
SEND_BATCH = 64
INGEST_BATCH = 64  # files settled together, looked up, read and recorded together
SEND_BATCH_BYTES = 64 * 1024**2

SPEC = AgentSpec(
    kind="capture",
    receives=(
        Receive(ACKS, "The ledger committed a frame of this station: its resends end.", "replies"),
        Receive(RESULTS, "An inference agent answered a frame of this station.", "replies"),
        Receive(
            AVAILABILITY,
            "Which agents are online: frames wait while no inference agent is, and what a "
            "dead one held is sent again at once.",
            "control",
        ),
        Receive(STATUS, "Each agent's kind (which of those online infer).", "control"),
    ),
    sends=(
        Send(
            ANNOUNCEMENTS,
            "Each frame, vouched for to the ledger before it is published (again on each "
            "resend: the ledger keeps the first); only results for announced frames are "
            "inventory.",
        ),
        Send(
            FRAMES,
            "Every frame, its metadata in MQTT 5 user properties; resent with the same frame "
            "id until the ledger acknowledges it.",
        ),
    ),
    lanes=(
        Lane(
            "replies",
            capacity=512,
            workers=128,
            summary="acknowledgements and results, recorded in batches",
        ),
    ),
    counters={
        "frames.seen": "new frames recorded",
        "frames.published": "frames sent for the first time",
        "frames.resent": "frames sent again (no acknowledgement in time, or a dead inference "
        "agent held them)",
        "frames.ledgered": "frames the ledger acknowledged",
        "frames.quarantined": "files or frames quarantined, with a reason",
        "acks.unknown": "acknowledgements for frames this station does not know",
        "state_rows_pruned": "state rows of old frames forgotten",
        "state.write_failures": "writes to the state database that failed (disk full, read-only)",
    },
    gauges={
        "watcher_pending": "files seen in the folder, waiting to settle or be read",
        "in_flight": "frames sent and not yet acknowledged",
        "pending": "frames recorded and not yet ledgered (sent or waiting to be)",
    },
    commands={
        "pause": "stop sending frames (new files are still recorded)",
        "resume": "send frames again",
        "prune": "forget old ledgered frames whose files are gone",
        "retry": "try quarantined files again (all=true, or names=[...])",
    },
)


def name_too_long(relpath: str) -> FrameRejectedError:
    return FrameRejectedError(
        ErrorKind.NAME_TOO_LONG,
        f"its path in the capture folder is {len(relpath)} characters (escaped), over the "
        f"{SOURCE_NAME_MAX} a frame's source name may hold; move it to a shorter path",
    )


def describe_error(err: BaseException) -> str:
    """An unexpected exception in one line a person can read."""
    return printable(f"{type(err).__name__}: {' '.join(str(err).split())}", limit=300)


class CaptureAgent:
    def __init__(
        self,
        settings: CaptureSettings,
        runtime: AgentRuntime,
        state: CaptureState,
        *,
        live: bool = True,
    ):
        self.settings = settings
        self.runtime = runtime
        self.state = state
        # live: files may still be being written (a one-shot import reads a finished folder)
        self.live = live
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
        self._truncated_looks: dict[str, int] = {}  # relpath -> looks while it may be growing
        self.guard = StateGuard(state, runtime)
        # acknowledgements and results, recorded many to a commit
        self._advances: Batcher[tuple[str, FrameState], FrameState | None] = Batcher(
            self._advance_batch, max_size=256
        )
        self.presence = AgentPresence(runtime.topics)
        self.presence.on_offline(self._inference_went_offline)
        runtime.on_connect(self._resend_after_reconnect)
        self._resend_pending = False
        self._holding_said = False
        runtime.gauge("watcher_pending", lambda: self.watcher.pending)
        runtime.gauge("in_flight", lambda: self.in_flight)
        self.pending = 0
        runtime.gauge("pending", lambda: self.pending)
        runtime.metrics.inference_online(
            lambda: len(self.presence.taking_frames()), station=settings.station
        )
        runtime.details.update(
            station=settings.station,
            watch_dir=printable(str(self.root)),
            paused=False,
        )
        runtime.count_throughput("frames.published")
        # from the state database, so a restart does not start them again from 0; it
        # changes in many places (acks, quarantine, retries, prune), so it is polled
        self.stored = StoredFacts(runtime, self._stored, poll=settings.status_interval)
        # total, not total_increasing: the nightly prune forgets old ledgered frames
        self.stored.count("ledgered", "Frames ledgered", unit="frames", state_class="total")
        self.stored.count(
            "quarantined", "Frames quarantined", unit="frames", state_class="measurement"
        )
        runtime.command("pause", self.pause)
        runtime.command("resume", self.resume)
        runtime.command("prune", self._prune_now)
        runtime.command("retry", self.retry)

    async def _stored(self) -> dict[str, Fact]:
        counts = (await self.state.summary()).counts
        return {"ledgered": counts["ledgered"], "quarantined": counts["quarantined"]}

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

    async def retry(self, args: dict[str, Scalar]) -> CommandResult:
        """Try quarantined files again (args: all=true, or names=<JSON list of the files
        `framewire capture quarantine` lists>): undelivered frames are resent under their
        own frame id, rejected files are looked at afresh."""
        names: list[str] | None = None
        if not args.get("all"):
            try:
                parsed = json.loads(str(args.get("names") or "[]"))
            except json.JSONDecodeError:
                raise CommandError("names must be a JSON list of file names") from None
            if not isinstance(parsed, list) or not all(isinstance(n, str) for n in parsed):
                raise CommandError("names must be a JSON list of file names")
            if not parsed or len(parsed) > 10_000:
                raise CommandError("name 1 to 10,000 files, or pass all=true")
            names = parsed
        resent, rescan, unknown = await self.guard.call(
            "retrying quarantined files", lambda: self.state.retry_named(names, time.time())
        )
        for relpath in rescan:
            self.watcher.recheck(path_of(self.root, relpath), 0)
        self.wake()
        data: dict[str, Scalar] = {"resent": resent, "rescanned": len(rescan)}
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            data["not_quarantined"] = len(unknown)
            return f"retrying {resent + len(rescan)}; not quarantined: {shown}", data
        return f"retrying {resent + len(rescan)} quarantined file(s)", data

    async def prune(self) -> str:
        """Forget ledgered or quarantined frames older than `prune_after_days` whose file has
        left the capture folder (while a file is there, its row is what keeps it from being
        sent twice)."""
        cutoff = time.time() - self.settings.prune_after_days * 86400
        removed = await self.state.prune(cutoff, self.root)
        self.runtime.count("state_rows_pruned", removed)
        return f"pruned {removed} row(s)"

    # --- intake ----------------------------------------------------------------------------
    async def watch(self) -> None:
        logger.info("watching %s for frames of station %s", self.root, self.settings.station)
        await self.ingest_all(self.watcher.batches(INGEST_BATCH))

    async def ingest_all(self, source: AsyncIterator[list[tuple[Path, FileVersion]]]) -> None:
        async for batch in source:
            await self.ingest_batch(batch)

    async def ingest_batch(self, files: list[tuple[Path, FileVersion]]) -> None:
        """Take files that settled together: looked up in one call, read and inspected in
        one worker-thread call, recorded in one commit. Error boundary per file: one that
        cannot be taken is quarantined with the reason and never holds back the rest."""
        known = await self.guard.call(
            "looking up files", lambda: self.state.knows_many([v for _, v in files])
        )
        fresh = [(path, v) for (path, v), seen in zip(files, known, strict=True) if not seen]
        if not fresh:
            return
        now = time.time()
        looked = await asyncio.to_thread(lambda: [self._look(v) for _, v in fresh])
        new: list[tuple[str, FileVersion, str, str]] = []
        for (path, version), found in zip(fresh, looked, strict=True):
            try:
                if isinstance(found, Inspection):
                    self._truncated_looks.pop(version.relpath, None)
                    new.append((new_frame_id(), version, found.sha256, found.content_type))
                elif found is not None:
                    await self._refused(path, version, found, now)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                await self._could_not_take(version, err)
        if not new:
            return
        rows = await self.guard.call(
            "recording new frames", lambda: self.state.record_many(new, now)
        )
        for (_, version, _, _), row in zip(new, rows, strict=True):
            if row is None:
                logger.debug("%s changed on disk but not in content; nothing new", version.relpath)
                continue
            self.runtime.count("frames.seen")
            logger.info("frame %s #%d from %s", row.frame_id, row.seq, row.relpath)
        self._wake.set()

    def _look(self, version: FileVersion) -> Inspection | FrameRejectedError | Exception | None:
        """In a worker thread: the file inspected, or why it cannot be a frame (None: gone)."""
        try:
            return self._examine(version)
        except FileNotFoundError:
            return None
        except FrameRejectedError as err:
            return err
        except OSError as err:
            return FrameRejectedError(
                ErrorKind.UNREADABLE, f"the file cannot be read: {err.strerror or err}"
            )
        except Exception as err:
            return err

    async def _refused(
        self, path: Path, version: FileVersion, why: FrameRejectedError | Exception, now: float
    ) -> None:
        if not isinstance(why, FrameRejectedError):
            await self._could_not_take(version, why)
        elif why.kind in _MAYBE_UNFINISHED and self._still_being_written(path, version, now):
            return
        else:
            await self._reject(new_frame_id(), version, why, now)

    async def _could_not_take(self, version: FileVersion, err: BaseException) -> None:
        logger.error("taking %s failed: %s", version.relpath, describe_error(err))
        rejected = FrameRejectedError(
            ErrorKind.PROCESSING_ERROR, f"it could not be taken: {describe_error(err)}"
        )
        await self._reject(new_frame_id(), version, rejected, time.time())

    def _examine(self, version: FileVersion) -> Inspection:
        if len(version.relpath) > SOURCE_NAME_MAX:
            raise name_too_long(version.relpath)
        if version.kind != "file":
            raise not_a_file(version.kind)
        limits = self.settings.limits
        return inspect_image(read_in_folder(self.root, version.relpath, limits), limits)

    def _still_being_written(self, path: Path, version: FileVersion, now: float) -> bool:
        """An empty or truncated file changed recently may be a file still being written,
        with pauses longer than settle_seconds: look again later (backoff) rather than
        quarantine it, until it has been unchanged for truncated_grace seconds."""
        if not self.live:
            return False
        grace = self.settings.truncated_grace
        left = max(version.mtime_ns, version.ctime_ns) / 1e9 + grace - now
        if left <= 0:
            self._truncated_looks.pop(version.relpath, None)
            return False
        if len(self._truncated_looks) > 10_000:  # files deleted while waited for
            self._truncated_looks.clear()
        looks = self._truncated_looks.get(version.relpath, 0) + 1
        self._truncated_looks[version.relpath] = looks
        settle = self.settings.settle_seconds
        delay = min(settle * 2**looks, max(settle, grace / 4), left + 0.1)
        if looks == 1:
            logger.info(
                "%s is empty or truncated but changed %.1f s ago: waiting for the rest of it "
                "(quarantined once unchanged for %.0f s, truncated_grace_seconds)",
                version.relpath,
                grace - left,
                grace,
            )
        self.watcher.recheck(path, delay)
        return True

    async def _reject(
        self, frame_id: str, version: FileVersion, err: FrameRejectedError, now: float
    ) -> None:
        """Quarantine a file that cannot be a frame, with the reason, once per version."""
        self._truncated_looks.pop(version.relpath, None)
        await self.guard.call(
            "quarantining a file",
            lambda: self.state.record(
                frame_id,
                version,
                sha256=None,
                state="quarantined",
                reason=err.reason,
                error_kind=err.kind.value,
                now=now,
            ),
        )
        self.runtime.count("frames.quarantined")
        await self.runtime.dead_letter(
            err.kind, err.reason, source_name=version.relpath, frame_id=frame_id
        )

    def wake(self) -> None:
        """Look for frames to send now."""
        self._wake.set()

    def subscribe(self) -> None:
        """Acknowledgements and results for this station, and who is online."""
        station = self.settings.station
        self.runtime.receive(ACKS, self.on_ack, ident=station)
        self.runtime.receive(RESULTS, self.on_result, ident=station)
        self.runtime.receive(AVAILABILITY, self.presence.on_availability)
        self.runtime.receive(STATUS, self.presence.on_status)

    # --- who can take frames --------------------------------------------------------------
    def _inference_went_offline(self, agent: str, kind: str, role: str) -> None:
        """A dead inference agent took the frames the broker had dealt it, and its session
        with them (shared-subscription members keep none): send those again now rather than
        after ack_timeout. The same when a fallback agent hands back (it may have been dealt
        frames as it left the group), or an escalation agent dies with frames it was asked
        to read again. The ledger writes a frame once, so a frame that was in fact answered
        costs a cache lookup, never a second row. Shadow agents answer nothing that counts."""
        if kind == "inference" and role != "shadow":
            self._resend_pending = True
            self.wake()

    def _resend_after_reconnect(self) -> None:
        # the broker may have restarted and lost what it held for the inference agents
        self._resend_pending = True
        self.wake()

    def _no_inference_online(self) -> bool:
        online = self.presence.taking_frames()
        self.runtime.details["inference_online"] = len(online)
        if online or not self.settings.wait_for_inference:
            if self._holding_said:
                logger.info("inference online (%s): sending frames", ", ".join(online))
                self._holding_said = False
            return False
        if not self._holding_said:
            self._holding_said = True
            logger.warning(
                "holding frames: no inference agent is online (wait_for_inference); they are "
                "sent as soon as one is"
            )
        return True

    # --- sending ---------------------------------------------------------------------------
    async def publish_loop(self) -> None:
        while True:
            await self.runtime.connected.wait()
            self._wake.clear()
            if self.paused:
                await self._wake.wait()
                continue
            if self._no_inference_online():
                self.presence.changed.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                changed = asyncio.ensure_future(self.presence.changed.wait())
                try:
                    await asyncio.wait({wake, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                    changed.cancel()
                continue
            if self._resend_pending:
                self._resend_pending = False
                n = await self.guard.call(
                    "resending frames", lambda: self.state.resend_now(time.time())
                )
                if n:
                    logger.info("resending %d frame(s) no inference agent has answered", n)
            due, self.in_flight = await self.guard.call(
                "choosing frames to send",
                lambda: self.state.due(
                    time.time(),
                    self.settings.max_in_flight,
                    self.settings.max_in_flight_mib * 1024**2,
                ),
            )
            try:
                for batch in _batches(due):
                    await self._send_batch(batch)
            except aiomqtt.MqttError as err:
                logger.info("sending paused: %s", err)
                continue
            except Exception:
                # each frame has its own error boundary; this one keeps a fault in the loop
                # itself from stopping the station (the frames stay pending, nothing is lost)
                logger.exception("sending frames failed; trying again in a second")
                await asyncio.sleep(1.0)
                continue
            next_due, self.pending = await self.guard.call(
                "choosing frames to send", self.state.outlook
            )
            timeout = None if next_due is None else max(0.05, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _retry_delay(self, attempt: int) -> float:
        delay = self.settings.ack_timeout * 2.0 ** (attempt - 1)
        return min(self.settings.resend_backoff_max, delay)

    async def _send_batch(self, rows: list[FrameRow]) -> None:
        """Send `rows` together: read in one worker-thread call, published at once (each
        waits for its own PUBACK), recorded as sent in one commit. Error boundary per frame:
        whatever goes wrong with one frame quarantines it with the reason, and the frames
        beside and behind it are sent."""
        now = time.time()
        ready: list[FrameRow] = []
        for row in rows:
            if row.attempts >= self.settings.max_attempts:
                reason = (
                    f"no acknowledgement from the ledger after {row.attempts} attempts "
                    "(max_attempts); is the inference agent or the ledger running?"
                )
                await self._quarantine(row, ErrorKind.UNDELIVERABLE, reason)
            elif len(row.relpath) > SOURCE_NAME_MAX:  # recorded by an older version
                too_long = name_too_long(row.relpath)
                await self._quarantine(row, too_long.kind, too_long.reason)
            else:
                ready.append(row)
        if not ready:
            return
        originals = await asyncio.to_thread(lambda: [self._read_original(r) for r in ready])
        sending: list[tuple[FrameRow, asyncio.Task[None]]] = []
        for row, (payload, problem) in zip(ready, originals, strict=True):
            if payload is None:
                await self._quarantine(
                    row,
                    ErrorKind.SOURCE_CHANGED,
                    f"the original file can no longer be read as captured ({problem}); "
                    "new content in that file is captured as a new frame",
                )
                continue
            try:
                publish = self._publish(row, payload)
            except Exception as err:  # the frame's metadata cannot be sent, say
                logger.exception("frame %s (%s) could not be sent", row.frame_id, row.relpath)
                await self._quarantine(
                    row, ErrorKind.PROCESSING_ERROR, f"it could not be sent: {describe_error(err)}"
                )
                continue
            sending.append((row, asyncio.ensure_future(publish)))
        lost: aiomqtt.MqttError | None = None
        sent: list[tuple[str, int, float]] = []
        try:
            if sending:
                await asyncio.wait([task for _, task in sending])
        finally:
            for _, task in sending:
                task.cancel()  # cancelled with the loop: none is left behind
        for row, task in sending:
            try:
                task.result()
            except aiomqtt.MqttError as err:
                lost = err  # the rest go once connected again; the sent ones are recorded
                continue
            except Exception as err:
                logger.exception("frame %s (%s) could not be sent", row.frame_id, row.relpath)
                await self._quarantine(
                    row, ErrorKind.PROCESSING_ERROR, f"it could not be sent: {describe_error(err)}"
                )
                continue
            attempt = row.attempts + 1
            sent.append((row.frame_id, attempt, now + self._retry_delay(attempt)))
            self.runtime.count("frames.published" if attempt == 1 else "frames.resent")
        if sent:
            await self.guard.call(
                "recording sent frames", lambda: self.state.mark_published_many(sent, now)
            )
        if lost is not None:
            raise lost

    def _publish(self, row: FrameRow, payload: bytes) -> Coroutine[Any, Any, None]:
        """The publish of one frame, its announcement first (raises at once if its metadata
        cannot be sent)."""
        assert row.sha256 is not None and row.content_type is not None
        station = self.settings.station
        announcement = FrameAnnouncement(
            frame_id=row.frame_id,
            station=station,
            seq=row.seq,
            sha256=row.sha256,
            size=len(payload),
            captured_at=row.captured_at,
            source_name=row.relpath,
        )
        meta = FrameMeta(
            frame_id=row.frame_id,
            station=self.settings.station,
            seq=row.seq,
            captured_at=row.captured_at,
            sha256=row.sha256,
            content_type=row.content_type,
            size=len(payload),
            source_name=row.relpath,
            attempt=row.attempts + 1,
        )
        properties = frame_properties(meta)

        async def announce_and_publish() -> None:
            # The announcement's PUBACK first: the broker has queued it for the ledger before
            # the frame exists for anyone, so its result is rarely stored before it (when it
            # is, the announcement makes that row trusted on arrival).
            await self.runtime.send(ANNOUNCEMENTS, station, encode_json(announcement))
            await self.runtime.send(FRAMES, station, payload, properties=properties)

        return announce_and_publish()

    def _read_original(self, row: FrameRow) -> tuple[bytes | None, str]:
        """The captured bytes, read again the safe way (files.read_in_folder): a file since
        swapped for a FIFO, a link or a device, or changed, is refused, never waited on."""
        try:
            data = read_in_folder(
                self.root, row.relpath, self.settings.limits, expect_size=row.size
            )
        except FileNotFoundError:
            return None, "it is gone"
        except FrameRejectedError as err:
            return None, err.reason
        except OSError as err:
            return None, str(err.strerror or err)
        if hashlib.sha256(data).hexdigest() != row.sha256:
            return None, "its content changed"
        return data, ""

    async def _quarantine(self, row: FrameRow, kind: ErrorKind, reason: str) -> None:
        await self.guard.call(
            "quarantining a frame",
            lambda: self.state.quarantine(row.frame_id, kind.value, reason, time.time()),
        )
        self.runtime.count("frames.quarantined")
        await self.runtime.dead_letter(kind, reason, source_name=row.relpath, frame_id=row.frame_id)

    # --- what comes back -------------------------------------------------------------------
    async def _advance_batch(self, moves: list[tuple[str, FrameState]]) -> list[FrameState | None]:
        return await self.state.advance_many(moves, time.time())

    async def on_result(self, message: Inbound[InferenceResult]) -> None:
        result = message.value
        try:
            before = await self._advances.submit((result.frame_id, "inferred"))
        except sqlite3.OperationalError as err:
            await self.guard.failed("recording a result", err)  # the ack will move it on
            return
        self.guard.succeeded()
        if before is None:
            raise MessageError(
                ErrorKind.UNKNOWN_FRAME,
                f"result for frame {result.frame_id}, which station "
                f"{self.settings.station} never sent",
            )

    async def on_ack(self, message: Inbound[LedgerAck]) -> None:
        ack = message.value
        try:
            before = await self._advances.submit((ack.frame_id, "ledgered"))
        except sqlite3.OperationalError as err:
            # not recorded: the frame stays in flight, is resent after ack_timeout, and the
            # ledger acknowledges it again (as a duplicate), so nothing is lost
            await self.guard.failed("recording an acknowledgement", err)
            return
        self.guard.succeeded()
        if before is None:
            self.runtime.count("acks.unknown")
            return
        if before != "ledgered":
            self.runtime.count("frames.ledgered")
            self._wake.set()


def _batches(rows: list[FrameRow]) -> list[list[FrameRow]]:
    """`rows` in sending batches of at most SEND_BATCH frames and SEND_BATCH_BYTES bytes."""
    batches: list[list[FrameRow]] = []
    size = 0
    for row in rows:
        if not batches or len(batches[-1]) >= SEND_BATCH or size + row.size > SEND_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(row)
        size += row.size
    return batches


async def run(settings: CaptureSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the capture agent until `stop` is set or SIGTERM/SIGINT arrives."""
    async with CaptureState(settings.state_path) as state:
        await serve(settings, state, stop=stop)


async def serve(
    settings: CaptureSettings, state: CaptureState, *, stop: asyncio.Event | None = None
) -> None:
    """`run` on a state database already open (a caller that wants to reach it)."""
    runtime = AgentRuntime(settings, SPEC, persistent=True)
    agent = CaptureAgent(settings, runtime, state)
    await agent.stored.refresh()
    agent.subscribe()
    runtime.schedule("prune", agent.prune, trigger="cron", hour=settings.prune_hour, jitter=600)
    tasks = {"watch": agent.watch, "publish": agent.publish_loop, "stored": agent.stored.run}
    await runtime.run(tasks, stop=stop)
