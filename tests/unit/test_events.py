from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamrec.errors import InvalidEvent
from streamrec.events import (
    REASONS,
    ClickEvent,
    RatingEvent,
    Recommendation,
    RecommendedItem,
    decode_event,
    encode,
    json_schemas,
    make_event,
)
from tests.malformed import GOOD, MALFORMED

SCHEMAS = Path(__file__).resolve().parents[2] / "streamrec" / "schemas"


def test_good_event_decodes_with_utc_time_and_session_key() -> None:
    event = decode_event(json.dumps(GOOD).encode())
    assert isinstance(event, ClickEvent)
    assert event.timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert event.key == "s1"


def test_numeric_ids_are_accepted_as_strings_and_key_falls_back_to_user() -> None:
    payload = {**GOOD, "user_id": 42, "item_id": 7}
    del payload["session_id"]
    event = decode_event(json.dumps(payload).encode())
    assert (event.user_id, event.item_id, event.key) == ("42", "7", "42")


def test_iso_timestamp_with_offset_is_normalised_to_utc() -> None:
    event = decode_event(json.dumps({**GOOD, "timestamp": "2024-01-01T02:00:00+02:00"}).encode())
    assert event.timestamp == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("name", "raw", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_input_is_rejected_with_its_reason(
    name: str, raw: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw, max_bytes=65536)
    assert caught.value.reason == reason, caught.value.detail
    assert caught.value.reason in REASONS
    assert caught.value.detail


def test_there_are_at_least_twenty_kinds_of_malformed_input() -> None:
    assert len({name for name, _, _ in MALFORMED}) >= 20


def test_round_trip_of_every_event_type() -> None:
    for kind in ("view", "click", "add_to_cart", "purchase", "rating"):
        extra = {"value": 4.0} if kind == "rating" else {}
        event = make_event(kind, event_id="e", user_id="u", item_id="i", timestamp=1.5e9, **extra)
        assert decode_event(encode(event)) == event


def test_make_event_rejects_unknown_type() -> None:
    with pytest.raises(InvalidEvent, match="unknown_type"):
        make_event("teleport", event_id="e", user_id="u", item_id="i", timestamp=0)


def test_rating_requires_value() -> None:
    with pytest.raises(InvalidEvent, match="missing_field"):
        make_event("rating", event_id="e", user_id="u", item_id="i", timestamp=0)
    assert RatingEvent(event_id="e", user_id="u", item_id="i", timestamp=0, value=4).value == 4


def test_recommendation_record_round_trip() -> None:
    rec = Recommendation(
        user_id="u",
        session_id="s",
        items=[RecommendedItem(item_id="a", score=0.5, position=0, propensity=0.9)],
        model_version="pop-1",
        policy="greedy",
    )
    assert Recommendation.model_validate_json(encode(rec)) == rec
    assert len(rec.rec_id) == 32


def test_published_schema_files_match_the_models() -> None:
    """`streamrec schema` output is committed; it must not drift from the code."""
    for name, schema in json_schemas().items():
        on_disk = json.loads((SCHEMAS / name).read_text())
        assert on_disk == json.loads(json.dumps(schema)), f"regenerate {name}: streamrec schema"


def test_event_schema_validates_good_and_rejects_bad_with_jsonschema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / "event.v1.json").read_text())
    jsonschema.validate(GOOD, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, "type": "teleport"}, schema)


def test_rec_ids_are_unique_hex_and_differ_in_a_forked_child() -> None:
    import multiprocessing

    from streamrec.events import new_rec_id

    ids = [new_rec_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(rec_id) == 32 and int(rec_id, 16) >= 0 for rec_id in ids)
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child = pool.apply(new_rec_id)
    # a forked worker process must not repeat the parent's sequence
    assert child[:16] != ids[-1][:16]
    assert new_rec_id()[:16] == ids[-1][:16]


_EDGE_CASES = [
    json.dumps(GOOD).replace("1700000000", "NaN"),
    json.dumps({**GOOD, "type": "purchase"})[:-1] + ', "value": Infinity}',
    json.dumps(GOOD).replace('"u1"', '"\\ud800"'),
    "\ufeff" + json.dumps(GOOD),
    json.dumps(GOOD)[:-1] + ', "user_id": "u2"}',  # duplicate key: the last one wins
    "  " + json.dumps(GOOD) + "\n",
    json.dumps(GOOD) + " x",
    json.dumps(GOOD).replace("1700000000", "1" + "0" * 400),
    json.dumps(GOOD).replace("1700000000", '"1700000000"'),
    json.dumps({**GOOD, "schema_version": True}),
    json.dumps({**GOOD, "schema_version": 1.0}),
    json.dumps({**GOOD, "context": {"device": "tv", "extra": "x"}}),
    json.dumps([GOOD]),
]


@pytest.mark.parametrize(
    "raw",
    [m[1] for m in MALFORMED if m[1]]
    + [case.encode("utf-8", "surrogatepass") for case in _EDGE_CASES],
)
def test_one_pass_decoding_accepts_only_what_the_checked_path_accepts(raw: bytes) -> None:
    """decode_event tries pydantic-core's one-pass JSON validation first; whatever it accepts
    must decode to the same event step by step, and the step-by-step path names the reasons."""
    from pydantic import ValidationError

    from streamrec.events import _EVENT_ADAPTER, _decode_checked

    try:
        fast = _EVENT_ADAPTER.validate_json(raw)
    except ValidationError:
        return
    assert _decode_checked(raw) == fast
    assert decode_event(raw, max_bytes=len(raw)) == fast
