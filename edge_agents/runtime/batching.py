"""Dynamic batching: work submitted one item at a time, run many items at a time.

The model is Triton's dynamic batcher: a batch runs once `max_size` items are waiting, or
`max_wait` seconds after the first of them arrived, whichever comes first; with
`max_wait = 0` a batch takes whatever is waiting when the last one finishes (a group
commit: one write arrives alone and is committed alone, a burst shares one commit). Each
submitter gets its own item's outcome; a batch that fails fails every item in it, and
nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the item
O = TypeVar("O")  # noqa: E741 - its outcome


class Batcher(Generic[I, O]):
    def __init__(
        self,
        run: Callable[[list[I]], Awaitable[Sequence[O]]],
        *,
        max_size: int,
        max_wait: float = 0.0,
        concurrency: int = 1,
    ) -> None:
        if max_size < 1 or concurrency < 1 or max_wait < 0:
            raise ValueError("max_size and concurrency are at least 1, max_wait at least 0")
        self._run = run
        self.max_size = max_size
        self.max_wait = max_wait
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting: deque[tuple[I, asyncio.Future[O]]] = deque()
        self._arrived = asyncio.Event()
        self._first_at = 0.0
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, item: I) -> O:
        """Run `item` in a batch and return its outcome (or raise the batch's error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[O] = loop.create_future()
        if not self._waiting:
            self._first_at = loop.time()
        self._waiting.append((item, future))
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._gather(), name="batcher")
        return await future

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            await self._slots.acquire()
            try:
                deadline = self._first_at + self.max_wait
                while len(self._waiting) < self.max_size and (left := deadline - loop.time()) > 0:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self._arrived.wait()
                batch = [
                    self._waiting.popleft() for _ in range(min(self.max_size, len(self._waiting)))
                ]
                if self._waiting:
                    self._first_at = loop.time()
            except BaseException:
                self._slots.release()
                raise
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # submitter gone
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._one(batch), name="batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _one(self, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(outcomes)} outcomes")
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        except BaseException as err:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(err, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise
        finally:
            self.batches += 1
            self.items += len(batch)
            self._slots.release()

    async def close(self) -> None:
        """Stop: every item still waiting fails with CancelledError."""
        tasks = [t for t in (self._loop_task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._waiting:
            _, future = self._waiting.popleft()
            future.cancel()
