"""`framewire import DIR`: an existing folder of images through the pipeline, once.

The capture agent's own machinery in one-shot mode: the folder is scanned lazily (memory
stays flat however many files it holds), every file is recorded in a state database kept per
folder, and frames go out within the in-flight window until each is ledgered or quarantined.
Run it again after a crash and it carries on: ledgered frames are not sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from framewire.edge_agents.capture.agent import SPEC, CaptureAgent
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.capture.state import PENDING, CaptureState, StateSummary
from framewire.edge_agents.capture.watcher import scan_folder_async
from framewire.edge_agents.runtime import AgentRuntime

logger = logging.getLogger(__name__)

Progress = Callable[[StateSummary, bool], None]


class BrokerUnreachableError(ConnectionError):
    """The import could not reach the broker at all."""


def import_settings(settings: CaptureSettings, directory: Path) -> CaptureSettings:
    """The capture settings for importing `directory`: its own state database and agent id."""
    root = directory.resolve()
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    update: dict[str, object] = {
        "watch_dir": root,
        "state_db": settings.data_dir / f"import-{key}.sqlite3",
    }
    if "agent_id" not in settings.model_fields_set:
        update["agent_id"] = f"import-{settings.station}"
    return settings.model_copy(update=update)


async def run_import(
    settings: CaptureSettings,
    *,
    retry_failed: bool = False,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    connect_timeout: float = 30.0,
) -> StateSummary:
    """Send every image under `settings.watch_dir`; returns when none is pending.

    Outages after the first connection are waited out; a broker never reached within
    `connect_timeout` seconds raises BrokerUnreachableError."""
    stop = stop or asyncio.Event()
    runtime = AgentRuntime(settings, SPEC, persistent=True)
    async with CaptureState(settings.state_path) as state:
        if retry_failed:
            n = await state.retry_quarantined(now=0.0)
            logger.info("retrying %d quarantined frame(s)", n)
        agent = CaptureAgent(settings, runtime, state, live=False)
        agent.subscribe()
        scanned = asyncio.Event()

        async def scan() -> None:
            await agent.ingest_all(scan_folder_async(settings.watch_dir))
            scanned.set()
            agent.wake()

        async def watch_progress() -> None:
            while True:
                summary = await state.summary()
                if progress is not None:
                    progress(summary, scanned.is_set())
                pending = sum(summary.counts[s] for s in PENDING)
                if scanned.is_set() and pending == 0:
                    stop.set()
                    return
                await asyncio.sleep(0.25)

        async def first_connection() -> None:
            try:
                async with asyncio.timeout(connect_timeout):
                    await runtime.connected.wait()
            except TimeoutError:
                raise BrokerUnreachableError(
                    f"cannot reach the broker at {settings.broker_url} "
                    f"(tried for {connect_timeout:.0f} s)"
                ) from None

        tasks = {
            "scan": scan,
            "publish": agent.publish_loop,
            "progress": watch_progress,
            "connect": first_connection,
        }
        await runtime.run(tasks, stop=stop)
        return await state.summary()
