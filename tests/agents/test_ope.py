"""Off-policy estimators (OBP underneath) against hand-computed cases, and the two validations."""

from __future__ import annotations

import numpy as np
import pytest

from agents.evaluate import greedy_dist, logging_dist, simulator_ope
from agents.ope import BanditFeedback, estimate, obd_validation, relative_error

# Four logged rounds, two actions.
FEEDBACK = BanditFeedback(
    action=np.array([0, 1, 0, 1]),
    reward=np.array([1.0, 0.0, 1.0, 1.0]),
    pscore=np.array([0.5, 0.5, 0.8, 0.2]),
)
TARGET = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.8]])
Q_HAT = np.full((4, 2), 0.5)
# Importance weights pi(a|x) / pscore = [2, 1, 0, 4].
IPS = (2 * 1 + 1 * 0 + 0 * 1 + 4 * 1) / 4  # 1.5
SNIPS = (2 * 1 + 1 * 0 + 0 * 1 + 4 * 1) / (2 + 1 + 0 + 4)  # 6 / 7
DR = 0.5 + (2 * (1 - 0.5) + 1 * (0 - 0.5) + 0 + 4 * (1 - 0.5)) / 4  # 1.125


def test_point_estimates_match_hand_computation() -> None:
    result = estimate(FEEDBACK, TARGET, estimated_rewards=Q_HAT, n_bootstrap=0)
    assert result["ips"].value == pytest.approx(IPS)
    assert result["snips"].value == pytest.approx(SNIPS)
    assert result["dr"].value == pytest.approx(DR)


def test_without_a_reward_model_there_is_no_dr() -> None:
    assert set(estimate(FEEDBACK, TARGET, n_bootstrap=0)) == {"ips", "snips"}


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    action = rng.integers(0, 2, n)
    reward = (rng.random(n) < np.where(action == 1, 0.3, 0.1)).astype(float)
    feedback = BanditFeedback(action, reward, np.full(n, 0.5))
    target = np.tile([0.0, 1.0], (n, 1))
    first = estimate(feedback, target, n_bootstrap=200, seed=3)
    again = estimate(feedback, target, n_bootstrap=200, seed=3)
    assert first == again
    for value in first.values():
        assert value.ci_low <= value.value <= value.ci_high
    assert first["ips"].ci_low < 0.3 < first["ips"].ci_high


def test_relative_error_against_exact_and_sampled_truth() -> None:
    exact = relative_error(FEEDBACK, TARGET, 1.0, estimated_rewards=Q_HAT, n_bootstrap=50)
    assert exact["ips"].value == pytest.approx(IPS - 1.0)
    assert exact["dr"].value == pytest.approx(DR - 1.0)
    sampled = relative_error(FEEDBACK, TARGET, np.array([1.0, 0.0]), n_bootstrap=50)
    assert sampled["ips"].value == pytest.approx((IPS - 0.5) / 0.5)


def test_feedback_rejects_bad_propensities() -> None:
    with pytest.raises(ValueError, match="pscore"):
        BanditFeedback(np.array([0]), np.array([1.0]), np.array([0.0]))


def test_simulator_validation_dr_is_close_to_the_true_value() -> None:
    """Small version of validation (a) in the synthetic world: exploring logger, greedy target."""
    result = simulator_ope(
        {"synthetic": True, "n_candidates": 10},
        greedy_dist,
        logger_dist=logging_dist(epsilon=0.3),
        n_rounds=4000,
        n_bootstrap=20,
    )
    assert result["true_value"] > 0
    assert abs(result["rel_error_dr"]["value"]) < 0.1
    assert abs(result["rel_error_snips"]["value"]) < 0.2


def test_obd_validation_runs_on_the_shipped_sample() -> None:
    result = obd_validation(n_bootstrap=30, n_sim=10_000)
    assert result["n_rounds_random"] == result["n_rounds_bts"] == 10_000
    assert result["clicks_random"] == 38 and result["clicks_bts"] == 42
    assert result["bts_observed_ctr"] == pytest.approx(0.0042)
    low, high = result["rel_error_dr_ci"]
    assert low <= result["rel_error_dr"] <= high
