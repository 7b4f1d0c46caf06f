"""A real worker serving the RL policy (ranker=policy over popularity candidates): records carry
policy "rl" and per-item propensities, and the worker exports the policy's exploration rate and
reward per recommendation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.policy import CandidateScorer, ItemTable, ScorerConfig, export_policy
from streamrec.client import EventProducer
from streamrec.config import Settings
from streamrec.errors import ConfigError
from streamrec.events import Recommendation
from streamrec.serving.factory import build_ranker
from streamrec.stack import free_port
from tests.helpers import drain, metric_value, wait_for, worker_process

pytestmark = pytest.mark.integration

N_ITEMS = 30


def _export(directory: Path) -> Path:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N_ITEMS + 1, 8)).astype(np.float32)
    vectors[0] = 0
    items = ItemTable(
        [f"pi{n}" for n in range(1, N_ITEMS + 1)],
        vectors,
        rng.random(N_ITEMS + 1).astype(np.float32),
        rng.random(N_ITEMS + 1).astype(np.float32),
    )
    scorer = CandidateScorer(ScorerConfig(hidden=8)).eval()
    with torch.no_grad():  # distinct logits (a fresh head may score every candidate alike)
        for parameter in scorer.parameters():
            parameter.normal_(0.0, 0.5)
    return export_policy(directory, scorer, items, n_slots=20, slate_size=3, horizon=10)


def _serving(settings: Settings, policy_dir: Path, **stream: float) -> Settings:
    """Settings of a worker serving the exported policy over popularity candidates."""
    update = {
        "ranker": "policy",
        "policy_path": policy_dir,
        "policy_candidates": "popularity",
        **stream,
    }
    return settings.model_copy(update={"stream": settings.stream.model_copy(update=update)})


def test_worker_serves_the_policy_with_propensities_and_metrics(
    stack_settings: Settings, tmp_path: Path
) -> None:
    policy_dir = _export(tmp_path / "policy")
    settings = _serving(stack_settings, policy_dir, policy_temperature=1.0, policy_epsilon=0.2)
    assert build_ranker(settings).name == "rl-policy(popularity)"
    events = [
        {
            "event_id": f"pol-{n}",
            "user_id": f"pu{n % 6}",
            "session_id": f"ps{n % 6}",
            "item_id": f"pi{1 + (n * 7) % N_ITEMS}",
            "type": "view",
            "timestamp": 1_700_000_000 + n,
        }
        for n in range(60)
    ]
    port = free_port()
    with worker_process(settings, tmp_path / "worker.log", metrics_port=port):
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event)
        messages = drain(settings, settings.topics.recommendations, len(events), timeout=90)
        recs = [Recommendation.model_validate_json(m.value()) for m in messages]
        assert len(recs) == len(events)
        assert {rec.policy for rec in recs} == {"rl"}
        full = [rec for rec in recs if len(rec.items) >= 3]
        assert full, "the policy never had candidates to re-rank"
        for rec in full:
            propensities = [item.propensity for item in rec.items]
            assert all(p is not None and 0.0 < p <= 1.0 for p in propensities)
        wait_for(lambda: metric_value(port, "streamrec_policy_exploration_rate") > 0, timeout=30)
        assert metric_value(port, "streamrec_policy_exploration_rate") <= 1.0


def test_policy_ranker_without_an_export_is_a_clear_error(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings.model_copy(
        update={
            "stream": stack_settings.stream.model_copy(
                update={"ranker": "policy", "policy_path": tmp_path / "nothing-here"}
            )
        }
    )
    with pytest.raises(ConfigError, match="POLICY_PATH"):
        build_ranker(settings)


@pytest.mark.slow
def test_logged_decisions_and_rewards_from_the_topics_train_marwil(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """The offline-RL loop on the real stack: the worker logs each page's decision, clicks on
    shown items come back as rewards, `collect` joins both topics into episodes, MARWIL trains
    on them and exports a policy the worker can serve."""
    ray = pytest.importorskip("ray")
    from agents.config import RLSettings
    from agents.offline import collect_episodes, train_offline
    from agents.policy import load_policy

    policy_dir = _export(tmp_path / "policy")
    settings = _serving(stack_settings, policy_dir, policy_epsilon=0.3)
    views = [
        {
            "event_id": f"ol-{n}",
            "user_id": f"ou{n % 8}",
            "session_id": f"os{n % 8}",
            "item_id": f"pi{1 + (n * 7) % N_ITEMS}",
            "type": "view",
            "timestamp": 1_700_000_000 + n,
        }
        for n in range(80)
    ]
    with worker_process(settings, tmp_path / "worker.log"):
        with EventProducer(settings) as producer:
            for event in views:
                producer.send(event)
        recs = [
            Recommendation.model_validate_json(m.value())
            for m in drain(settings, settings.topics.recommendations, len(views), timeout=90)
        ]
        logged = [rec for rec in recs if rec.decision is not None]
        assert logged, "no recommendation carried the policy's decision"
        for rec in logged:
            assert rec.decision is not None
            assert rec.decision.propensity == rec.items[0].propensity
        # The newest page of each session: click its top item (a reward for that page).
        newest = {rec.session_id: rec for rec in logged}
        clicks = [
            {
                "event_id": f"olc-{n}",
                "user_id": rec.user_id,
                "session_id": rec.session_id,
                "item_id": rec.items[0].item_id,
                "type": "click",
                "timestamp": 1_700_000_100 + n,
            }
            for n, rec in enumerate(newest.values())
        ]
        with EventProducer(settings) as producer:
            for event in clicks:
                producer.send(event)
        assert len(drain(settings, settings.topics.rewards, len(clicks), timeout=60)) >= len(clicks)
    summary = collect_episodes(
        settings.kafka.bootstrap_servers,
        settings.topics.recommendations,
        settings.topics.rewards,
        tmp_path / "episodes",
        logged_by=load_policy(policy_dir),
        kafka_config=settings.kafka.librdkafka(),
    )
    assert summary["sessions"] == len(newest)
    assert summary["steps"] >= len(logged)  # the clicks triggered pages too
    assert summary["rewarded_steps"] == len(clicks)
    try:
        history = train_offline(
            RLSettings(
                env_config={"synthetic": True}, train_batch_size=32, minibatch_size=32, hidden=8
            ),
            tmp_path / "episodes",
            algorithm="marwil",
            iterations=2,
            out_dir=tmp_path / "marwil",
            logged_by=load_policy(policy_dir),
        )
    finally:
        ray.shutdown()
    assert len(history) == 2 and all(np.isfinite(row["policy_loss"]) for row in history)
    learned = load_policy(tmp_path / "marwil" / "policy")
    served = load_policy(policy_dir)
    assert learned.n_slots == served.n_slots and learned.items.item_ids == served.items.item_ids
    np.testing.assert_array_equal(learned.items.vectors, served.items.vectors)
