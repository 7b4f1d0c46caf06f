"""Offline RL: logged decisions -> RLlib episodes -> MARWIL (slow: starts Ray Data)."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")


def test_logged_steps_become_episodes_with_log_propensities() -> None:
    from agents.envs import make_env
    from agents.evaluate import logging_dist
    from agents.offline import log_sessions, to_episodes

    config = {"synthetic": True, "n_candidates": 10}
    env = make_env(config)
    steps = log_sessions(config, logging_dist(epsilon=0.3), 5, seed=0)
    episodes = to_episodes(steps, env.observation_space, env.action_space)
    assert len(episodes) == 5
    assert sum(len(e) for e in episodes) == len(steps)
    first = [s for s in steps if s.session_id == "s0"]
    logp = episodes[0].get_extra_model_outputs("action_logp")
    np.testing.assert_allclose(np.exp(logp), [s.propensity for s in first], rtol=1e-6)
    np.testing.assert_array_equal(episodes[0].get_actions(), [s.action for s in first])


@pytest.mark.slow
def test_marwil_from_logged_episodes_beats_random(tmp_path) -> None:
    from agents.config import RLSettings
    from agents.envs import make_env
    from agents.evaluate import logging_dist, random_dist, run_sessions, softmax_dist
    from agents.offline import log_sessions, to_episodes, train_offline, write_episodes
    from agents.policy import load_policy

    config = {"synthetic": True, "synthetic_noise": 0.2, "n_candidates": 10, "mode": "bandit"}
    env = make_env(config)
    steps = log_sessions(config, logging_dist(epsilon=0.3), 2000, seed=0)
    write_episodes(to_episodes(steps, env.observation_space, env.action_space), tmp_path / "e")
    try:
        train_offline(
            RLSettings(env_config=config, train_batch_size=256, lr=3e-3, hidden=32),
            tmp_path / "e",
            algorithm="marwil",
            iterations=8,
            out_dir=tmp_path / "out",
        )
    finally:
        ray.shutdown()
    policy = load_policy(tmp_path / "out" / "policy")
    learned = run_sessions(env, softmax_dist(policy, 0.0), 1500, seed=5)
    baseline = run_sessions(env, random_dist, 1500, seed=5)
    assert learned.returns.mean() > baseline.returns.mean()


def _decision(n_rows: int, action: int, propensity: float, n_slots: int = 4) -> dict:
    from agents.policy import N_CONTEXT, N_FEATURES

    rows = [[float(r + 1)] * N_FEATURES for r in range(n_rows)]
    return {
        "candidates": rows,
        "context": [0.5] * N_CONTEXT,
        "n_slots": n_slots,
        "action": action,
        "propensity": propensity,
    }


def test_logged_decisions_join_their_rewards_into_ordered_sessions() -> None:
    from agents.offline import steps_from_logs

    recs = [
        {"rec_id": "r2", "session_id": "a", "created_at": "2026-01-01T00:00:02Z",
         "decision": _decision(2, 1, 0.25)},
        {"rec_id": "r1", "session_id": "a", "created_at": "2026-01-01T00:00:01Z",
         "decision": _decision(3, 0, 0.5)},
        {"rec_id": "r3", "session_id": "b", "created_at": "2026-01-01T00:00:03Z",
         "decision": _decision(4, 3, 0.1)},
        {"rec_id": "r4", "session_id": "c", "created_at": "2026-01-01T00:00:04Z"},  # greedy
    ]  # fmt: skip
    rewards = [
        {"rec_id": "r1", "reward": 1.0},
        {"rec_id": "r1", "reward": 3.0},
        {"rec_id": "r3", "reward": 10.0},
        {"rec_id": "gone", "reward": 1.0},
    ]
    steps = steps_from_logs(recs, rewards)
    assert [(s.session_id, s.step, s.action, s.reward) for s in steps] == [
        ("a", 0, 0, 4.0),
        ("a", 1, 1, 0.0),
        ("b", 0, 3, 10.0),
    ]
    first = steps[0].observation
    assert first["candidates"].shape == (4, first["candidates"].shape[1])
    np.testing.assert_array_equal(first["action_mask"], [1, 1, 1, 0])
    assert first["candidates"][3].sum() == 0 and first["candidates"][2, 0] == 3.0
    assert steps[0].propensity == 0.5 and not any(s.terminated for s in steps)


def test_logs_of_different_policies_or_broken_decisions_are_refused() -> None:
    from agents.offline import steps_from_logs

    mixed = [
        {"rec_id": "x", "session_id": "a", "decision": _decision(2, 0, 0.5, n_slots=4)},
        {"rec_id": "y", "session_id": "a", "decision": _decision(2, 0, 0.5, n_slots=8)},
    ]
    with pytest.raises(ValueError, match="different slot counts"):
        steps_from_logs(mixed, [])
    broken = [{"rec_id": "x", "session_id": "a", "decision": _decision(2, 5, 0.5)}]
    with pytest.raises(ValueError, match="malformed decision"):
        steps_from_logs(broken, [])
