"""The worker serving the registry's promoted sequence model, and hot-swapping on promotion."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.client import EventProducer
from streamrec.config import Settings
from streamrec.data.sequences import Vocabulary
from streamrec.events import Recommendation
from streamrec.models.registry import ModelRegistry
from tests.conftest import LiveStack
from tests.helpers import drain, wait_for, worker_process
from tests.online.conftest import tiny_model

pytestmark = pytest.mark.integration


def _events(start: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"m-{n}",
            "user_id": f"u{n % 5}",
            "session_id": f"s{n % 5}",
            "item_id": f"i{n % 30}",
            "type": "view",
            "timestamp": 1_700_000_000 + n,
        }
        for n in range(start, start + count)
    ]


def test_worker_serves_the_promoted_model_and_hot_swaps(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    from streamrec.client import create_topics

    vocab = Vocabulary([f"i{n}" for n in range(30)])
    registry = ModelRegistry(tmp_path / "models")
    first = registry.save(tiny_model(vocab.n_items, seed=1), vocab, {"dataset": "synthetic"})
    registry.promote(first)
    settings: Settings = live_stack.settings(
        stream={"ranker": "model"}, online={"registry_dir": str(registry.root)}
    )
    create_topics(settings)
    with worker_process(settings, tmp_path / "worker.log"):
        with EventProducer(settings) as producer:
            for event in _events(0, 20):
                producer.send(event)
        recs = [
            Recommendation.model_validate_json(m.value())
            for m in drain(settings, settings.topics.recommendations, 20, timeout=90)
        ]
        assert len(recs) == 20
        assert {rec.model_version for rec in recs} == {first}
        for rec in recs:
            assert len(rec.items) == settings.stream.top_k
            assert all(item.item_id.startswith("i") for item in rec.items)

        second = registry.save(tiny_model(vocab.n_items, seed=2), vocab, {"dataset": "synthetic"})
        registry.promote(second)

        probes = iter(range(1000, 2000))

        def served_second() -> bool:
            with EventProducer(settings) as producer:
                for event in _events(next(probes), 1):
                    producer.send(event)
            latest = drain(settings, settings.topics.recommendations, 10**6, timeout=3)
            versions = [Recommendation.model_validate_json(m.value()).model_version for m in latest]
            return second in versions

        wait_for(served_second, timeout=60, interval=1)
