"""Calibrating the response model on real ML-1M data, and measuring the simulator against it.

1. **Clicks** — for each held-out user, the candidate model ranks the catalogue after their
   observed history; a candidate is a *real hit* when it is among the user's next ``window`` real
   items. ``a, b`` of ``sigmoid(a + b * affinity)`` come from a logistic regression of the hits on
   the response model's affinity. ML-1M has no impressions, so position bias is not identifiable
   from it (the Open Bandit sample's 3 positions carry 38 clicks in total, too few); the
   simulator uses a fixed DCG-style examination curve, and the statistic checked is the
   position-debiased CTR by rank (sim CTR(p) / examine(p)) against the real hit rate by rank.
2. **Session length** — a beta-geometric model (per-user leave probability ``h ~ Beta(a, b)``,
   sessions censored at ``horizon``) is matched to the held-out users' real 30-minute sessions:
   same share of one-page sessions and same capped mean (:func:`match_patience`; the maximum
   likelihood fit :func:`fit_patience` matches the bulk but misses the one-page mass).
3. **Hazard shift and boredom** — the greedy sequence-model policy is simulated; for each
   candidate boredom coefficient the logit shift of the leave probability is set by bisection so
   greedy's mean session length (capped at the horizon) equals the real one, and the coefficient
   whose share of one-page sessions and median length are closest to the real ones is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln

from agents.envs.candidates import CandidateSource
from agents.envs.data import SimulatorData
from agents.envs.response import ResponseParams, examine_probability
from agents.envs.session_env import SessionEnv, SimConfig

__all__ = [
    "SimStats",
    "calibrate",
    "fit_click_model",
    "fit_patience",
    "match_patience",
    "real_hit_rate_by_rank",
    "simulate_stats",
]

logger = logging.getLogger(__name__)

PolicyFn = Callable[[dict[str, np.ndarray]], int]


def _candidate_table(
    data: SimulatorData, source: CandidateSource, n: int, window: int, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affinity, hit label and rank of every top-``n`` candidate of ``users``."""
    affinities, hits, ranks = [], [], []
    for user in users:
        observed = data.observed[user]
        items, _ = source.top_n(observed, observed, n)
        future = set(data.future[user][:window].tolist())
        affinities.append(data.affinity(int(user))[items])
        hits.append(np.array([int(i) in future for i in items], dtype=np.float64))
        ranks.append(np.arange(len(items)))
    return np.concatenate(affinities), np.concatenate(hits), np.concatenate(ranks)


def fit_click_model(
    data: SimulatorData,
    source: CandidateSource,
    *,
    n_candidates: int = 20,
    window: int = 10,
    users: np.ndarray | None = None,
) -> tuple[float, float]:
    """Logistic regression ``hit ~ a + b * affinity`` (Newton's method); returns ``(a, b)``."""
    users = np.arange(data.n_users) if users is None else users
    affinity, hit, _ = _candidate_table(data, source, n_candidates, window, users)
    design = np.stack([np.ones_like(affinity), affinity], axis=1)  # [rows, 2]
    coef = np.zeros(2)
    for _ in range(50):
        prob = 1.0 / (1.0 + np.exp(-(design @ coef)))
        gradient = design.T @ (hit - prob)
        hessian = (design * (prob * (1 - prob))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        coef += step
        if np.abs(step).max() < 1e-8:
            break
    return float(coef[0]), float(coef[1])


def real_hit_rate_by_rank(
    data: SimulatorData,
    source: CandidateSource,
    *,
    slate_size: int = 3,
    window: int = 10,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """Real share of held-out users whose rank-``p`` candidate is among their next items."""
    users = np.arange(data.n_users) if users is None else users
    _, hit, rank = _candidate_table(data, source, slate_size, window, users)
    return np.array([hit[rank == p].mean() for p in range(slate_size)])


def fit_patience(lengths: np.ndarray, horizon: int) -> tuple[float, float]:
    """Beta-geometric MLE of session lengths censored at ``horizon``: ``(alpha, beta)``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    exact = lengths[lengths < horizon]
    n_censored = int(np.sum(lengths >= horizon))

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        alpha, beta = np.exp(log_params)
        # P(L = l) = B(alpha + 1, beta + l - 1) / B(alpha, beta)
        exact_ll = betaln(alpha + 1.0, beta + exact - 1.0) - betaln(alpha, beta)
        # P(L >= H) = B(alpha, beta + H - 1) / B(alpha, beta)
        censored_ll = betaln(alpha, beta + horizon - 1.0) - betaln(alpha, beta)
        return -float(exact_ll.sum() + n_censored * censored_ll)

    result = minimize(negative_log_likelihood, np.log([1.0, 2.0]), method="Nelder-Mead")
    alpha, beta = np.exp(result.x)
    return float(alpha), float(beta)


def match_patience(lengths: np.ndarray, horizon: int) -> tuple[float, float]:
    """Beta-geometric ``(alpha, beta)`` whose share of one-page sessions and mean length capped
    at ``horizon`` equal the data's (method of moments; the mean is monotone in the
    concentration ``alpha + beta`` at a fixed ``alpha / (alpha + beta)``)."""
    capped = np.minimum(np.asarray(lengths), horizon)
    share_1 = float(np.clip(np.mean(capped == 1), 1e-3, 1 - 1e-3))
    target = float(capped.mean())
    steps = np.arange(horizon)

    def mean_capped(concentration: float) -> float:
        alpha, beta = share_1 * concentration, (1 - share_1) * concentration
        # E[min(L, H)] = sum_{l=0}^{H-1} P(L > l),  P(L > l) = B(alpha, beta + l) / B(alpha, beta)
        return float(np.exp(betaln(alpha, beta + steps) - betaln(alpha, beta)).sum())

    low, high = np.log(1e-3), np.log(1e4)  # mean_capped decreases with the concentration
    for _ in range(60):
        middle = (low + high) / 2
        if mean_capped(float(np.exp(middle))) > target:
            low = middle
        else:
            high = middle
    concentration = float(np.exp((low + high) / 2))
    return share_1 * concentration, (1 - share_1) * concentration


def greedy_action(observation: dict[str, np.ndarray]) -> int:
    """The sequence model's top candidate (candidates come ordered by its score)."""
    return 0


@dataclass(frozen=True)
class SimStats:
    """What a policy produces in the simulator."""

    session_lengths: np.ndarray
    returns: np.ndarray
    ctr_by_position: np.ndarray
    #: Click-through by position on each session's first page only.
    first_page_ctr: np.ndarray
    mean_boredom: float
    mean_clicks: float
    coverage: float

    def summary(self) -> dict[str, Any]:
        return {
            "mean_length": float(self.session_lengths.mean()),
            "median_length": float(np.median(self.session_lengths)),
            "share_length_1": float(np.mean(self.session_lengths == 1)),
            "mean_return": float(self.returns.mean()),
            "ctr_by_position": [float(x) for x in self.ctr_by_position],
            "first_page_ctr": [float(x) for x in self.first_page_ctr],
            "coverage": self.coverage,
        }


def simulate_stats(env: SessionEnv, policy: PolicyFn, n_sessions: int, seed: int) -> SimStats:
    """Run ``n_sessions`` episodes (session ``i`` reset with seed ``seed + i``)."""
    lengths, returns, boredom, clicks_per_page = [], [], [], []
    slate_size = env.config.slate_size
    shown = np.zeros(slate_size)
    clicked = np.zeros(slate_size)
    first_clicks = np.zeros(slate_size)
    first_shown = np.zeros(slate_size)
    items: set[int] = set()
    for index in range(n_sessions):
        observation, _ = env.reset(seed=seed + index)
        total, steps, done = 0.0, 0, False
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(observation))
            total += reward
            steps += 1
            done = terminated or truncated
            page = len(info["slate"])
            shown[:page] += 1
            clicked[:page] += np.asarray(info["clicks"])
            if steps == 1:
                first_shown[:page] += 1
                first_clicks[:page] += np.asarray(info["clicks"])
            items.update(info["slate"])
            boredom.append(env.boredom)
            clicks_per_page.append(sum(info["clicks"]))
        lengths.append(steps)
        returns.append(total)
    return SimStats(
        session_lengths=np.asarray(lengths),
        returns=np.asarray(returns),
        ctr_by_position=clicked / np.maximum(shown, 1),
        first_page_ctr=first_clicks / np.maximum(first_shown, 1),
        mean_boredom=float(np.mean(boredom)),
        mean_clicks=float(np.mean(clicks_per_page)),
        coverage=len(items) / max(env.data.n_rows - 1, 1),
    )


def calibrate(
    data: SimulatorData,
    source: CandidateSource,
    *,
    config: SimConfig | None = None,
    window: int = 10,
    n_sessions: int = 400,
    seed: int = 0,
    base: ResponseParams | None = None,
    bisection_steps: int = 7,
    boredom_coefs: tuple[float, ...] = (0.1, 0.25, 0.5),
) -> ResponseParams:
    """Fit every real-data constant of :class:`ResponseParams` (see the module docstring)."""
    config = config or SimConfig()
    params = base or ResponseParams()
    intercept, slope = fit_click_model(
        data, source, n_candidates=config.n_candidates, window=window
    )
    real_lengths = np.minimum(data.session_lengths, config.horizon)
    alpha, beta = match_patience(data.session_lengths, config.horizon)
    params = params.replace(
        click_intercept=intercept, click_slope=slope, patience_alpha=alpha, patience_beta=beta
    )
    logger.info(
        "click model a=%.3f b=%.3f; patience Beta(%.3f, %.3f)", intercept, slope, alpha, beta
    )
    session_config = SimConfig(
        n_candidates=config.n_candidates,
        slate_size=config.slate_size,
        horizon=config.horizon,
        mode="session",
        users=config.users,
    )
    target = float(real_lengths.mean())
    real_share_1 = float(np.mean(real_lengths == 1))
    best: tuple[float, ResponseParams] | None = None
    for boredom_coef in boredom_coefs:
        low, high = -4.0, 4.0
        candidate = params.replace(boredom_coef=boredom_coef)
        lengths = np.zeros(1)
        for _ in range(bisection_steps):
            candidate = candidate.replace(hazard_shift=(low + high) / 2)
            env = SessionEnv(data, source, candidate, session_config)
            lengths = simulate_stats(env, greedy_action, n_sessions, seed).session_lengths
            if lengths.mean() > target:
                low = candidate.hazard_shift  # sessions too long: leave more often
            else:
                high = candidate.hazard_shift
        # Mean length is matched by the bisection; choose the coefficient that also matches
        # the share of one-page sessions and the median best.
        loss = (
            abs(float(np.mean(lengths == 1)) - real_share_1)
            + abs(float(np.median(lengths)) - float(np.median(real_lengths))) / config.horizon
        )
        logger.info(
            "boredom_coef %.2f shift %.3f: mean %.2f share_1 %.3f median %.1f (loss %.3f)",
            boredom_coef,
            candidate.hazard_shift,
            lengths.mean(),
            np.mean(lengths == 1),
            np.median(lengths),
            loss,
        )
        if best is None or loss < best[0]:
            best = (loss, candidate)
    assert best is not None
    params = best[1]
    env = SessionEnv(data, source, params, session_config)
    stats = simulate_stats(env, greedy_action, n_sessions, seed + 10_000)
    hit_rate = real_hit_rate_by_rank(data, source, slate_size=config.slate_size, window=window)
    calibration = {
        "window": window,
        "real_hit_rate_by_rank": hit_rate.tolist(),
        "examine": examine_probability(np.arange(config.slate_size)).tolist(),
        "real_session_length": {
            "mean_capped": float(real_lengths.mean()),
            "median": float(np.median(real_lengths)),
            "share_length_1": float(np.mean(real_lengths == 1)),
            "horizon": config.horizon,
        },
        "greedy_sim": stats.summary(),
    }
    logger.info("calibration: %s", calibration)
    return params.replace(calibration=calibration)
