import math

import numpy as np
import pytest

from streamrec.models.metrics import (
    catalogue_coverage,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    ranking_metrics,
    ranks_from_scores,
)


def test_ranks_count_strictly_higher_scores() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [1.0, 0.0, 0.2, 0.2]])
    assert ranks_from_scores(scores, [2, 3]).tolist() == [1, 1]  # tie with item 2 is not worse
    assert ranks_from_scores(scores, [1, 0]).tolist() == [0, 0]


def test_hand_computed_values() -> None:
    ranks = np.array([0, 1, 9, 10, 50])
    assert hit_rate_at_k(ranks, 10) == pytest.approx(3 / 5)
    expected_ndcg = (1.0 + 1 / math.log2(3) + 1 / math.log2(11)) / 5
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected_ndcg)
    assert mrr_at_k(ranks, 10) == pytest.approx((1 + 1 / 2 + 1 / 10) / 5)
    assert hit_rate_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert ndcg_at_k([], 10) == 0.0


def test_coverage_and_bundle() -> None:
    top = np.array([[1, 2], [2, 3]])
    assert catalogue_coverage(top, 10) == pytest.approx(0.3)
    bundle = ranking_metrics([0, 20], k=10, top_items=top, n_items=10)
    assert bundle["hr@10"] == bundle["recall@10"] == pytest.approx(0.5)
    assert bundle["ndcg@10"] == pytest.approx(0.5)
    assert bundle["coverage@10"] == pytest.approx(0.3)


def test_a_repeated_target_is_a_miss_when_seen_items_are_excluded() -> None:
    """Implicit logs repeat items (view, then cart, then purchase of one sku). Excluding seen
    items, a repeat cannot be recommended: it is a miss, not a rank among the few items left,
    and masked slots of a short list are not coverage."""
    import torch

    from streamrec.models.evaluate import evaluate_scores
    from streamrec.online.prequential import UNRANKABLE, rank_targets
    from tests.models.modelkit import tiny_model

    rng = np.random.default_rng(0)
    n_rows = 31  # 30 items + padding
    inputs = [rng.integers(1, n_rows, 40) for _ in range(200)]  # most users saw most items
    targets = np.array([rng.integers(1, n_rows) for _ in inputs])
    repeats = np.array([target in set(seq) for seq, target in zip(inputs, targets, strict=True)])
    assert repeats.mean() > 0.5

    def random_scores(histories: list[np.ndarray]) -> torch.Tensor:
        return torch.rand(len(histories), n_rows, generator=torch.Generator().manual_seed(1))

    result = evaluate_scores(random_scores, inputs, targets, n_rows, k=10)
    assert (result.ranks[repeats] >= n_rows).all()
    assert result.metrics["hr@10"] <= (~repeats).mean()
    # ... at any cut-off, even one past the catalogue's size
    wide = evaluate_scores(random_scores, inputs, targets, n_rows, k=n_rows + 5)
    assert wide.metrics[f"hr@{n_rows + 5}"] == pytest.approx((~repeats).mean())
    assert 0 < result.metrics["coverage@10"] <= 1.0
    # Including seen items, a random scorer hits about k / items of the time.
    kept = evaluate_scores(random_scores, inputs, targets, n_rows, k=10, exclude_seen=False)
    assert kept.metrics["hr@10"] == pytest.approx(10 / 30, abs=0.1)

    # The prequential ranking counts a seen target as a miss too.
    model = tiny_model(n_items=n_rows)
    ranks = rank_targets(model, [[1, 2, 3], [1, 2, 3]], [2, 4], exclude_seen=True)
    assert ranks[0] == UNRANKABLE
    assert ranks[1] < n_rows
