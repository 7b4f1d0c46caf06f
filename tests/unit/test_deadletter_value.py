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


def test_a_huge_key_and_headers_are_cut_so_the_letter_fits() -> None:
    from streamrec.deadletter import HEADERS_MAX, KEY_MAX

    headers = [(f"h{n}", b"y" * 10_000) for n in range(20)] + [("null", None)]
    letter = DeadLetter.of(
        InvalidEvent("oversize", "too big"),
        value=b"x" * 900_000,
        key=b"k" * 900_000,
        topic="t",
        partition=0,
        offset=1,
        consumer="c",
        headers=headers,
    )
    meta = parse_headers(letter.headers())
    assert letter.key is not None and len(letter.key) == KEY_MAX
    assert meta["key_bytes"] == "900000"
    kept = [name for name, _ in letter.original_headers]
    assert kept == [f"h{n}" for n in range(6)]  # in order, up to HEADERS_MAX bytes
    assert meta["headers_cut"] == str(len(headers) - 6)
    total = (
        len(letter.value or b"")
        + len(letter.key)
        + sum(len(name) + len(val or b"") for name, val in letter.headers())
    )
    assert total < 1_000_000 - 10_000
    assert sum(len(name) + len(val or b"") for name, val in letter.original_headers) <= HEADERS_MAX
