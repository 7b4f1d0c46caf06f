"""A letter always fits the producer's limit: a huge value is cut, and its size said."""

from __future__ import annotations

from streamrec.deadletter import VALUE_MAX, DeadLetter, parse_headers
from streamrec.errors import InvalidEvent


def _letter(value: bytes) -> DeadLetter:
    return DeadLetter.of(
        InvalidEvent("oversize", "too big"),
        value=value,
        key=b"k",
        topic="t",
        partition=0,
        offset=1,
        consumer="c",
    )


def test_a_value_near_the_broker_limit_is_cut_and_its_size_kept() -> None:
    letter = _letter(b"x" * 1_000_000)
    assert letter.value is not None and len(letter.value) == VALUE_MAX < 1_000_000
    assert parse_headers(letter.headers())["value_bytes"] == "1000000"


def test_a_small_value_is_kept_whole_without_the_header() -> None:
    letter = _letter(b'{"a": 1}')
    assert letter.value == b'{"a": 1}'
    assert "value_bytes" not in parse_headers(letter.headers())
