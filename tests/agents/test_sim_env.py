"""The session simulator: gymnasium conformance, seeds, masking, modes, calibration on ML-1M."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agents.envs import SimConfig, make_env
from agents.envs.calibration import (
    calibrate,
    fit_patience,
    greedy_action,
    real_hit_rate_by_rank,
    simulate_stats,
)
from agents.envs.response import ResponseParams, examine_probability
from agents.envs.session_env import SessionEnv
from agents.envs.synthetic import EmbeddingCandidates

SYNTHETIC = {"synthetic": True, "n_candidates": 10, "horizon": 15}


def _rollout(env: SessionEnv, seed: int, actions: list[int]) -> list[tuple]:
    observation, _ = env.reset(seed=seed)
    trace = []
    for action in actions:
        observation, reward, terminated, truncated, info = env.step(action)
        trace.append((observation["candidates"].tobytes(), reward, terminated, info["slate"]))
        if terminated or truncated:
            break
    return trace


def test_gymnasium_checker_passes_in_both_modes() -> None:
    check_env(make_env(SYNTHETIC), skip_render_check=True)
    check_env(make_env({**SYNTHETIC, "mode": "bandit"}), skip_render_check=True)


def test_same_seed_same_episode_and_different_seed_differs() -> None:
    actions = [0, 3, 1, 2, 5, 0, 4, 1, 1, 2]
    first = _rollout(make_env(SYNTHETIC), 7, actions)
    second = _rollout(make_env(SYNTHETIC), 7, actions)
    assert first == second
    others = [_rollout(make_env(SYNTHETIC), seed, actions) for seed in range(8, 14)]
    assert any(other != first for other in others)


def test_action_mask_marks_real_candidates_and_masked_actions_are_refused() -> None:
    env = make_env({"synthetic": True, "n_candidates": 100})  # more slots than items left
    observation, _ = env.reset(seed=0)
    n_real = len(env.pool)
    assert 0 < n_real < 100
    np.testing.assert_array_equal(observation["action_mask"][:n_real], 1.0)
    np.testing.assert_array_equal(observation["action_mask"][n_real:], 0.0)
    assert not observation["candidates"][n_real:].any()
    with pytest.raises(ValueError, match="masked"):
        env.step(n_real)


def test_action_puts_the_chosen_candidate_on_top() -> None:
    env = make_env(SYNTHETIC)
    env.reset(seed=1)
    pool = env.pool.copy()
    slate = env.slate_for(4)
    assert slate[0] == pool[4]
    assert list(slate[1:]) == [item for item in pool if item != pool[4]][:2]


def test_bandit_mode_is_one_step_and_expected_reward_matches_the_average() -> None:
    env = make_env({**SYNTHETIC, "mode": "bandit"})
    env.reset(seed=3, options={"user": 5})
    expected = env.expected_reward(2)
    rewards = []
    for _ in range(3000):
        env.reset(options={"user": 5})
        _, reward, terminated, truncated, _ = env.step(2)
        assert terminated and not truncated
        rewards.append(reward)
    assert abs(np.mean(rewards) - expected) < 4 * np.std(rewards) / np.sqrt(len(rewards))


def test_repetition_bores_users_and_ends_sessions_sooner() -> None:
    env = make_env({**SYNTHETIC, "horizon": 30})
    greedy = simulate_stats(env, greedy_action, 300, seed=0)
    rng = np.random.default_rng(0)
    varied = simulate_stats(
        env, lambda obs: int(rng.integers(int(obs["action_mask"].sum()))), 300, seed=0
    )
    assert varied.mean_boredom < greedy.mean_boredom


def test_beta_geometric_fit_recovers_its_parameters() -> None:
    rng = np.random.default_rng(0)
    hazards = rng.beta(0.8, 2.5, size=20_000)
    lengths = np.minimum(rng.geometric(hazards), 30)
    alpha, beta = fit_patience(lengths, horizon=30)
    assert alpha == pytest.approx(0.8, rel=0.15)
    assert beta == pytest.approx(2.5, rel=0.15)


@pytest.fixture(scope="module")
def ml1m_world():
    """Real ML-1M users (a slice), an SVD-neighbour recommender as the candidate source."""
    from agents.envs.data import build_simulator_data
    from streamrec.data.loaders import load_movielens_1m

    frame = load_movielens_1m()
    users = sorted(frame["user_id"].unique())[:1500]
    data = build_simulator_data(frame[frame["user_id"].isin(users)], dim=16)
    return data, EmbeddingCandidates(data.item_factors)


def test_simulator_reproduces_real_ctr_by_rank_and_session_lengths(ml1m_world) -> None:
    """Tolerances: debiased first-page CTR by rank within 0.05 (absolute) of the real hit rate;
    mean session length within 10 %, share of one-page sessions within 0.08, median within 3."""
    data, source = ml1m_world
    config = SimConfig(n_candidates=20, slate_size=3, horizon=30)
    params = calibrate(data, source, config=config, n_sessions=300, bisection_steps=6)
    env = SessionEnv(data, source, params, config)
    stats = simulate_stats(env, greedy_action, 1500, seed=123)
    real_hits = real_hit_rate_by_rank(data, source, slate_size=3)
    debiased = stats.first_page_ctr / examine_probability(np.arange(3))
    np.testing.assert_allclose(debiased, real_hits, atol=0.05)
    real_lengths = np.minimum(data.session_lengths, config.horizon)
    assert stats.session_lengths.mean() == pytest.approx(real_lengths.mean(), rel=0.10)
    assert abs(np.mean(stats.session_lengths == 1) - np.mean(real_lengths == 1)) < 0.08
    assert abs(np.median(stats.session_lengths) - np.median(real_lengths)) <= 3


def test_response_params_round_trip(tmp_path) -> None:
    params = ResponseParams(click_slope=1.5, calibration={"x": [1.0]})
    params.save(tmp_path / "r.json")
    assert ResponseParams.load(tmp_path / "r.json") == params
