"""Dynamic micro-batching on asyncio: concurrent requests share one model call.

Why hand-written: no maintained library batches requests inside a FastAPI process with a bounded
queue (Triton and TorchServe are whole servers). It is small: a deque of pending items, one task that
waits for ``max_batch_size`` items or ``max_wait_ms`` after the oldest one arrived, and a single
worker thread that runs the model, so the event loop keeps accepting and answering (429s, health)
while torch computes. A full queue rejects at once (the caller answers 429 + Retry-After) instead of
growing a backlog no client will wait for; a timed-out request's pending items are dropped unrun.

:class:`ModelQueue` holds that queue, its limits and the waiting; :class:`Batcher` groups items into
calls, ``serving.decode_loop.DecodeLoop`` feeds generation jobs into a running decode batch.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The request's items do not fit in the queue right now."""


class Closed(Exception):
    """The batcher is draining for shutdown and takes no new work."""


@dataclass
class Pending:
    """A queued item, the future its request awaits, and when it was queued."""

    payload: Any
    future: asyncio.Future[Any]
    enqueued: float


class ModelQueue(ABC, Generic[In, Out]):
    """A bounded queue of items for the model thread; subclasses decide how ``_run`` feeds the model.

    ``slots`` is how many items the model works on at once (a batch, or the decode batch's rows).
    ``on_batch(size)`` and ``on_change()`` (the depth or the running count changed) feed metrics; they
    run on the event loop.
    """

    def __init__(
        self,
        executor: Executor,
        *,
        slots: int,
        max_queue_size: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.executor = executor
        self.slots = slots
        self.max_queue_size = max_queue_size
        self.on_batch = on_batch
        self.on_change = on_change
        self.running = 0  # items the model is working on now
        self._queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Items waiting (not yet handed to the model)."""
        return len(self._queue)

    @property
    def saturation(self) -> float:
        """(running + queued) / (slots + max_queue_size): 1.0 means the next item gets 429.

        The denominator is everything this queue holds before it refuses work, so the ratio is
        comparable across models and settings (an autoscaler's target, e.g. 0.5).
        """
        return (self.running + len(self._queue)) / (self.slots + self.max_queue_size)

    def _set_running(self, count: int) -> None:
        """The model now works on ``count`` items; the metrics follow."""
        self.running = count
        self.on_change()

    def start(self) -> None:
        """Start the dispatch task on the running loop."""
        self._task = asyncio.create_task(self._run(), name=f"tunelab-{type(self).__name__}")

    async def stop(self) -> None:
        """Refuse new work, finish everything queued, then end the dispatch task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def enqueue(self, items: Sequence[In]) -> list[asyncio.Future[Out]]:
        """Queue ``items`` together, all or none; their results arrive through the returned futures.

        Raises:
            QueueFull: the queue cannot take all of ``items`` now.
            Closed: the server is shutting down.
        """
        if self._closing:
            raise Closed
        if len(self._queue) + len(items) > self.max_queue_size:
            raise QueueFull
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = [Pending(item, loop.create_future(), now) for item in items]
        self._queue.extend(pending)
        self.on_change()
        self._wakeup.set()
        return [p.future for p in pending]

    async def wait(self, futures: list[asyncio.Future[Out]], timeout: float) -> list[Out]:
        """Results of ``futures`` in order, waiting at most ``timeout`` seconds.

        On timeout (``asyncio.TimeoutError``) or cancellation the still-queued ones are cancelled, so
        the dispatcher skips them instead of running them; the exception is re-raised.
        """
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise

    async def _idle(self) -> bool:
        """Wait for work while there is none; False once closing with nothing left (the loop ends)."""
        while not self._queue:
            if self._closing:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        return True

    def _take(self, n: int) -> list[Pending]:
        """Up to ``n`` queued items, skipping those whose requests gave up."""
        taken: list[Pending] = []
        while self._queue and len(taken) < n:
            item = self._queue.popleft()
            if not item.future.done():
                taken.append(item)
        self.on_change()
        return taken

    @abstractmethod
    async def _run(self) -> None:
        """Feed queued items to the model until ``_idle`` says the queue is closed and empty."""


class Batcher(ModelQueue[In, Out]):
    """Groups submitted items into calls of ``fn(list[In]) -> list[Out]`` on ``executor``."""

    def __init__(
        self,
        fn: Callable[[list[In]], Sequence[Out]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_size: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            executor,
            slots=max_batch_size,
            max_queue_size=max_queue_size,
            on_batch=on_batch,
            on_change=on_change,
        )
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000

    async def _run(self) -> None:
        while await self._idle():
            await self._fill()
            if batch := self._take(self.max_batch_size):
                await self._execute(batch)

    async def _fill(self) -> None:
        """Wait until a full batch is queued or the oldest item has waited ``max_wait``."""
        deadline = self._queue[0].enqueued + self.max_wait
        while len(self._queue) < self.max_batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _execute(self, batch: list[Pending]) -> None:
        self.on_batch(len(batch))
        self._set_running(len(batch))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.fn, [p.payload for p in batch])
        except Exception as exc:  # the model call failed: every waiter gets the error, the loop lives on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._set_running(0)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
