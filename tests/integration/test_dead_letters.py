"""Malformed records land in the dead-letter topic with a reason; valid ones around them arrive."""

from __future__ import annotations

import json
import time

import pytest

from streamrec.client import EventConsumer, EventProducer
from streamrec.config import Settings
from streamrec.deadletter import parse_headers
from tests.helpers import drain
from tests.malformed import GOOD, MALFORMED

pytestmark = pytest.mark.integration


def test_validating_consumer_dead_letters_every_kind_and_keeps_going(
    stack_settings: Settings,
) -> None:
    settings = stack_settings
    with EventProducer(settings) as producer:
        for index, (name, raw, _) in enumerate(MALFORMED):
            producer.send({**GOOD, "event_id": f"before-{index}"})
            producer.send_raw(raw, key=name.encode(), headers={"source": b"fuzz", "none": None})
            producer.send({**GOOD, "event_id": f"after-{index}"})

    valid_ids: set[str] = set()
    with EventConsumer(settings, group_id="validator") as consumer:
        deadline = time.monotonic() + 60
        while len(valid_ids) < 2 * len(MALFORMED) and time.monotonic() < deadline:
            valid_ids.update(item.event.event_id for item in consumer.poll_batch(100, 0.5))
            consumer.commit()
        assert consumer.dead_lettered == len(MALFORMED)
    expected_valid = {f"{side}-{i}" for side in ("before", "after") for i in range(len(MALFORMED))}
    assert valid_ids == expected_valid

    letters = drain(settings, settings.topics.dead_letters, len(MALFORMED))
    by_key = {m.key().decode(): m for m in letters}
    assert len(letters) == len(MALFORMED)
    for name, raw, reason in MALFORMED:
        letter = by_key[name]
        headers = parse_headers(letter.headers())
        assert headers["reason"] == reason, (name, headers)
        assert headers["detail"]
        assert headers["topic"] == settings.topics.events
        assert int(headers["offset"]) >= 0
        assert headers["consumer"] == "validator"
        assert (letter.value() or b"") == (raw or b""), "original bytes must be kept"
        assert ("source", b"fuzz") in letter.headers(), "original headers must be kept"
        assert ("none", None) in letter.headers(), "a null header value stays null"


def test_consumer_resumes_from_committed_offsets(stack_settings: Settings) -> None:
    with EventProducer(stack_settings) as producer:
        for i in range(50):
            producer.send({**GOOD, "event_id": f"r{i}"})
    with EventConsumer(stack_settings, group_id="resume") as consumer:
        first: list[str] = []
        deadline = time.monotonic() + 30
        while len(first) < 50 and time.monotonic() < deadline:
            first += [c.event.event_id for c in consumer.poll_batch(20, 0.5)]
        consumer.commit()
    with EventProducer(stack_settings) as producer:
        producer.send({**GOOD, "event_id": "r-new"})
    with EventConsumer(stack_settings, group_id="resume") as consumer:
        second: list[str] = []
        deadline = time.monotonic() + 30
        while not second and time.monotonic() < deadline:
            second += [c.event.event_id for c in consumer.poll_batch(20, 0.5)]
    assert sorted(first) == sorted(f"r{i}" for i in range(50))
    assert second == ["r-new"]
    assert json.dumps(second)
