"""Dead letters: how a rejected record is described on the dead-letter topic.

A dead letter keeps the original key and value bytes untouched (so any client can inspect or
re-drive it; a value over 512 KiB is cut there) and adds headers:

=============================  ==========================================================
``streamrec.dlq.reason``       stable code from :data:`streamrec.events.REASONS`
``streamrec.dlq.detail``       human-readable explanation (at most 1000 bytes)
``streamrec.dlq.topic``        source topic
``streamrec.dlq.partition``    source partition
``streamrec.dlq.offset``       source offset
``streamrec.dlq.consumer``     consumer group that rejected it
``streamrec.dlq.value_bytes``  only when the value was cut: its size in bytes (a value is
                               kept up to 512 KiB)
``streamrec.dlq.key_bytes``    only when the key was cut: its size in bytes (kept up to
                               64 KiB)
``streamrec.dlq.headers_cut``  only when original headers were left out: how many (they are
                               kept, in order, while they total at most 64 KiB)
=============================  ==========================================================

The original record's headers are kept after these. With the caps a letter is at most
~642 KiB, so it always fits under the producer's 1 MB message limit, whatever record (the
broker may accept larger ones) it describes. Both the faust worker and the plain
confluent-kafka consumers build dead letters here, so the format is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamrec.errors import InvalidEvent

__all__ = ["HEADERS_MAX", "HEADER_PREFIX", "KEY_MAX", "VALUE_MAX", "DeadLetter", "parse_headers"]

HEADER_PREFIX = "streamrec.dlq."
_DETAIL_MAX = 1000
#: Longest value kept: a record near the broker's 1 MB limit would make a letter the producer
#: refuses, and the worker would stop on it every time it reads it again.
VALUE_MAX = 512 * 1024
#: Longest key kept, and most bytes of the original headers (names and values) kept.
KEY_MAX = 64 * 1024
HEADERS_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes | None
    key: bytes | None
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    consumer: str
    original_headers: tuple[tuple[str, bytes | None], ...] = ()  # a null value stays null
    value_bytes: int | None = None  # the original value's size, when it was cut
    key_bytes: int | None = None  # the original key's size, when it was cut
    headers_cut: int = 0  # original headers left out

    @classmethod
    def of(
        cls,
        error: InvalidEvent,
        *,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        consumer: str,
        headers: Iterable[tuple[str, bytes | None]] | None = None,
    ) -> DeadLetter:
        kept: list[tuple[str, bytes | None]] = []
        budget, cut = HEADERS_MAX, 0
        for name, val in headers or ():
            if name.startswith(HEADER_PREFIX):
                continue
            size = len(name.encode("utf-8")) + (0 if val is None else len(val))
            if cut or size > budget:  # in order: once one is left out, so are the rest
                cut += 1
                continue
            budget -= size
            kept.append((name, None if val is None else bytes(val)))
        value_bytes = key_bytes = None
        if value is not None and len(value) > VALUE_MAX:
            value_bytes, value = len(value), bytes(value[:VALUE_MAX])
        if key is not None and len(key) > KEY_MAX:
            key_bytes, key = len(key), bytes(key[:KEY_MAX])
        return cls(
            value,
            key,
            error.reason,
            error.detail,
            topic,
            partition,
            offset,
            consumer,
            tuple(kept),
            value_bytes,
            key_bytes,
            cut,
        )

    def headers(self) -> list[tuple[str, bytes | None]]:
        ours = [
            ("reason", self.reason),
            ("detail", self.detail.encode("utf-8")[:_DETAIL_MAX].decode("utf-8", "ignore")),
            ("topic", self.topic),
            ("partition", str(self.partition)),
            ("offset", str(self.offset)),
            ("consumer", self.consumer),
        ]
        if self.value_bytes is not None:
            ours.append(("value_bytes", str(self.value_bytes)))
        if self.key_bytes is not None:
            ours.append(("key_bytes", str(self.key_bytes)))
        if self.headers_cut:
            ours.append(("headers_cut", str(self.headers_cut)))
        return [(HEADER_PREFIX + name, val.encode("utf-8")) for name, val in ours] + list(
            self.original_headers
        )


def parse_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The ``streamrec.dlq.*`` headers of a dead letter as a dict (prefix stripped)."""
    return {
        name[len(HEADER_PREFIX) :]: (val or b"").decode("utf-8", "replace")
        for name, val in headers or ()
        if name.startswith(HEADER_PREFIX)
    }
