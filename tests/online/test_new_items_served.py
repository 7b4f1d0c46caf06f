"""A version written by the fine-tuner: new items are served only once they have enough events."""

from __future__ import annotations

from pathlib import Path

from streamrec.data.sequences import Vocabulary
from streamrec.models.registry import ModelRegistry
from streamrec.online.learner import LearnerConfig, OnlineLearner
from streamrec.serving.ranker import History, RankContext
from streamrec.serving.sequence_ranker import SequenceRanker
from tests.online.conftest import tiny_model


def test_new_items_become_recommendable_after_min_events(tmp_path: Path, vocab: Vocabulary) -> None:
    learner = OnlineLearner(tiny_model(vocab.n_items), vocab, LearnerConfig(new_item_min_events=3))
    learner.observe([(f"u{n}", "hot") for n in range(3)] + [("u9", "cold")])
    registry = ModelRegistry(tmp_path / "models")
    version = registry.save(
        learner.export(),
        learner.vocab,
        {"offline_n_items": learner.offline_n_items, "new_item_min_events": 3},
    )
    registry.promote(version)
    ranker = SequenceRanker.from_registry(registry.root)
    ranked = ranker.rank([History(["i1", "i2"], user_id="x")], [RankContext()], k=vocab.n_items)[0]
    assert "hot" in ranked.item_ids
    assert "cold" not in ranked.item_ids
    assert not {"i1", "i2"} & set(ranked.item_ids)
    assert len(ranked.item_ids) == vocab.n_items - 3  # all but the two seen and "cold"
