"""The worker's rolling per-policy exploration rate and reward per recommendation."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from streamrec.stream.processor import PolicyStats


def _gauge(name: str, policy: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"policy": policy})


def test_rates_over_the_window_and_exported_gauges() -> None:
    stats = PolicyStats(window_s=10.0)
    stats.add("rl-test", recommendations=4, explored=1, reward=2.0, now=0.0)
    stats.add("rl-test", recommendations=6, explored=4, reward=3.0, now=5.0)
    stats.add("greedy-test", recommendations=5, explored=0, reward=1.0, now=5.0)
    out = stats.export(now=6.0)
    assert out["rl-test"] == pytest.approx((0.5, 0.5))
    assert out["greedy-test"] == pytest.approx((0.0, 0.2))
    assert _gauge("streamrec_policy_exploration_rate", "rl-test") == pytest.approx(0.5)
    assert _gauge("streamrec_policy_reward_mean", "greedy-test") == pytest.approx(0.2)
    # The first batch leaves the window; rewards without recommendations still count.
    stats.add("rl-test", recommendations=0, explored=0, reward=3.0, now=12.0)
    assert stats.export(now=12.0)["rl-test"] == pytest.approx((4 / 6, 1.0))
    # A policy with nothing in the window is no longer exported.
    assert "greedy-test" not in stats.export(now=30.0)
    assert _gauge("streamrec_policy_exploration_rate", "greedy-test") is None


def test_running_totals_match_a_recount_of_the_window() -> None:
    """The totals are kept incrementally; after many batches in and out of the window they
    still equal a recount of the batches inside it."""
    import random

    rng = random.Random(7)
    stats = PolicyStats(window_s=3.0)
    added: list[tuple[float, str, int, int, float]] = []
    now = 0.0
    for step in range(5_000):
        now += rng.uniform(0.0, 0.02)
        policy = rng.choice(["rl-sum", "greedy-sum"])
        recs = rng.randint(0, 40)
        row = (now, policy, recs, rng.randint(0, recs), rng.uniform(0.0, 3.0))
        stats.add(row[1], row[2], row[3], row[4], now=now)
        added.append(row)
        if step % 250 == 0:
            out = stats.export(now)
            for policy in ("rl-sum", "greedy-sum"):
                rows = [r for r in added if r[1] == policy and now - r[0] <= 3.0]
                recs_in = sum(r[2] for r in rows)
                if recs_in == 0:
                    assert policy not in out
                    continue
                expected = (sum(r[3] for r in rows) / recs_in, sum(r[4] for r in rows) / recs_in)
                assert out[policy] == pytest.approx(expected)
    assert stats.export(now + 10.0) == {}
