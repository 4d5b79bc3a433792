"""Pure parts of the server: the micro-batcher, stop-string streaming, PII masking, exposure checks."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tunelab.errors import ServingError
from tunelab.inference.generate import StopScanner, cut_at_stop
from tunelab.serving.access import mask_pii
from tunelab.serving.batcher import Batcher, Closed, QueueFull
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
