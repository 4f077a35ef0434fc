"""Process plumbing: the event loop (uvloop when installed), signals, systemd notification."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed, else on the default asyncio loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional (not on Windows)
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


class ForcedStop(KeyboardInterrupt):
    """Ctrl-C pressed again while draining: the work was stopped at once, not drained.
    Nothing is lost (the capture agent resends every frame not acknowledged), but what was
    in flight is done again."""


class SignalStop:
    """SIGTERM and SIGINT set `event`: the agents drain, for at most `drain_timeout`.

    SIGTERM (systemd, `kill`) only ever drains. A second SIGINT (Ctrl-C pressed again)
    stops at once: the task that entered this block is cancelled, and the block raises
    ForcedStop when it exits. `say` tells the person at the terminal what is happening
    (default: a log warning)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(
        self,
        event: asyncio.Event,
        *,
        drain_timeout: float | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.event = event
        self.drain_timeout = drain_timeout
        self.forced = False
        self._say = say
        self._task: asyncio.Task[Any] | None = None
        self._installed: list[signal.Signals] = []

    def __enter__(self) -> SignalStop:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in self.SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no support
                continue
            self._installed.append(sig)
        return self

    def _tell(self, text: str) -> None:
        if self._say is None:
            logger.warning("%s", text)
        else:
            self._say(text)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.event.is_set():
            self.event.set()
            if sig is signal.SIGINT:
                limit = (
                    f" for at most {self.drain_timeout:g} s (drain_timeout)"
                    if self.drain_timeout is not None
                    else ""
                )
                self._tell(
                    f"stopping: draining the work in flight{limit}; press Ctrl-C again to "
                    "stop at once (frames not yet acknowledged are sent again, nothing is lost)"
                )
            else:
                logger.info("received %s, draining", sig.name)
            return
        if sig is not signal.SIGINT:
            logger.info("received %s again; still draining", sig.name)
            return
        if self.forced:
            return
        self.forced = True
        self._tell("stopping at once; frames not yet acknowledged will be sent again")
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()
        if self.forced:
            task = self._task
            if et is not None and issubclass(et, asyncio.CancelledError) and task is not None:
                task.uncancel()  # the cancellation was ours, and it has done its work
            raise ForcedStop from None


class SystemdNotifier:
    """sd_notify(3) over $NOTIFY_SOCKET; does nothing when not run by systemd."""

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and (pid is None or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 2

    def notify(self, state: str) -> None:
        if not self._address:
            return
        address = self._address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(state.encode())
        except OSError as err:
            logger.warning("sd_notify %r failed: %s", state, err)
