"""PolicyRanker: re-ranking with an exported policy, exploration with propensities, diversity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from agents.policy import CandidateScorer, ExportedPolicy, ItemTable, ScorerConfig
from streamrec.serving.policy_ranker import PolicyRanker
from streamrec.serving.ranker import History, RankContext, Ranked, Ranker

N_ITEMS = 12


class FixedRanker:
    """Candidates = every item not in the history, in id order, descending scores."""

    name = "fixed"
    version = "v1"

    def rank(
        self, histories: Sequence[History], contexts: Sequence[RankContext], k: int
    ) -> list[Ranked]:
        out = []
        for history in histories:
            ids = [f"i{n}" for n in range(1, N_ITEMS + 1) if f"i{n}" not in history.excluded()]
            ids = [*ids, "unknown-item"][:k]
            out.append(Ranked(ids, [float(len(ids) - r) for r in range(len(ids))]))
        return out


def _policy(quality_weight: float = 3.0) -> ExportedPolicy:
    """A hand-set scorer whose logit is ``quality_weight * quality`` (feature 6)."""
    scorer = CandidateScorer(ScorerConfig(hidden=8))
    with torch.no_grad():
        for parameter in scorer.parameters():
            parameter.zero_()
        scorer.encoder[0].weight[0, 6] = 1.0  # hidden_0 = tanh(tanh(quality))
        scorer.encoder[2].weight[0, 0] = 1.0
        scorer.logit_head.weight[0, 0] = quality_weight
    rng = np.random.default_rng(0)
    vectors = np.zeros((N_ITEMS + 1, 4), dtype=np.float32)
    # Items 1-6 are near-duplicates of each other; 7-12 point elsewhere, one direction each.
    vectors[1:7] = [1.0, 0.0, 0.0, 0.0]
    vectors[7:] = rng.normal(size=(6, 4))
    vectors[1:] /= np.linalg.norm(vectors[1:], axis=1, keepdims=True)
    quality = np.linspace(1.0, 0.0, N_ITEMS + 1).astype(np.float32)  # item 1 best
    items = ItemTable(
        [f"i{n}" for n in range(1, N_ITEMS + 1)],
        vectors,
        np.zeros(N_ITEMS + 1, dtype=np.float32),
        quality,
    )
    return ExportedPolicy(scorer.eval(), items, n_slots=N_ITEMS, slate_size=3, horizon=30)


def _rank(ranker: PolicyRanker, k: int = 5, **extra: str) -> Ranked:
    return ranker.rank([History(items=["i12"])], [RankContext(extra=dict(extra))], k)[0]


def test_it_is_a_ranker_and_greedy_mode_orders_by_policy_logit() -> None:
    ranker = PolicyRanker(FixedRanker(), _policy(), temperature=0.0, epsilon=0.0)
    assert isinstance(ranker, Ranker)
    ranked = _rank(ranker)
    assert ranked.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    assert ranked.propensities == [1.0] * 5
    assert ranked.scores == sorted(ranked.scores, reverse=True)
    assert ranker.version == "export+v1"


def test_exploration_logs_valid_propensities_and_is_reproducible() -> None:
    first = _rank(PolicyRanker(FixedRanker(), _policy(), temperature=1.0, epsilon=0.1, seed=3))
    again = _rank(PolicyRanker(FixedRanker(), _policy(), temperature=1.0, epsilon=0.1, seed=3))
    assert first == again
    assert len(set(first.item_ids)) == 5 and "i12" not in first.item_ids
    assert first.propensities is not None
    assert all(0.0 < p <= 1.0 for p in first.propensities)


def test_first_position_propensity_matches_the_sampling_frequency() -> None:
    ranker = PolicyRanker(FixedRanker(), _policy(1.0), temperature=1.0, epsilon=0.2, seed=0)
    draws = [_rank(ranker, k=1) for _ in range(3000)]
    top = [d for d in draws if d.item_ids[0] == "i1"]
    frequency = len(top) / len(draws)
    assert frequency == pytest.approx(top[0].propensities[0], abs=0.03)


def test_diversity_knob_raises_intra_list_diversity() -> None:
    policy = _policy()

    def mean_pairwise_cosine(ranked: Ranked) -> float:
        rows = policy.items.index()
        vectors = policy.items.vectors[[rows[i] for i in ranked.item_ids]]
        sims = vectors @ vectors.T
        return float(sims[np.triu_indices(len(vectors), 1)].mean())

    plain = _rank(PolicyRanker(FixedRanker(), policy, temperature=0.0))
    diverse = _rank(PolicyRanker(FixedRanker(), policy, temperature=0.0, diversity=5.0))
    assert mean_pairwise_cosine(diverse) < mean_pairwise_cosine(plain)
    assert diverse.item_ids[0] == "i1"


def test_unknown_candidates_follow_the_policy_page_and_bad_knobs_are_refused() -> None:
    ranked = _rank(PolicyRanker(FixedRanker(), _policy(), temperature=0.0), k=N_ITEMS + 1)
    assert ranked.item_ids[-1] == "unknown-item"
    with pytest.raises(ValueError):
        PolicyRanker(FixedRanker(), _policy(), epsilon=1.5)


def test_explored_marks_pages_that_leave_the_greedy_choice() -> None:
    greedy = PolicyRanker(FixedRanker(), _policy(), temperature=0.0, epsilon=0.0)
    assert not any(_rank(greedy).explored for _ in range(20))
    exploring = PolicyRanker(FixedRanker(), _policy(), temperature=0.0, epsilon=1.0, seed=1)
    pages = [_rank(exploring) for _ in range(50)]
    explored = [page for page in pages if page.explored]
    assert explored
    # A page is explored exactly when it differs from the greedy page.
    assert all(page.explored == (page.item_ids != _rank(greedy).item_ids) for page in pages)
    assert exploring.policy_name == "rl"


def test_each_page_logs_the_decision_the_policy_acted_on() -> None:
    policy = _policy()
    ranker = PolicyRanker(FixedRanker(), policy, temperature=1.0, epsilon=0.2, seed=1)
    ranked = _rank(ranker)
    decision = ranked.decision
    assert decision is not None and ranked.propensities is not None
    assert decision.n_slots == policy.n_slots
    pool = [f"i{n}" for n in range(1, 12)]  # the candidates the policy knows (not i12, seen)
    assert len(decision.candidates) == len(pool)
    assert pool[decision.action] == ranked.item_ids[0]
    assert decision.propensity == ranked.propensities[0]
    # Replaying the logged observation through the policy gives the logits it acted on.
    candidates = np.zeros((policy.n_slots, len(decision.candidates[0])), dtype=np.float32)
    candidates[: len(pool)] = decision.candidates
    mask = np.zeros(policy.n_slots, dtype=np.float32)
    mask[: len(pool)] = 1
    logits = policy.logits(candidates, np.asarray(decision.context, dtype=np.float32), mask)
    assert logits[decision.action] == pytest.approx(ranked.scores[0], abs=1e-3)
    quiet = PolicyRanker(FixedRanker(), policy, temperature=1.0, log_decisions=False, seed=1)
    assert _rank(quiet).decision is None
