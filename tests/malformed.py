"""Malformed inputs (name, raw bytes, expected dead-letter reason), shared by several tests."""

from __future__ import annotations

import json
from typing import Any

GOOD: dict[str, Any] = {
    "event_id": "good-1",
    "user_id": "u1",
    "session_id": "s1",
    "item_id": "i1",
    "type": "click",
    "timestamp": 1700000000,
}


def _with(**changes: Any) -> bytes:
    payload = {**GOOD, **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not _DROP}).encode()


_DROP = object()

MALFORMED: list[tuple[str, bytes | None, str]] = [
    ("empty", b"", "empty"),
    ("tombstone", None, "empty"),
    ("oversize", _with(item_id="x" * 200, context={"page": "p", "blob": "y" * 70000}), "oversize"),
    ("invalid_utf8", b"\xff\xfe\xfa", "not_utf8"),
    ("not_json", b"{not json", "malformed_json"),
    ("truncated_json", b'{"event_id": "x", "user_id"', "malformed_json"),
    ("nan_constant", b'{"event_id": "x", "value": NaN}', "malformed_json"),
    ("json_array", b"[1, 2, 3]", "not_an_object"),
    ("json_string", b'"click"', "not_an_object"),
    ("json_number", b"42", "not_an_object"),
    ("json_null", b"null", "not_an_object"),
    ("unknown_type", _with(type="teleport"), "unknown_type"),
    ("numeric_type", _with(type=7), "unknown_type"),
    ("missing_type", _with(type=_DROP), "missing_field"),
    ("missing_event_id", _with(event_id=_DROP), "missing_field"),
    ("missing_user_id", _with(user_id=_DROP), "missing_field"),
    ("missing_item_id", _with(item_id=_DROP), "missing_field"),
    ("missing_timestamp", _with(timestamp=_DROP), "missing_field"),
    ("bad_timestamp", _with(timestamp="yesterday"), "invalid_field"),
    # Valid ISO-8601 whose UTC value is past year 9999 / before year 1 (Python's datetime
    # raises OverflowError, not ValueError, converting them).
    ("timestamp_past_9999_utc", _with(timestamp="9999-12-31T23:00:00-05:00"), "invalid_field"),
    ("timestamp_before_1_utc", _with(timestamp="0001-01-01T00:00:00+01:00"), "invalid_field"),
    ("empty_item_id", _with(item_id=""), "invalid_field"),
    ("blank_user_id", _with(user_id="   "), "invalid_field"),
    ("list_user_id", _with(user_id=["u1"]), "invalid_field"),
    ("bool_user_id", _with(user_id=True), "invalid_field"),
    ("control_char_id", _with(item_id="a\nb"), "invalid_field"),
    ("too_long_id", _with(event_id="e" * 300), "invalid_field"),
    ("future_version", _with(schema_version=2), "unsupported_version"),
    ("unexpected_field", _with(price_cents=12), "unexpected_field"),
    ("rating_without_value", _with(type="rating"), "missing_field"),
    ("negative_purchase", _with(type="purchase", value=-5), "invalid_field"),
    # true/false are not numbers (pydantic reads them as 1 and 0; the schema says number)
    ("boolean_rating", _with(type="rating", value=True), "invalid_field"),
    ("boolean_position", _with(context={"rec_id": "r1", "position": False}), "invalid_field"),
    ("context_not_object", _with(context="mobile"), "invalid_field"),
]
