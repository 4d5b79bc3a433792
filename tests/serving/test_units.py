"""Pure parts of the server: the micro-batcher, the decode loop (fake decoder), stop-string streaming,
PII masking, exposure checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tunelab.errors import ServingError
from tunelab.inference.generate import Generation, GenerationJob, StopScanner, cut_at_stop
from tunelab.serving.access import mask_pii
from tunelab.serving.batcher import Batcher, Closed, QueueFull
from tunelab.serving.decode_loop import DecodeLoop
from tunelab.serving.settings import ServeSettings, check_exposure


def _batcher(calls: list[list[int]], delay: float = 0.0, **kw: int | float) -> Batcher[int, int]:
    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(delay)
        return [x * 10 for x in items]

    opts = {"max_batch_size": 4, "max_wait_ms": 50, "max_queue_size": 100, **kw}
    return Batcher(fn, ThreadPoolExecutor(1), **opts)  # type: ignore[arg-type]


def test_batcher_groups_concurrent_requests_and_keeps_order():
    calls: list[list[int]] = []

    async def main() -> list[list[int]]:
        b = _batcher(calls)
        b.start()
        results = await asyncio.gather(*(b.wait(b.enqueue([i, i + 100]), 5) for i in range(3)))
        await b.stop()
        return results

    results = asyncio.run(main())
    assert results == [[0, 1000], [10, 1010], [20, 1020]]
    assert [len(c) for c in calls] == [4, 2]  # 6 items, batches capped at 4


def test_batcher_rejects_when_queue_full_and_after_close():
    calls: list[list[int]] = []

    async def main() -> None:
        b = _batcher(calls, delay=0.3, max_batch_size=1, max_queue_size=2)
        b.start()
        first = b.enqueue([1])
        await asyncio.sleep(0.05)  # the worker takes item 1; the queue is empty again
        b.enqueue([2, 3])
        with pytest.raises(QueueFull):
            b.enqueue([4])
        await b.wait(first, 5)
        await b.stop()
        with pytest.raises(Closed):
            b.enqueue([5])

    asyncio.run(main())
    assert calls == [[1], [2], [3]]  # stop() drained the queued items


def test_batcher_timeout_drops_queued_items_unrun():
    calls: list[list[int]] = []

    async def main() -> None:
        b = _batcher(calls, delay=0.3, max_batch_size=1)
        b.start()
        running = b.enqueue([1])
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await b.wait(b.enqueue([2]), 0.05)
        await b.wait(running, 5)
        await b.stop()

    asyncio.run(main())
    assert calls == [[1]]


def test_batcher_waits_at_most_max_wait_for_a_batch():
    calls: list[list[int]] = []

    async def main() -> float:
        b = _batcher(calls, max_batch_size=64, max_wait_ms=30)
        b.start()
        start = time.monotonic()
        await b.wait(b.enqueue([1]), 5)
        elapsed = time.monotonic() - start
        await b.stop()
        return elapsed

    assert 0.025 <= asyncio.run(main()) < 1.0
    assert calls == [[1]]


def test_batcher_without_wait_batches_what_arrived_while_the_model_ran():
    calls: list[list[int]] = []

    async def main() -> None:
        b = _batcher(calls, delay=0.2, max_wait_ms=0)
        b.start()
        first = b.enqueue([1])
        await asyncio.sleep(0.05)
        rest = [b.enqueue([i]) for i in (2, 3, 4)]
        await b.wait(first + [f for futs in rest for f in futs], 5)
        await b.stop()

    asyncio.run(main())
    assert calls == [[1], [2, 3, 4]]


def test_batcher_model_error_reaches_every_waiter_and_worker_survives():
    def fn(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("bad batch")
        return items

    async def main() -> list[int]:
        b: Batcher[int, int] = Batcher(
            fn, ThreadPoolExecutor(1), max_batch_size=2, max_wait_ms=1, max_queue_size=9
        )
        b.start()
        with pytest.raises(ValueError, match="bad batch"):
            await b.wait(b.enqueue([0]), 5)
        out = await b.wait(b.enqueue([7]), 5)
        await b.stop()
        return out

    assert asyncio.run(main()) == [7]


@pytest.mark.parametrize(
    ("pieces", "stop", "expected"),
    [
        (["hello wor", "ld. END here"], ["END"], "hello world. "),
        (["ab", "cE", "ND"], ["END"], "abc"),  # stop string split across three pieces
        (["abc", "def"], ["xyz"], "abcdef"),
        (["one two", " three"], ["two", "one t"], ""),  # the earliest match wins
        (["text"], [], "text"),
    ],
)
def test_stop_scanner_streams_exactly_the_cut_text(pieces, stop, expected):
    scanner = StopScanner(stop)
    streamed = "".join(scanner.feed(p) for p in pieces) + scanner.flush()
    assert streamed == expected == cut_at_stop("".join(pieces), stop)[0]


def test_mask_pii_hides_emails_phones_and_digit_runs():
    text = "mail jane.doe+x@example.co.uk or call +44 20 7946 0958, card 4111111111111111, film 2024"
    masked = mask_pii(text)
    assert masked == "mail <email> or call <phone>, card <phone>, film 2024"
    assert "example" not in masked
    assert "0958" not in masked


def test_exposure_refuses_remote_host_without_key():
    settings = ServeSettings(model_dir="m")
    with pytest.raises(ServingError, match="without an API key"):
        check_exposure(settings, 0, "0.0.0.0")
    with pytest.raises(ServingError, match="uvicorn --factory"):
        check_exposure(settings, 0, None)
    check_exposure(settings, 0, "127.0.0.1")
    check_exposure(settings, 1, "0.0.0.0")
    check_exposure(ServeSettings(model_dir="m", allow_unauthenticated=True), 0, "0.0.0.0")


class _FakeDecoder:
    """A ContinuousDecoder stand-in: a job decodes for ``max_new_tokens`` steps; a prompt "bad" fails."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows: list[list] = []  # [job, steps left]
        self.fail_next_step = False

    @property
    def free(self) -> int:
        return self.max_rows - len(self.rows)

    def add(self, job: GenerationJob) -> Generation | None:
        if job.prompt == "bad":
            raise ValueError("this prompt cannot be decoded")
        self.rows.append([job, job.max_new_tokens])
        return None

    def step(self) -> list[tuple[GenerationJob, Generation | None]]:
        if self.fail_next_step:
            self.fail_next_step = False
            raise RuntimeError("the step failed")
        for row in self.rows:
            row[1] -= 1
        done = [row[0] for row in self.rows if row[1] == 0]
        self.rows = [row for row in self.rows if row[1] > 0]
        return [(job, Generation(job.prompt, "length", 1, job.max_new_tokens, 0.1)) for job in done]

    def reset(self) -> list[GenerationJob]:
        jobs = [row[0] for row in self.rows]
        self.rows = []
        return jobs


def _loop(decoder: _FakeDecoder, steps: list[int], loads: list[float] | None = None) -> DecodeLoop:
    loop = DecodeLoop(
        decoder,  # type: ignore[arg-type]
        contextlib.nullcontext,
        ThreadPoolExecutor(1),
        max_queue_size=100,
        on_batch=steps.append,
    )
    if loads is not None:
        loop.on_change = lambda: loads.append(loop.saturation)
    return loop


def _job(prompt: str, steps: int) -> GenerationJob:
    return GenerationJob(prompt=prompt, max_new_tokens=steps)


def test_decode_loop_joins_waiting_jobs_as_rows_leave_and_short_replies_finish_first():
    steps: list[int] = []
    finished: list[str] = []
    loads: list[float] = []

    async def main() -> list[str]:
        loop = _loop(_FakeDecoder(max_rows=2), steps, loads)
        loop.start()

        async def ask(prompt: str, n: int) -> str:
            [generation] = await loop.wait(loop.enqueue([_job(prompt, n)]), 5)
            finished.append(generation.text)
            return generation.text

        replies = await asyncio.gather(ask("long", 6), ask("short", 2), ask("waits", 2))
        await loop.stop()
        return list(replies)

    assert asyncio.run(main()) == ["long", "short", "waits"]
    assert finished == ["short", "waits", "long"]  # "waits" joined when "short" left, before "long" ended
    assert max(steps) == 2  # never more rows than max_rows
    assert steps.count(2) >= 4  # the batch ran full while jobs were waiting
    # (decoding + queued) / (max_rows + max_queue_size): three jobs held, whether queued or decoding
    assert max(loads) == 3 / 102
    assert loads.count(3 / 102) >= 2  # still 3 after two of them left the queue for the batch
    assert loads[-1] == 0


def test_decode_loop_fails_only_the_bad_prompt_and_a_failed_step_only_the_rows_in_it():
    decoder = _FakeDecoder(max_rows=4)

    async def main() -> None:
        loop = _loop(decoder, [])
        loop.start()
        bad, good = loop.enqueue([_job("bad", 3)]), loop.enqueue([_job("good", 3)])
        with pytest.raises(ValueError, match="cannot be decoded"):
            await loop.wait(bad, 5)
        assert [g.text for g in await loop.wait(good, 5)] == ["good"]
        decoder.fail_next_step = True
        in_batch = [loop.enqueue([_job("a", 3)]), loop.enqueue([_job("b", 3)])]  # one tick takes both
        for futures in in_batch:
            with pytest.raises(RuntimeError, match="step failed"):
                await loop.wait(futures, 5)
        assert [g.text for g in await loop.wait(loop.enqueue([_job("after", 2)]), 5)] == ["after"]
        drained = loop.enqueue([_job("queued", 3)])
        await loop.stop()  # runs what is queued before it returns
        assert drained[0].result().text == "queued"

    asyncio.run(main())
