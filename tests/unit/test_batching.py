"""MicroBatches: full batches at once, partial ones after max_wait from their first item,
backpressure, end and errors of the source, no wake-ups while idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from streamrec.stream.batching import MicroBatches


class Source:
    """Items put by the test, read by the batcher; counts what was read."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[object]:
        while True:
            item = await self.queue.get()
            if item is StopAsyncIteration:
                return
            if isinstance(item, Exception):
                raise item
            self.read += 1
            yield item

    def put(self, *items: object) -> None:
        for item in items:
            self.queue.put_nowait(item)


async def test_a_full_batch_is_handed_over_without_waiting() -> None:
    source = Source()
    source.put(*range(8))
    batches = aiter(MicroBatches(source, max_size=4, max_wait_s=30))
    started = time.monotonic()
    assert await anext(batches) == [0, 1, 2, 3]
    assert await anext(batches) == [4, 5, 6, 7]
    assert time.monotonic() - started < 1
    await batches.aclose()


async def test_a_partial_batch_waits_max_wait_from_its_first_item() -> None:
    source = Source()
    batches = aiter(MicroBatches(source, max_size=100, max_wait_s=0.3))
    pending = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.5)  # idle: nothing is handed over, however long
    assert not pending.done()
    first = time.monotonic()
    source.put("a")
    await asyncio.sleep(0.1)
    source.put("b")
    assert await pending == ["a", "b"]
    waited = time.monotonic() - first
    assert 0.25 < waited < 1.0
    await batches.aclose()


async def test_with_no_wait_a_batch_is_what_arrived_meanwhile() -> None:
    source = Source()
    batches = aiter(MicroBatches(source, max_size=100, max_wait_s=0))
    source.put("a")
    assert await anext(batches) == ["a"]
    source.put("b", "c", "d")
    await asyncio.sleep(0.05)  # "processing" the last batch; these arrive meanwhile
    assert await anext(batches) == ["b", "c", "d"]
    await batches.aclose()


async def test_a_full_buffer_stops_reading_the_source_until_it_is_taken() -> None:
    source = Source()
    source.put(*range(10))
    batches = aiter(MicroBatches(source, max_size=3, max_wait_s=0))
    assert await anext(batches) == [0, 1, 2]
    await asyncio.sleep(0.05)
    assert source.read == 6  # the next full buffer, and no more
    assert await anext(batches) == [3, 4, 5]
    await batches.aclose()


async def test_the_source_ending_or_failing_after_buffered_items() -> None:
    source = Source()
    source.put(1, 2, StopAsyncIteration)
    assert [batch async for batch in MicroBatches(source, max_size=10, max_wait_s=5)] == [[1, 2]]

    failing = Source()
    failing.put(1, RuntimeError("broker gone"))
    batches = aiter(MicroBatches(failing, max_size=10, max_wait_s=5))
    assert await anext(batches) == [1]
    with pytest.raises(RuntimeError, match="broker gone"):
        await anext(batches)


async def test_closing_the_batches_stops_the_reader() -> None:
    source = Source()
    batches = aiter(MicroBatches(source, max_size=2, max_wait_s=0))
    source.put(1)
    assert await anext(batches) == [1]
    await batches.aclose()
    source.put(2, 3)
    await asyncio.sleep(0.05)
    assert source.read == 1


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        MicroBatches(Source(), max_size=0, max_wait_s=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatches(Source(), max_size=1, max_wait_s=-1)
