"""Process plumbing: the event loop (uvloop when installed), signals, systemd notification."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
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


class SignalStop:
    """SIGTERM and SIGINT set `event` (once); a second SIGINT is left to the default handler."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event
        self._installed: list[signal.Signals] = []

    def __enter__(self) -> SignalStop:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no support
                continue
            self._installed.append(sig)
        return self

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("received %s, draining", sig.name)
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)


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
