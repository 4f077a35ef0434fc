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
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt

from edge_agents.capture.files import not_a_file, path_of, read_in_folder
from edge_agents.capture.guard import StateGuard
from edge_agents.capture.inspect import FrameRejectedError, Inspection, inspect_image
from edge_agents.capture.settings import CaptureSettings
from edge_agents.capture.state import CaptureState, FileVersion, FrameRow
from edge_agents.capture.watcher import FolderWatcher
from edge_agents.runtime import AgentRuntime, CommandError
from edge_agents.runtime.commands import CommandResult, Scalar
from edge_agents.runtime.homeassistant import Fact, StoredFacts
from edge_agents.runtime.presence import AgentPresence
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
from schemas.messages import SOURCE_NAME_MAX
from schemas.names import printable

logger = logging.getLogger(__name__)

# what a file still being written looks like
_MAYBE_UNFINISHED = frozenset({ErrorKind.TRUNCATED, ErrorKind.EMPTY})


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
        self.presence = AgentPresence(runtime.topics)
        self.presence.on_offline(self._inference_went_offline)
        runtime.on_connect(self._resend_after_reconnect)
        self._resend_pending = False
        self._holding_said = False
        runtime.gauge("watcher_pending", lambda: self.watcher.pending)
        runtime.gauge("in_flight", lambda: self.in_flight)
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
        self.runtime.counters["state_rows_pruned"] += removed
        return f"pruned {removed} row(s)"

    # --- intake ----------------------------------------------------------------------------
    async def watch(self) -> None:
        logger.info("watching %s for frames of station %s", self.root, self.settings.station)
        await self.ingest_all(aiter(self.watcher))

    async def ingest_all(self, source: AsyncIterator[tuple[Path, FileVersion]]) -> None:
        async for path, version in source:
            # error boundary per file: one that cannot be taken never holds back the rest
            try:
                await self.ingest(path, version)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.exception("taking %s failed", version.relpath)
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

    async def ingest(self, path: Path, version: FileVersion) -> None:
        if await self.guard.call("looking up a file", lambda: self.state.knows(version)):
            return
        now = time.time()
        frame_id = new_frame_id()
        try:
            found = await asyncio.to_thread(self._examine, version)
        except FileNotFoundError:
            self._truncated_looks.pop(version.relpath, None)
            return
        except FrameRejectedError as err:
            if err.kind in _MAYBE_UNFINISHED and self._still_being_written(path, version, now):
                return
            await self._reject(frame_id, version, err, now)
            return
        except OSError as err:
            unreadable = FrameRejectedError(
                ErrorKind.UNREADABLE, f"the file cannot be read: {err.strerror or err}"
            )
            await self._reject(frame_id, version, unreadable, now)
            return
        self._truncated_looks.pop(version.relpath, None)
        row = await self.guard.call(
            "recording a new frame",
            lambda: self.state.record(
                frame_id, version, sha256=found.sha256, content_type=found.content_type, now=now
            ),
        )
        if row is None:
            logger.debug("%s changed on disk but not in content; nothing new", version.relpath)
            return
        self.runtime.counters["frames.seen"] += 1
        logger.info("frame %s #%d from %s", row.frame_id, row.seq, row.relpath)
        self._wake.set()

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
        self.runtime.counters["frames.quarantined"] += 1
        await self.runtime.dead_letter(
            err.kind, err.reason, source_name=version.relpath, frame_id=frame_id
        )

    def wake(self) -> None:
        """Look for frames to send now."""
        self._wake.set()

    def subscribe(self) -> None:
        """Acknowledgements and results for this station, and who is online."""
        topics = self.runtime.topics
        self.runtime.subscribe(topics.acks(self.settings.station), self.on_ack)
        self.runtime.subscribe(topics.results(self.settings.station), self.on_result)
        self.runtime.subscribe(topics.all_availability(), self.presence.on_availability)
        self.runtime.subscribe(topics.all_status(), self.presence.on_status)

    # --- who can take frames --------------------------------------------------------------
    def _inference_went_offline(self, agent: str, kind: str) -> None:
        """A dead inference agent took the frames the broker had dealt it, and its session
        with them (shared-subscription members keep none): send those again now rather than
        after ack_timeout. The ledger writes a frame once, so a frame that was in fact
        answered costs a cache lookup, never a second row."""
        if kind == "inference":
            self._resend_pending = True
            self.wake()

    def _resend_after_reconnect(self) -> None:
        # the broker may have restarted and lost what it held for the inference agents
        self._resend_pending = True
        self.wake()

    def _no_inference_online(self) -> bool:
        online = self.presence.online("inference")
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
                lambda: self.state.due(time.time(), self.settings.max_in_flight),
            )
            try:
                for row in due:
                    await self._send_one(row)
            except aiomqtt.MqttError as err:
                logger.info("sending paused: %s", err)
                continue
            next_due = await self.guard.call("choosing frames to send", self.state.next_due)
            timeout = None if next_due is None else max(0.05, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _send_one(self, row: FrameRow) -> None:
        """Error boundary per frame: whatever goes wrong with one frame quarantines it with
        the reason, and the frames behind it are sent."""
        try:
            await self.send(row)
        except (asyncio.CancelledError, aiomqtt.MqttError):
            raise
        except Exception as err:
            logger.exception("frame %s (%s) could not be sent", row.frame_id, row.relpath)
            await self._quarantine(
                row, ErrorKind.PROCESSING_ERROR, f"it could not be sent: {describe_error(err)}"
            )

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
        if len(row.relpath) > SOURCE_NAME_MAX:  # recorded by an older version
            too_long = name_too_long(row.relpath)
            await self._quarantine(row, too_long.kind, too_long.reason)
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
        await self.guard.call(
            "recording a sent frame",
            lambda: self.state.mark_published(
                row.frame_id, attempt, now + self._retry_delay(attempt), now
            ),
        )
        self.runtime.counters["frames.published" if attempt == 1 else "frames.resent"] += 1

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
        self.runtime.counters["frames.quarantined"] += 1
        await self.runtime.dead_letter(kind, reason, source_name=row.relpath, frame_id=row.frame_id)

    # --- what comes back -------------------------------------------------------------------
    async def on_result(self, message: aiomqtt.Message) -> None:
        result = decode_json(InferenceResult, _payload(message))
        try:
            before = await self.state.advance(result.frame_id, "inferred", time.time())
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

    async def on_ack(self, message: aiomqtt.Message) -> None:
        ack = decode_json(LedgerAck, _payload(message))
        try:
            before = await self.state.advance(ack.frame_id, "ledgered", time.time())
        except sqlite3.OperationalError as err:
            # not recorded: the frame stays in flight, is resent after ack_timeout, and the
            # ledger acknowledges it again (as a duplicate), so nothing is lost
            await self.guard.failed("recording an acknowledgement", err)
            return
        self.guard.succeeded()
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
    async with CaptureState(settings.state_path) as state:
        await serve(settings, state, stop=stop)


async def serve(
    settings: CaptureSettings, state: CaptureState, *, stop: asyncio.Event | None = None
) -> None:
    """`run` on a state database already open (a caller that wants to reach it)."""
    runtime = AgentRuntime(settings, "capture", persistent=True)
    agent = CaptureAgent(settings, runtime, state)
    await agent.stored.refresh()
    agent.subscribe()
    runtime.schedule("prune", agent.prune, trigger="cron", hour=settings.prune_hour, jitter=600)
    tasks = {"watch": agent.watch, "publish": agent.publish_loop, "stored": agent.stored.run}
    await runtime.run(tasks, stop=stop)
