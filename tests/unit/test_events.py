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
    jsonschema = pytest.importorskip("jsonschema")
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


def test_a_missing_type_says_so_in_plain_words() -> None:
    for raw in (b"{}", b'{"event_id": "x", "user_id": "u", "item_id": "i", "timestamp": 1}'):
        with pytest.raises(InvalidEvent) as caught:
            decode_event(raw)
        assert caught.value.reason == "missing_field"
        assert caught.value.detail.startswith("type: field required (one of view, click")
