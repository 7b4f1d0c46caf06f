"""Event-driven micro-batches from an async source (a faust stream's ``events()``).

faust's ``Stream.noack_take(max_, within)`` wakes up every ``within`` seconds, whether or not
anything arrived, and each wake-up goes through ``Service.wait_first`` (new futures and an
``asyncio.wait``). An idle worker spent ~10 % of a core on that at the default 5 ms, and a
loaded one paid it on every small batch. :class:`MicroBatches` sleeps until the first item of a
batch arrives, then waits at most ``max_wait_s`` for the batch to fill:

* a full batch (``max_size`` items) is handed over at once;
* a partial one ``max_wait_s`` after its first item arrived (0: at once, with whatever is
  there -- under load the items that arrived while the last batch was processed);
* while a full batch waits to be taken, nothing more is read from the source (backpressure,
  as with ``noack_take``: faust's flow control then pauses fetching);
* when the source ends, what is buffered is handed over and iteration stops; when it raises,
  the exception is raised to the consumer after the buffered items.

Items are never acknowledged here: the caller acks each event once its outputs are delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Generic, TypeVar

__all__ = ["MicroBatches"]

T = TypeVar("T")


class MicroBatches(Generic[T]):
    """``async for batch in MicroBatches(source, max_size, max_wait_s)``: lists of 1 to
    ``max_size`` items, in source order."""

    def __init__(self, source: AsyncIterable[T], max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, not {max_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, not {max_wait_s}")
        self.source = source
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._buffer: list[T] = []
        self._arrived = asyncio.Event()  # the buffer has an item (or the reader ended)
        self._full = asyncio.Event()  # the buffer is full (or the reader ended)
        self._taken = asyncio.Event()  # a full buffer was handed over

    async def _read(self) -> None:
        async for item in self.source:
            buffer = self._buffer
            buffer.append(item)
            if len(buffer) == 1:
                self._arrived.set()
            if len(buffer) >= self.max_size:
                self._taken.clear()
                self._full.set()
                await self._taken.wait()

    def _reader_done(self, _: asyncio.Future[None]) -> None:
        self._arrived.set()
        self._full.set()

    async def __aiter__(self) -> AsyncGenerator[list[T], None]:
        loop = asyncio.get_running_loop()
        reader = asyncio.ensure_future(self._read())
        reader.add_done_callback(self._reader_done)
        try:
            while True:
                if not self._buffer:
                    if reader.done():
                        reader.result()  # raises what the source raised; else the source ended
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                if len(self._buffer) < self.max_size and self.max_wait_s > 0 and not reader.done():
                    timer = loop.call_later(self.max_wait_s, self._full.set)
                    try:
                        await self._full.wait()
                    finally:
                        timer.cancel()
                batch, self._buffer = self._buffer, []
                self._full.clear()
                self._taken.set()
                yield batch
        finally:
            reader.cancel()
