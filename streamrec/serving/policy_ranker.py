"""A :class:`~streamrec.serving.ranker.Ranker` that re-ranks candidates with the RL policy.

The candidate ranker (normally the sequence model's :class:`SequenceRanker`) proposes its
top-``n_candidates``; the exported policy (``agents/policy.py``: plain torch, no Ray) scores them
with the features it was trained on, and the page is built position by position
(Plackett-Luce without replacement)::

    p_j(i) = (1 - epsilon) * softmax((logit_i - diversity * max_cos(i, chosen)) / temperature)
             + epsilon * uniform(remaining)

* ``temperature`` / ``epsilon`` — exploration. ``temperature=0`` and ``epsilon=0`` is the
  deterministic greedy re-ranking. ``Ranked.propensities[j]`` is ``p_j`` of the item shown at
  position ``j``, *conditional on the items above it*; the probability of the whole page is their
  product. These go into the recommendation record for off-policy evaluation and offline RL.
* ``diversity`` — an MMR-style penalty on the cosine similarity (the policy's item vectors) to
  items already placed: raises intra-list diversity and catalogue coverage, so the policy can
  counter filter bubbles.

Session state the policy uses, read from :class:`RankContext.extra` when the caller has it
(all optional): ``last_page`` and ``shown`` (comma-separated item ids shown on the previous page
/ so far in the session, repeats allowed), ``page`` (pages shown so far), ``clicks_last_page``,
``clicks`` (session total). The newest history items play the role of the session's clicks.
Candidates the policy has no vector for are appended after the policy's page in the candidate
ranker's order (propensity 1: given the page above, their placement is deterministic). One
batched forward pass scores every request of a :meth:`PolicyRanker.rank` call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.policy import ExportedPolicy, candidate_features, load_policy, session_context
from streamrec.serving.ranker import Decision, History, RankContext, Ranked, Ranker

__all__ = ["PolicyRanker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    """One request's policy inputs and how its pool maps back to the candidate list."""

    features: np.ndarray  # [n_slots, N_FEATURES]
    session: np.ndarray  # [N_CONTEXT]
    mask: np.ndarray  # [n_slots]
    pool: np.ndarray  # [n_pool] policy item rows
    positions: list[int]  # index in the candidate list of each pool item
    unknown: list[int]  # candidate-list indices the policy has no vector for


def _ids(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


class PolicyRanker:
    """Re-ranks ``candidates``' top-N with an exported policy (see the module docstring)."""

    def __init__(
        self,
        candidates: Ranker,
        policy: ExportedPolicy,
        *,
        n_candidates: int | None = None,
        temperature: float = 1.0,
        epsilon: float = 0.0,
        diversity: float = 0.0,
        seed: int | None = None,
        version: str | None = None,
        log_decisions: bool = True,
    ) -> None:
        if temperature < 0 or not 0.0 <= epsilon <= 1.0 or diversity < 0:
            raise ValueError("need temperature >= 0, 0 <= epsilon <= 1, diversity >= 0")
        self.candidates = candidates
        self.policy = policy
        self.n_candidates = n_candidates or policy.n_slots
        self.temperature = temperature
        self.epsilon = epsilon
        self.diversity = diversity
        self.log_decisions = log_decisions
        self._rows = policy.items.index()
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._version = version or str(policy.meta.get("version", "export"))

    @classmethod
    def from_export(cls, path: str | Path, candidates: Ranker, **kwargs: object) -> PolicyRanker:
        """Serve the policy exported at ``path`` (``streamrec agent export``)."""
        policy = load_policy(path)
        kwargs.setdefault("version", Path(path).name)
        return cls(candidates, policy, **kwargs)  # type: ignore[arg-type]

    #: The ``policy`` label of its recommendations, rewards and metrics.
    policy_name = "rl"

    @property
    def name(self) -> str:
        return f"rl-policy({self.candidates.name})"

    @property
    def version(self) -> str:
        return f"{self._version}+{self.candidates.version}"

    def rank(
        self, histories: Sequence[History], contexts: Sequence[RankContext], k: int
    ) -> list[Ranked]:
        """Candidates for the whole batch, one batched policy forward, then a page each."""
        proposals = self.candidates.rank(histories, contexts, self.n_candidates)
        prepared = [
            self._prepare(history, _context(contexts, row), ranked)
            for row, (history, ranked) in enumerate(zip(histories, proposals, strict=True))
        ]
        scored = [p for p in prepared if p is not None]
        all_logits = (
            self.policy.logits(
                np.stack([p.features for p in scored]),
                np.stack([p.session for p in scored]),
                np.stack([p.mask for p in scored]),
            )
            if scored
            else np.zeros((0, self.policy.n_slots))
        )  # [n_scored, n_slots]
        results: list[Ranked] = []
        next_row = 0
        for request, ranked in zip(prepared, proposals, strict=True):
            if request is None:
                results.append(_truncate(ranked, k))
                continue
            results.append(self._page(request, ranked, all_logits[next_row], k))
            next_row += 1
        return results

    # -- one request ------------------------------------------------------------------------
    def _rows_of(self, item_ids: Sequence[str]) -> list[int]:
        return [row for row in (self._rows.get(item_id) for item_id in item_ids) if row]

    def _prepare(self, history: History, context: RankContext, ranked: Ranked) -> _Request | None:
        rows = self._rows
        known = [(i, rows[item]) for i, item in enumerate(ranked.item_ids) if item in rows]
        if not known:
            return None
        positions = [i for i, _ in known][: self.policy.n_slots]
        pool = np.array([row for _, row in known][: self.policy.n_slots], dtype=np.int64)
        scores = np.array([ranked.scores[i] for i in positions], dtype=np.float64)
        extra = context.extra
        shown = self._rows_of(_ids(extra.get("shown")))
        items = self.policy.items
        features, mask = candidate_features(
            pool,
            scores,
            self.policy.n_slots,
            vectors=items.vectors,
            popularity=items.popularity,
            quality=items.quality,
            last_page=self._rows_of(_ids(extra.get("last_page"))),
            recent=self._rows_of(list(history.items)[-10:]),
            times_shown=[shown.count(int(row)) for row in pool],
        )
        session = session_context(
            int(extra.get("page", "0") or 0),
            self.policy.horizon,
            int(extra.get("clicks_last_page", "0") or 0),
            int(extra.get("clicks", "0") or 0),
            self.policy.slate_size,
            0.0,
        )
        unknown = [i for i, item in enumerate(ranked.item_ids) if item not in rows]
        return _Request(features, session, mask, pool, positions, unknown)

    def _page(self, request: _Request, ranked: Ranked, logits: np.ndarray, k: int) -> Ranked:
        pool = request.pool
        logits = logits[: len(pool)].astype(np.float64)
        chosen, propensities, explored = self._build_page(logits, pool, min(k, len(pool)))
        item_ids = [ranked.item_ids[request.positions[c]] for c in chosen]
        out_scores = [float(logits[c]) for c in chosen]
        for i in request.unknown[: max(k - len(item_ids), 0)]:
            item_ids.append(ranked.item_ids[i])
            out_scores.append(float("-inf"))
            propensities.append(1.0)  # appended deterministically after the sampled page
        decision = None
        if self.log_decisions and chosen:
            decision = Decision(
                candidates=np.round(request.features[: len(pool)], 5).tolist(),
                context=np.round(request.session, 5).tolist(),
                n_slots=self.policy.n_slots,
                action=chosen[0],
                propensity=propensities[0],
            )
        return Ranked(
            item_ids=item_ids,
            scores=out_scores,
            propensities=propensities,
            explored=explored,
            decision=decision,
        )

    @property
    def _deterministic(self) -> bool:
        return self.temperature == 0 and self.epsilon == 0

    def _build_page(
        self, logits: np.ndarray, pool: np.ndarray, k: int
    ) -> tuple[list[int], list[float], bool]:
        """Positions of the page, each one's propensity, and whether any pick was not the
        greedy one (the highest adjusted score) at its step."""
        vectors = self.policy.items.vectors[pool]  # [n, dim]
        remaining = np.ones(len(pool), dtype=bool)
        penalty = np.zeros(len(pool))
        chosen: list[int] = []
        propensities: list[float] = []
        explored = False
        for _ in range(k):
            adjusted = np.where(remaining, logits - self.diversity * penalty, -np.inf)
            if self.temperature > 0:
                soft = np.exp((adjusted - adjusted.max()) / self.temperature)
            else:
                soft = (adjusted == adjusted.max()).astype(np.float64)
            soft = soft / soft.sum()
            uniform = remaining / remaining.sum()
            probs = (1 - self.epsilon) * soft + self.epsilon * uniform
            if self._deterministic:
                pick = int(np.argmax(probs))
            else:
                with self._lock:
                    pick = int(self._rng.choice(len(pool), p=probs))
            explored = explored or adjusted[pick] < adjusted.max()
            chosen.append(pick)
            propensities.append(float(probs[pick]))
            remaining[pick] = False
            similarity = vectors @ vectors[pick]
            penalty = np.maximum(penalty, similarity) if chosen[:-1] else similarity
        return chosen, propensities, bool(explored)


def _context(contexts: Sequence[RankContext], row: int) -> RankContext:
    return contexts[row] if row < len(contexts) else RankContext()


def _truncate(ranked: Ranked, k: int) -> Ranked:
    if len(ranked.item_ids) <= k:
        return ranked
    return Ranked(
        item_ids=ranked.item_ids[:k],
        scores=ranked.scores[:k],
        explanations=ranked.explanations[:k] if ranked.explanations else None,
        propensities=ranked.propensities[:k] if ranked.propensities else None,
        explored=ranked.explored,
    )
