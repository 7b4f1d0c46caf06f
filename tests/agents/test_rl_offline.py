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
