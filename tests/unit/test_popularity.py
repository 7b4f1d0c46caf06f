"""The popularity baseline's list: the context's items first, then the overall list, with
scores that never rise down the list."""

from __future__ import annotations

from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.ranker import History, RankContext
from streamrec.serving.service import _blend


def test_a_context_list_filled_from_the_overall_one_keeps_falling_scores() -> None:
    contextual = [("a", 5.0), ("b", 4.5)]
    overall = [("c", 9.0), ("a", 8.0), ("d", 7.5)]  # sums every context: larger scores
    blended = _blend(contextual, overall)
    assert [item for item, _ in blended] == ["a", "b", "c", "d"]
    assert blended[2:] == [("c", 4.5), ("d", 3.0)]  # spacing kept, shifted below "b"
    [ranked] = PopularityRanker().rank([History(items=["b"])], [RankContext(popular=blended)], 3)
    assert ranked.item_ids == ["a", "c", "d"]
    assert ranked.scores == sorted(ranked.scores, reverse=True)
    assert ranked.scores[0] == 0.0
    # Nothing to shift: an empty context list, or an overall list already below it.
    assert _blend([], overall) == overall
    assert _blend([("a", 10.0)], [("c", 2.0)]) == [("a", 10.0), ("c", 2.0)]
