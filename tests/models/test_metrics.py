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
