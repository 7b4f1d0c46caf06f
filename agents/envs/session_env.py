"""Gymnasium session environment: a simulated ML-1M user browsing pages of recommendations.

Each step is one page. The environment asks the candidate source (the sequence model) for the
user's top-``n_candidates`` items given the history so far; the agent's action is the index of
the candidate to show at the **top** of the page; the remaining ``slate_size - 1`` positions are
filled in the sequence model's order. The user clicks according to
:class:`~agents.envs.response.ResponseParams`, clicked items join the history (so the next
candidates change), and the user may leave.

Observation (a ``Dict``; all float32):

* ``candidates`` ``[n_candidates, N_FEATURES]`` per-candidate features (see ``FEATURES``),
  computed from what a recommender can know (sequence-model scores and item vectors, what was
  shown and clicked in the session, popularity, mean rating). The user's taste is never exposed.
* ``context`` ``[N_CONTEXT]`` session features (see ``CONTEXT``).
* ``action_mask`` ``[n_candidates]`` 1 for real candidates, 0 for padding slots.

``mode="bandit"`` ends every episode after one page (one-step episodes, reward = that page's
engagement, no continuation bonus); ``mode="session"`` runs until the user leaves or
``horizon`` pages. ``info`` carries the shown slate, clicks and each position's click
probability; :meth:`SessionEnv.expected_reward` gives the exact expected page reward of any
action (used as the ground truth for off-policy evaluation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from agents.envs.candidates import CandidateSource
from agents.envs.data import SimulatorData
from agents.envs.response import ResponseParams, examine_probability
from agents.policy import (
    CONTEXT,
    FEATURES,
    N_CONTEXT,
    N_FEATURES,
    candidate_features,
    session_context,
)

__all__ = [
    "CONTEXT",
    "FEATURES",
    "N_CONTEXT",
    "N_FEATURES",
    "SessionEnv",
    "SimConfig",
    "policy_spaces",
]

logger = logging.getLogger(__name__)


def policy_spaces(n_slots: int) -> tuple[gym.spaces.Dict, gym.spaces.Discrete]:
    """Observation and action space of a policy with ``n_slots`` candidate slots (the
    simulator's, and those of episodes built from the worker's logged decisions)."""
    observation_space = gym.spaces.Dict(
        {
            "candidates": gym.spaces.Box(-10.0, 10.0, (n_slots, N_FEATURES), np.float32),
            "context": gym.spaces.Box(-10.0, 10.0, (N_CONTEXT,), np.float32),
            "action_mask": gym.spaces.Box(0.0, 1.0, (n_slots,), np.float32),
        }
    )
    return observation_space, gym.spaces.Discrete(n_slots)


@dataclass(frozen=True)
class SimConfig:
    n_candidates: int = 20
    slate_size: int = 3
    horizon: int = 30
    mode: Literal["session", "bandit"] = "session"
    #: Restrict simulated users to these indices (None = all held-out users).
    users: tuple[int, ...] | None = None


class SessionEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        data: SimulatorData,
        candidates: CandidateSource,
        params: ResponseParams,
        config: SimConfig | None = None,
    ) -> None:
        self.data = data
        self.source = candidates
        self.params = params
        self.config = config or SimConfig()
        self.observation_space, self.action_space = policy_spaces(self.config.n_candidates)
        self._policy_vectors = candidates.item_vectors()
        self._users = np.asarray(
            self.config.users if self.config.users is not None else range(data.n_users)
        )
        self._examine = examine_probability(np.arange(self.config.slate_size))
        self._pool = np.zeros(0, dtype=np.int64)
        self._pool_scores = np.zeros(0, dtype=np.float32)

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        user = (options or {}).get("user")
        self.user = int(user) if user is not None else int(rng.choice(self._users))
        self.patience = float(rng.beta(self.params.patience_alpha, self.params.patience_beta))
        self.history = list(self.data.observed[self.user].tolist())
        self._affinity = self.data.affinity(self.user)
        self._pool_key: tuple[int, int] | None = None
        self.shown_counts: dict[int, int] = {}
        self.last_page: list[int] = []
        self.clicked: list[int] = []
        self.boredom = 0.0
        self.step_index = 0
        self.total_clicks = 0
        self.last_clicks = 0
        self.last_repeat_share = 0.0
        self._refresh_pool()
        return self._observation(), {"user": self.user}

    def step(
        self, action: np.int64 | int
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = int(action)
        if not 0 <= action < len(self._pool):
            raise ValueError(f"action {action} is masked (pool has {len(self._pool)} items)")
        rng = self.np_random
        slate = self.slate_for(action)
        click_probs = self._click_probabilities(slate)
        clicks = rng.random(len(slate)) < click_probs
        clicked_items = [int(item) for item, hit in zip(slate, clicks, strict=True) if hit]
        reward = float(
            sum(1.0 + self.params.watch_weight * self.data.item_quality[i] for i in clicked_items)
        )
        repeat_share = self._repeat_share(slate)
        for item in slate:
            self.shown_counts[int(item)] = self.shown_counts.get(int(item), 0) + 1
        self.boredom = self.params.boredom_decay * self.boredom + repeat_share
        self.history.extend(clicked_items)
        self.clicked.extend(clicked_items)
        self.last_page = [int(item) for item in slate]
        self.last_clicks = len(clicked_items)
        self.total_clicks += len(clicked_items)
        self.last_repeat_share = repeat_share
        self.step_index += 1

        leave_prob = self.leave_probability(len(clicked_items))
        left = bool(rng.random() < leave_prob)
        bandit = self.config.mode == "bandit"
        terminated = left or bandit
        truncated = not terminated and self.step_index >= self.config.horizon
        if not terminated and not bandit:
            reward += self.params.continue_bonus
        if not (terminated or truncated):
            self._refresh_pool()
        info = {
            "slate": [int(item) for item in slate],
            "clicks": clicks.astype(np.int64).tolist(),
            "click_probs": click_probs.tolist(),
            "left": left,
            "user": self.user,
        }
        return self._observation(), reward, terminated, truncated, info

    # -- dynamics -----------------------------------------------------------------------------
    def slate_for(self, action: int) -> np.ndarray:
        """The page an action produces: candidate ``action`` on top, then sequence-model order."""
        head = self._pool[action]
        rest = [item for item in self._pool if item != head][: self.config.slate_size - 1]
        return np.array([head, *rest], dtype=np.int64)

    def _click_probabilities(self, slate: np.ndarray) -> np.ndarray:
        params = self.params
        affinity = self._affinity[slate]
        repeats = np.array([min(self.shown_counts.get(int(i), 0), 3) for i in slate])
        logits = params.click_intercept + params.click_slope * affinity
        logits = logits - params.repeat_penalty * repeats
        examine = self._examine[: len(slate)]
        return np.asarray(examine / (1.0 + np.exp(-logits)), dtype=np.float64)

    def _repeat_share(self, slate: np.ndarray) -> float:
        """Share of the page that repeats an item shown before or nearly duplicates a recent
        click (cosine in the response space above ``duplicate_cosine``)."""
        factors = self.data.item_factors
        recent = self.clicked[-5:]
        repeated = 0
        for item in slate:
            if self.shown_counts.get(int(item), 0) > 0 or (
                recent
                and float(np.max(factors[recent] @ factors[item])) > self.params.duplicate_cosine
            ):
                repeated += 1
        return repeated / max(len(slate), 1)

    def leave_probability(self, clicks: int) -> float:
        params = self.params
        patience = min(max(self.patience, 1e-4), 1 - 1e-4)
        logit = np.log(patience / (1.0 - patience))
        logit += params.hazard_shift + params.boredom_coef * self.boredom
        logit -= params.satisfaction_coef * clicks
        return float(1.0 / (1.0 + np.exp(-logit)))

    def expected_reward(self, action: int) -> float:
        """Exact expected engagement of the page ``action`` would produce (no continuation)."""
        slate = self.slate_for(int(action))
        probs = self._click_probabilities(slate)
        values = 1.0 + self.params.watch_weight * self.data.item_quality[slate]
        return float(np.sum(probs * values))

    def expected_rewards(self) -> np.ndarray:
        """:meth:`expected_reward` for every candidate (0 for masked slots)."""
        out = np.zeros(self.config.n_candidates)
        for action in range(len(self._pool)):
            out[action] = self.expected_reward(action)
        return out

    @property
    def pool(self) -> np.ndarray:
        """The current candidates' item indices, best sequence-model score first."""
        return self._pool

    # -- observation ----------------------------------------------------------------------------
    def _refresh_pool(self) -> None:
        key = (self.user, len(self.history))  # the history only grows, by clicks
        if key == self._pool_key:
            return
        self._pool_key = key
        exclude = np.asarray(self.history, dtype=np.int64)
        self._pool, self._pool_scores = self.source.top_n(
            np.asarray(self.history, dtype=np.int64), exclude, self.config.n_candidates
        )

    def _observation(self) -> dict[str, np.ndarray]:
        pool = self._pool
        features, mask = candidate_features(
            pool,
            self._pool_scores,
            self.config.n_candidates,
            vectors=self._policy_vectors,
            popularity=self.data.item_popularity,
            quality=self.data.item_quality,
            last_page=self.last_page,
            recent=self.clicked,
            times_shown=[self.shown_counts.get(int(i), 0) for i in pool],
        )
        context = session_context(
            self.step_index,
            self.config.horizon,
            self.last_clicks,
            self.total_clicks,
            self.config.slate_size,
            self.last_repeat_share,
        )
        return {"candidates": features, "context": context, "action_mask": mask}
