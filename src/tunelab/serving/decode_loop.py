"""Continuous batching for the completions routes: queued generation jobs join a running decode batch.

The queue, its limits (429), request timeouts and drain are :class:`~tunelab.serving.batcher.ModelQueue`'s;
what differs from the request batcher is the unit of work handed to the model thread: one *tick* =
let waiting jobs join (each runs its prompt) while the batch has room, then decode one token for
every row. A job leaves the batch the step it ends, so a short reply never waits for a long one and a
new request starts at the next step instead of after the running ones (the model's work lives in
``tunelab.inference.continuous.ContinuousDecoder``; this module only schedules it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from typing import Any

from tunelab.inference.continuous import ContinuousDecoder
from tunelab.inference.generate import Generation, GenerationJob
from tunelab.serving.batcher import ModelQueue, Pending

Ended = tuple[GenerationJob, Generation | BaseException | None]  # None: it was cancelled


class DecodeLoop(ModelQueue[GenerationJob, Generation]):
    """Runs ``decoder`` tick by tick in the model thread while any job is queued or decoding.

    ``precision()`` is entered around every tick (the predictor's autocast); ``on_batch`` receives
    the rows decoded in each step.
    """

    def __init__(
        self,
        decoder: ContinuousDecoder,
        precision: Callable[[], AbstractContextManager[Any]],
        executor: Executor,
        *,
        max_queue_size: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            executor,
            slots=decoder.max_rows,
            max_queue_size=max_queue_size,
            on_batch=on_batch,
            on_change=on_change,
        )
        self.decoder = decoder
        self.precision = precision
        self._decoding: dict[int, Pending] = {}  # id(job) -> its pending entry, while it is in the batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._decoding or await self._idle():
            joining = self._take(self.decoder.free)
            self._decoding.update((id(p.payload), p) for p in joining)
            self._set_running(len(self._decoding))
            try:
                jobs = [p.payload for p in joining]
                ended, rows = await loop.run_in_executor(self.executor, self._tick, jobs)
            except Exception as exc:  # not a model error (those are settled in _tick): fail what is in flight
                ended, rows = [(p.payload, exc) for p in self._decoding.values()], 0
                await loop.run_in_executor(self.executor, self.decoder.reset)
            if rows:
                self.on_batch(rows)
            for job, outcome in ended:
                _settle(self._decoding.pop(id(job)).future, outcome)
            self._set_running(len(self._decoding))

    def _tick(self, joining: list[GenerationJob]) -> tuple[list[Ended], int]:
        """In the model thread: join ``joining``, then one step; the jobs that ended and the rows stepped."""
        ended: list[Ended] = []
        with self.precision():
            for job in joining:
                try:
                    if (done := self.decoder.add(job)) is not None:
                        ended.append((job, done))
                except Exception as exc:  # this prompt failed alone; the batch decodes on
                    ended.append((job, exc))
            rows = len(self.decoder.rows)
            if rows:
                try:
                    ended += self.decoder.step()
                except Exception as exc:  # the batch is lost: every row's request gets the error
                    ended += [(job, exc) for job in self.decoder.reset()]
        return ended, rows


def _settle(future: asyncio.Future[Generation], outcome: Generation | BaseException | None) -> None:
    """Resolve a request's future, unless it already gave up (timeout, client gone: cancelled)."""
    if future.done():
        return
    if outcome is None:
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
