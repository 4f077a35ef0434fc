"""Calls into the capture state database that wait out a full or read-only disk.

When the state database cannot be written ("database or disk is full", a read-only or
failing disk), a frame can be neither recorded nor marked sent, and going on would lose
track of it. So the call is retried with backoff while the agent reports itself degraded
(state `degraded` with the reason, in status, Home Assistant and metrics; a log line
once): whatever waits on the call (taking new files, sending) waits with it, and all goes
on without a restart once the database writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from framewire.edge_agents.capture.state import CaptureState
from framewire.edge_agents.runtime import AgentRuntime, Backoff
from framewire.schemas.names import printable

logger = logging.getLogger(__name__)

T = TypeVar("T")


def root_cause(err: sqlite3.Error) -> sqlite3.Error:
    """The error that matters: a ROLLBACK that fails because SQLite already rolled back
    ("cannot rollback - no transaction is active") hides the one that made it roll back."""
    while isinstance(err.__context__, sqlite3.Error):
        err = err.__context__
    return err


class StateGuard:
    def __init__(self, state: CaptureState, runtime: AgentRuntime) -> None:
        self.state = state
        self.runtime = runtime
        self.degraded_since: float | None = None
        # calls now waiting to be retried: while one is, a write that happens to succeed
        # (an UPDATE needs no new page) does not end the degraded state
        self._retrying = 0

    async def call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried with backoff for as long as the database cannot be written."""
        backoff = Backoff(initial=0.5, cap=30.0)
        failing = False
        try:
            while True:
                try:
                    result = await call()
                except sqlite3.OperationalError as err:
                    if not failing:
                        failing = True
                        self._retrying += 1
                    await self.failed(what, err)
                    await asyncio.sleep(backoff.next())
                    with contextlib.suppress(sqlite3.Error):
                        await self.state.end_failed_transaction()
                    continue
                if failing:
                    failing = False
                    self._retrying -= 1
                self.succeeded()
                return result
        finally:
            if failing:
                self._retrying -= 1

    async def failed(self, what: str, err: sqlite3.Error) -> None:
        """Report a failed call (for callers that do not retry it themselves)."""
        self.runtime.count("state.write_failures")
        reason = printable(
            f"cannot write the capture state database ({root_cause(err)}) while {what}; "
            "new files wait and nothing is lost; retrying"
        )
        self.runtime.set_degraded(reason)
        if self.degraded_since is None:
            self.degraded_since = time.monotonic()
            logger.error("degraded: %s (database %s)", reason, self.state.path)
            await self.runtime.publish_status()

    def succeeded(self) -> None:
        if self.degraded_since is None or self._retrying:
            return
        logger.warning(
            "the capture state database writes again after %.0f s; taking new files",
            time.monotonic() - self.degraded_since,
        )
        self.degraded_since = None
        self.runtime.set_degraded(None)
