"""Policies in the simulator: on-policy benchmarks and the simulator off-policy validation.

A *policy* here is any function ``observation -> action probabilities [n_candidates]``
(:data:`DistFn`): :func:`greedy_dist` (the sequence model's top candidate), :func:`random_dist`,
:func:`softmax_dist` over an exported policy's logits, :func:`logging_dist` (an exploring
policy: softmax over sequence-model scores mixed with uniform).

* :func:`run_sessions` — ``n`` sessions, session ``i`` reset with ``seed + i`` for every arm, so
  arms meet the same users with the same patience (paired comparison).
* :func:`simulator_ope` — bandit mode: log ``n_rounds`` impressions of the exploring policy with
  propensities, estimate the target policy's value with IPS/SNIPS/DR and compare with the exact
  on-policy value (each round's expected reward is known in closed form).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.envs import SessionEnv, make_env
from agents.ope import BanditFeedback, estimate, fit_reward_model, relative_error
from agents.policy import ExportedPolicy

__all__ = [
    "DistFn",
    "SessionResults",
    "greedy_dist",
    "logging_dist",
    "mean_ci",
    "random_dist",
    "ratio_ci",
    "run_sessions",
    "simulator_ope",
    "softmax_dist",
]

logger = logging.getLogger(__name__)

DistFn = Callable[[dict[str, np.ndarray]], np.ndarray]


def greedy_dist(observation: dict[str, np.ndarray]) -> np.ndarray:
    probs = np.zeros_like(observation["action_mask"], dtype=np.float64)
    probs[0] = 1.0
    return probs


def random_dist(observation: dict[str, np.ndarray]) -> np.ndarray:
    mask = observation["action_mask"].astype(np.float64)
    return mask / mask.sum()


def _softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    logits = np.where(mask > 0, logits, -np.inf)
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def softmax_dist(policy: ExportedPolicy, temperature: float = 1.0) -> DistFn:
    """The exported policy's softmax at ``temperature`` (0 = argmax)."""

    def dist(observation: dict[str, np.ndarray]) -> np.ndarray:
        logits = policy.logits(
            observation["candidates"], observation["context"], observation["action_mask"]
        ).astype(np.float64)
        mask = observation["action_mask"]
        if temperature <= 0:
            probs = np.zeros_like(logits)
            probs[int(np.argmax(np.where(mask > 0, logits, -np.inf)))] = 1.0
            return probs
        return _softmax(logits / temperature, mask)

    return dist


def logging_dist(temperature: float = 1.0, epsilon: float = 0.2) -> DistFn:
    """Exploring logger: ``(1 - eps) * softmax(score_z / T) + eps * uniform`` over candidates."""

    def dist(observation: dict[str, np.ndarray]) -> np.ndarray:
        mask = observation["action_mask"]
        soft = _softmax(observation["candidates"][:, 0].astype(np.float64) / temperature, mask)
        return (1 - epsilon) * soft + epsilon * random_dist(observation)

    return dist


@dataclass(frozen=True)
class SessionResults:
    returns: np.ndarray
    lengths: np.ndarray
    clicks: np.ndarray
    impressions: np.ndarray
    coverage: float

    def summary(self) -> dict[str, Any]:
        low, high = mean_ci(self.returns)
        return {
            "mean": float(self.returns.mean()),
            "ci_low": low,
            "ci_high": high,
            "session_length": float(self.lengths.mean()),
            "ctr": float(self.clicks.sum() / max(self.impressions.sum(), 1)),
            "coverage": self.coverage,
            "n_sessions": len(self.returns),
        }


def run_sessions(
    env: SessionEnv, dist: DistFn, n_sessions: int, *, seed: int = 0
) -> SessionResults:
    """Session ``i`` starts from ``reset(seed=seed + i)``; actions are drawn from ``dist`` with a
    generator seeded per session, so runs are reproducible."""
    returns, lengths, clicks, impressions = [], [], [], []
    items: set[int] = set()
    for index in range(n_sessions):
        observation, _ = env.reset(seed=seed + index)
        rng = np.random.default_rng([seed, index])
        total, steps, n_clicks, n_shown, done = 0.0, 0, 0, 0, False
        while not done:
            probs = dist(observation)
            action = int(rng.choice(len(probs), p=probs))
            observation, reward, terminated, truncated, info = env.step(action)
            total += reward
            steps += 1
            n_clicks += int(sum(info["clicks"]))
            n_shown += len(info["slate"])
            items.update(info["slate"])
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
        clicks.append(n_clicks)
        impressions.append(n_shown)
    return SessionResults(
        returns=np.asarray(returns),
        lengths=np.asarray(lengths),
        clicks=np.asarray(clicks),
        impressions=np.asarray(impressions),
        coverage=len(items) / max(env.data.n_rows - 1, 1),
    )


def mean_ci(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Normal-approximation 95 % CI of the mean."""
    values = np.asarray(values, dtype=np.float64)
    half = z * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean() - half), float(values.mean() + half)


def ratio_ci(
    numerator: np.ndarray, denominator: np.ndarray, *, n_bootstrap: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Ratio of means with a *paired* percentile bootstrap 95 % CI (same sessions resampled)."""
    rng = np.random.default_rng(seed)
    n = len(numerator)
    ratios = []
    for _ in range(n_bootstrap):
        rows = rng.integers(0, n, n)
        ratios.append(numerator[rows].mean() / max(denominator[rows].mean(), 1e-12))
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(numerator.mean() / max(denominator.mean(), 1e-12)), float(low), float(high)


def simulator_ope(
    env_config: Mapping[str, Any],
    target: DistFn,
    *,
    logger_dist: DistFn | None = None,
    n_rounds: int = 50_000,
    seed: int = 0,
    n_bootstrap: int = 200,
) -> dict[str, Any]:
    """Validation (a): log ``n_rounds`` bandit-mode impressions of the exploring ``logger_dist``,
    estimate ``target``'s value off-policy, compare with its exact on-policy value."""
    env = make_env({**dict(env_config), "mode": "bandit"})
    logger_dist = logger_dist or logging_dist()
    rng = np.random.default_rng(seed)
    n_slots = env.config.n_candidates
    features, masks, actions, pscores, rewards = [], [], [], [], []
    target_probs, truth_rows = [], []
    for index in range(n_rounds):
        observation, _ = env.reset(seed=seed * 1_000_003 + index)
        logged = logger_dist(observation)
        action = int(rng.choice(n_slots, p=logged))
        expected = env.expected_rewards()
        target_dist = target(observation)
        _, reward, _, _, _ = env.step(action)
        context = np.broadcast_to(observation["context"], (n_slots, len(observation["context"])))
        features.append(np.concatenate([observation["candidates"], context], axis=1))
        masks.append(observation["action_mask"])
        actions.append(action)
        pscores.append(logged[action])
        rewards.append(reward)
        target_probs.append(target_dist)
        truth_rows.append(float(target_dist @ expected))
    feedback = BanditFeedback(
        action=np.asarray(actions),
        reward=np.asarray(rewards, dtype=np.float64),
        pscore=np.asarray(pscores, dtype=np.float64),
    )
    action_dist = np.asarray(target_probs)
    reward_hat = fit_reward_model(
        np.asarray(features), np.asarray(masks), feedback.action, feedback.reward, seed=seed
    )
    true_value = float(np.mean(truth_rows))
    estimates = estimate(
        feedback, action_dist, estimated_rewards=reward_hat, n_bootstrap=n_bootstrap, seed=seed
    )
    errors = relative_error(
        feedback,
        action_dist,
        true_value,
        estimated_rewards=reward_hat,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return {
        "n_rounds": n_rounds,
        "true_value": true_value,
        "logging_value": float(feedback.reward.mean()),
        **{f"estimate_{name}": value.as_dict() for name, value in estimates.items()},
        **{f"rel_error_{name}": value.as_dict() for name, value in errors.items()},
    }
