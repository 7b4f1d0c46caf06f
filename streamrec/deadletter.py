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
                               kept up to 512 KiB, so the letter itself always fits under
                               the producer's 1 MB message limit)
=============================  ==========================================================

The original record's headers are kept after these. Both the faust worker and the plain
confluent-kafka consumers build dead letters here, so the format is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamrec.errors import InvalidEvent

__all__ = ["HEADER_PREFIX", "VALUE_MAX", "DeadLetter", "parse_headers"]

HEADER_PREFIX = "streamrec.dlq."
_DETAIL_MAX = 1000
#: Longest value kept: a record near the broker's 1 MB limit would make a letter the producer
#: refuses, and the worker would stop on it every time it reads it again.
VALUE_MAX = 512 * 1024


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
        kept = tuple(
            (name, None if val is None else bytes(val))
            for name, val in (headers or ())
            if not name.startswith(HEADER_PREFIX)
        )
        size = None
        if value is not None and len(value) > VALUE_MAX:
            size, value = len(value), bytes(value[:VALUE_MAX])
        return cls(
            value, key, error.reason, error.detail, topic, partition, offset, consumer, kept, size
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
