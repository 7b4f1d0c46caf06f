from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamrec.errors import InvalidEvent
from streamrec.events import (
    REASONS,
    ClickEvent,
    OutgoingRecommendation,
    RatingEvent,
    Recommendation,
    RecommendedItem,
    decode_event,
    encode,
    json_schemas,
    make_event,
    parse_event,
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


def _outgoing(rng: random.Random) -> OutgoingRecommendation:
    """Every optional part present or not; awkward floats, text and times."""
    k = rng.choice([0, 1, 3, 10])
    words = ["a", "ü-42", "x" * 64, "7", "電影", 'q"uote', "back\\slash"]

    def maybe(value: object) -> object:
        return value if rng.random() < 0.5 else None

    floats = [0.0, -0.0, 1e-300, 123456789.123, -3.5, 1 / 3, 2.0**60, 5e-7]
    return OutgoingRecommendation(
        user_id=maybe(rng.choice(words)),  # type: ignore[arg-type]
        session_id=maybe(f"s-{rng.randrange(10**6)}"),  # type: ignore[arg-type]
        event_id=maybe(f"e-{rng.randrange(10**6)}"),  # type: ignore[arg-type]
        item_ids=[f"{rng.choice(words)}{i}" for i in range(k)],
        scores=[rng.choice([*floats, rng.uniform(-1e6, 1e6)]) for _ in range(k)],
        model_version=rng.choice(["popularity", "sasrec-20261201T000000Z-ab12"]),
        policy=rng.choice(["greedy", "epsilon_greedy"]),
        propensities=maybe([rng.choice([0.0, 1.0, rng.random()]) for _ in range(k)]),  # type: ignore[arg-type]
        explanations=maybe([rng.sample(words, rng.randrange(3)) for _ in range(k)]),  # type: ignore[arg-type]
        event_time=maybe(rng.choice([0.0, 978300760.0, rng.uniform(0, 2e9)])),  # type: ignore[arg-type]
        decision=maybe(  # type: ignore[arg-type]
            {
                "candidates": [[rng.random() for _ in range(3)] for _ in range(max(k, 1))],
                "context": [rng.random(), -1.5],
                "n_slots": 8,
                "action": rng.randrange(max(k, 1)),
                "propensity": rng.choice([1.0, 0.25, rng.uniform(0.01, 1)]),
            }
        ),
        created_at=datetime(2026, 12, 2, tzinfo=UTC)
        + timedelta(seconds=rng.randrange(10**6), microseconds=rng.choice([0, 1, 999999])),
    )


@pytest.mark.parametrize("seed", range(40))
def test_outgoing_recommendation_bytes_are_what_the_model_encodes(seed: int) -> None:
    """The worker publishes `to_json()` without building a pydantic model; it must be the
    record `encode` writes for the model of the same values, and valid by the schema."""
    import jsonschema

    out = _outgoing(random.Random(seed))
    propensities, explanations = out.propensities, out.explanations
    model = Recommendation(
        rec_id=out.rec_id,
        user_id=out.user_id,
        session_id=out.session_id,
        event_id=out.event_id,
        items=[
            RecommendedItem(
                item_id=item,
                score=score,
                position=position,
                propensity=propensities[position] if propensities else None,
                explanation=list(explanations[position]) if explanations else None,
            )
            for position, (item, score) in enumerate(zip(out.item_ids, out.scores, strict=True))
        ],
        model_version=out.model_version,
        policy=out.policy,
        created_at=out.created_at,
        event_time=out.event_time,  # epoch seconds, converted by pydantic
        decision=out.decision,  # type: ignore[arg-type]
    )
    wire = out.to_json()
    assert json.loads(wire) == json.loads(encode(model))
    assert list(json.loads(wire)) == list(json.loads(encode(model)))  # same field order
    assert out.to_model() == model
    schema = json.loads((SCHEMAS / "recommendation.v1.json").read_text())
    jsonschema.validate(json.loads(wire), schema)


def test_outgoing_recommendation_refuses_a_propensity_outside_0_1() -> None:
    out = OutgoingRecommendation(
        user_id="u",
        session_id=None,
        event_id=None,
        item_ids=["a", "b"],
        scores=[1.0, 0.5],
        model_version="v",
        policy="p",
        propensities=[0.5, 1.5],
    )
    with pytest.raises(ValueError, match=r"propensity 1\.5 of 'b'"):
        out.to_json()


def test_published_schema_files_match_the_models() -> None:
    """`streamrec schema` output is committed; it must not drift from the code."""
    for name, schema in json_schemas().items():
        on_disk = json.loads((SCHEMAS / name).read_text())
        assert on_disk == json.loads(json.dumps(schema)), f"regenerate {name}: streamrec schema"


def test_event_schema_validates_good_and_rejects_bad_with_jsonschema() -> None:
    import jsonschema

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
    json.dumps({**GOOD, "context": {"x": "@"}}).replace('"@"', "NaN"),
    json.dumps({**GOOD, "context": {"x": "@"}}).replace('"@"', "-Infinity"),
    json.dumps({**GOOD, "context": {"x": "@"}}).replace('"@"', "1e400"),
    json.dumps({**GOOD, "context": {"x": {"y": [1]}}}),
    json.dumps({**GOOD, "user_id": "\u00a0\u200b"}),
    json.dumps({**GOOD, "value": None}),
    json.dumps({**GOOD, "schema_version": False}),
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


def test_a_missing_type_says_so_in_plain_words() -> None:
    for raw in (b"{}", b'{"event_id": "x", "user_id": "u", "item_id": "i", "timestamp": 1}'):
        with pytest.raises(InvalidEvent) as caught:
            decode_event(raw)
        assert caught.value.reason == "missing_field"
        assert caught.value.detail.startswith("type: field required (one of view, click")


def _fast_accepts(raw: bytes) -> bool:
    from pydantic import ValidationError

    from streamrec.events import _EVENT_ADAPTER

    try:
        _EVENT_ADAPTER.validate_json(raw)
    except ValidationError:
        return False
    return True


def _refusal(raw: bytes | str) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw.encode() if isinstance(raw, str) else raw)
    assert caught.value.reason in REASONS
    return caught.value


_NON_FINITE_PLACES = [
    ("context_extra", {"context": {"x": "@"}}),
    ("context_position", {"context": {"position": "@"}}),
    ("context_device", {"context": {"device": "@"}}),
    ("purchase_value", {"type": "purchase", "value": "@"}),
    ("rating_value", {"type": "rating", "value": "@"}),
    ("view_value", {"type": "view", "value": "@"}),
    ("timestamp", {"timestamp": "@"}),
    ("schema_version", {"schema_version": "@"}),
    ("user_id", {"user_id": "@"}),
    ("session_id", {"session_id": "@"}),
    ("unknown_field", {"price": "@"}),
]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "changes", [c for _, c in _NON_FINITE_PLACES], ids=[n for n, _ in _NON_FINITE_PLACES]
)
def test_a_non_finite_literal_anywhere_is_malformed_json_on_both_paths(
    literal: str, changes: dict[str, object]
) -> None:
    """NaN/Infinity are not JSON: the one-pass parser reads them, so it must still refuse the
    event (and leave the naming to the checked path), wherever the number sits."""
    raw = json.dumps({**GOOD, **changes}).replace('"@"', literal).encode()
    assert not _fast_accepts(raw)
    assert _refusal(raw).reason == "malformed_json"


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_an_overflowing_number_in_context_is_refused_on_both_paths(number: str) -> None:
    raw = json.dumps({**GOOD, "context": {"x": "@"}}).replace('"@"', number).encode()
    assert not _fast_accepts(raw)
    refusal = _refusal(raw)
    assert refusal.reason == "invalid_field"
    assert "context.x" in refusal.detail
    with pytest.raises(InvalidEvent, match="invalid_field"):
        parse_event({**GOOD, "context": {"x": float("nan")}})


@pytest.mark.parametrize("version", [True, False, 1.0, "1", None, 2, 0, [1]])
def test_schema_version_is_only_the_integer_1(version: object) -> None:
    raw = json.dumps({**GOOD, "schema_version": version}).encode()
    assert not _fast_accepts(raw)
    refusal = _refusal(raw)
    assert refusal.reason == "unsupported_version", refusal.detail
    assert refusal.detail.startswith("schema_version")
    with pytest.raises(InvalidEvent) as caught:  # the producer's path names it the same way
        parse_event({**GOOD, "schema_version": version})
    assert caught.value.reason == "unsupported_version", caught.value.detail


def test_schema_version_1_or_absent_is_accepted() -> None:
    without = decode_event(json.dumps(GOOD).encode())
    assert decode_event(json.dumps({**GOOD, "schema_version": 1}).encode()) == without
    assert without.schema_version == 1


def test_context_extras_are_kept_when_json_scalars() -> None:
    import jsonschema

    context = {"device": "tv", "ab": "b", "n": 3, "f": 1.5, "flag": True, "none": None}
    payload = {**GOOD, "context": context}
    event = decode_event(json.dumps(payload).encode())
    assert event.context.model_extra == {k: v for k, v in context.items() if k != "device"}
    assert json.loads(encode(event))["context"] == {
        k: v for k, v in context.items() if v is not None
    }
    assert decode_event(encode(event)).context.model_extra == {
        "ab": "b",
        "n": 3,
        "f": 1.5,
        "flag": True,
    }
    jsonschema.validate(payload, json.loads((SCHEMAS / "event.v1.json").read_text()))


@pytest.mark.parametrize("nested", [{"a": 1}, [1, 2], [], {}])
def test_context_extras_may_not_nest(nested: object) -> None:
    import jsonschema

    payload = {**GOOD, "context": {"device": "tv", "blob": nested}}
    raw = json.dumps(payload).encode()
    assert not _fast_accepts(raw)
    refusal = _refusal(raw)
    assert refusal.reason == "invalid_field"
    assert "context.blob" in refusal.detail
    assert "string, number, boolean or null" in refusal.detail
    with pytest.raises(InvalidEvent, match="invalid_field"):
        parse_event(payload)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, json.loads((SCHEMAS / "event.v1.json").read_text()))


_BAD_IDS = [
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "\u2003\u2009",  # em space, thin space
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner, joiner
    "\ufeff",  # byte order mark / zero-width no-break space
    "\u2060",  # word joiner
    " \u00a0\u200b\t",
    "a\x7f",  # DEL
    "a\x80",
    "a\x85b",  # next line (C1)
    "\x9fz",
    "a\x1fb",
]
_GOOD_IDS = ["u1", " u1 ", "a b", "電影", "x\u200by", "\u00a0u", "é", "🎬", "-", "0"]


@pytest.mark.parametrize("bad", _BAD_IDS, ids=[repr(b) for b in _BAD_IDS])
def test_ids_blank_looking_or_with_control_characters_are_refused(bad: str) -> None:
    import re

    import jsonschema

    from streamrec.events import ID_PATTERN

    schema = json.loads((SCHEMAS / "event.v1.json").read_text())
    for field in ("event_id", "user_id", "session_id", "item_id"):
        payload = {**GOOD, field: bad}
        raw = json.dumps(payload).encode()
        assert not _fast_accepts(raw), field
        assert _refusal(raw).reason == "invalid_field"
        with pytest.raises(jsonschema.ValidationError):  # the published schema agrees
            jsonschema.validate(payload, schema)
    assert not re.match(ID_PATTERN, bad)  # replay's check of a log's ids


@pytest.mark.parametrize("good", _GOOD_IDS, ids=[repr(g) for g in _GOOD_IDS])
def test_ids_with_a_visible_character_are_accepted_as_given(good: str) -> None:
    import re

    import jsonschema

    from streamrec.events import ID_PATTERN

    payload = {**GOOD, "user_id": good, "item_id": 7}
    event = decode_event(json.dumps(payload).encode())
    assert (event.user_id, event.item_id) == (good.strip(), "7")
    jsonschema.validate(payload, json.loads((SCHEMAS / "event.v1.json").read_text()))
    assert re.match(ID_PATTERN, good)


@pytest.mark.parametrize("kind", ["view", "click"])
def test_a_null_value_on_a_type_without_value_is_taken_as_absent(kind: str) -> None:
    import jsonschema

    payload = {**GOOD, "type": kind, "value": None}
    event = decode_event(json.dumps(payload).encode())
    assert event == decode_event(json.dumps({**GOOD, "type": kind}).encode())
    assert "value" not in json.loads(encode(event))
    assert parse_event({**GOOD, "type": kind, "value": None}) == event
    jsonschema.validate(payload, json.loads((SCHEMAS / "event.v1.json").read_text()))


@pytest.mark.parametrize("value", [0, 1.5, "x", False])
def test_a_value_on_a_type_without_value_stays_unexpected(value: object) -> None:
    import jsonschema

    payload = {**GOOD, "type": "view", "value": value}
    refusal = _refusal(json.dumps(payload))
    assert refusal.reason == "unexpected_field"
    assert "value" in refusal.detail
    with pytest.raises(InvalidEvent) as caught:
        parse_event(payload)
    assert caught.value.reason == "unexpected_field"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, json.loads((SCHEMAS / "event.v1.json").read_text()))


def test_a_null_for_a_field_no_type_has_stays_unexpected() -> None:
    assert _refusal(json.dumps({**GOOD, "price_cents": None})).reason == "unexpected_field"


@pytest.mark.parametrize(
    "number", ["1.7e15", "1700000000000000000", "-1.7e15", "1e400", '"1700000000000000"']
)
def test_an_epoch_number_out_of_range_names_the_units(number: str) -> None:
    """Epoch microseconds or nanoseconds: the refusal says which units are read."""
    refusal = _refusal(json.dumps({**GOOD, "timestamp": "@"}).replace('"@"', number))
    assert refusal.reason == "invalid_field"
    assert refusal.detail.startswith("click.timestamp: epoch number too ")
    assert "epoch seconds" in refusal.detail
    assert "milliseconds" in refusal.detail
    assert "9999 are not supported" not in refusal.detail


def test_epoch_milliseconds_are_read_as_such() -> None:
    seconds = decode_event(json.dumps(GOOD).encode())
    millis = decode_event(json.dumps({**GOOD, "timestamp": 1_700_000_000_000}).encode())
    assert millis.timestamp == seconds.timestamp


def test_white_space_around_an_id_is_not_part_of_it() -> None:
    """As the loader reads a log's ids, so a client's " u1 " is the log's user u1."""
    payload = {**GOOD, "user_id": " u1\u00a0", "item_id": "\ti7 ", "event_id": " e1"}
    event = decode_event(json.dumps(payload).encode())
    assert (event.user_id, event.item_id, event.event_id) == ("u1", "i7", "e1")
    assert parse_event(payload) == event


def test_a_too_long_id_is_refused_in_characters() -> None:
    raw = json.dumps({**GOOD, "item_id": "x" * 300}).encode()
    with pytest.raises(InvalidEvent) as refused:
        decode_event(raw)
    assert refused.value.reason == "invalid_field"
    assert "300 characters, at most 256" in str(refused.value)
