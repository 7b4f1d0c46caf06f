from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrec.data.sequences import Vocabulary
from streamrec.models.batching import left_pad
from streamrec.online.buffer import ReplayBuffer
from streamrec.online.learner import LearnerConfig, OnlineLearner, training_batch
from streamrec.online.prequential import UNRANKABLE, RollingMetrics, rank_targets
from tests.online.conftest import tiny_model


def _scores(model: torch.nn.Module, history: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model.scores(model.last_hidden(left_pad([history], 12)))[0]  # type: ignore[operator]


def test_growth_keeps_old_indices_and_old_predictions_until_trained(vocab: Vocabulary) -> None:
    learner = OnlineLearner(tiny_model(vocab.n_items), vocab, LearnerConfig(window=50))
    old_index = {item: vocab[item] for item in vocab.ids}
    history = [vocab["i1"], vocab["i2"], vocab["i3"]]
    before = _scores(learner.candidate, history).clone()

    learner.observe([("u1", "brand-new"), ("u2", "i4"), ("u1", "another-new")])

    assert {item: vocab[item] for item in old_index} == old_index
    assert vocab["brand-new"] == 31 and vocab["another-new"] == 32
    assert learner.candidate.n_items == vocab.size == 33
    after = _scores(learner.candidate, history)
    torch.testing.assert_close(after[: before.shape[0]], before)  # same scores for old items
    mean_row = learner.serving.item_embedding.weight[1:].mean(dim=0)
    torch.testing.assert_close(learner.candidate.item_embedding.weight[31], mean_row)
    assert learner.serving.n_items == 31, "the serving model is not touched"


def test_a_new_item_becomes_rankable_and_learnt(vocab: Vocabulary) -> None:
    learner = OnlineLearner(
        tiny_model(vocab.n_items), vocab, LearnerConfig(lr=1e-2, batch_size=32, window=100)
    )
    # Users who watch i1 then the new item: the serving model cannot rank it at all.
    first = learner.observe([(f"u{n}", "i1") for n in range(40)])
    assert (first.serving_ranks == UNRANKABLE).all()  # empty histories: nothing to rank from
    second = learner.observe([(f"u{n}", "fresh") for n in range(40)])
    assert second.new_items == ["fresh"]
    assert (second.serving_ranks == UNRANKABLE).all()
    fresh = vocab["fresh"]
    untrained = rank_targets(learner.candidate, [[vocab["i1"]]], [fresh])[0]
    for _ in range(30):
        learner.train(steps=2)
    trained = rank_targets(learner.candidate, [[vocab["i1"]]], [fresh])[0]
    assert trained < UNRANKABLE
    assert trained < untrained and trained < 3
    assert learner.candidate.item_popularity[fresh] == 40


def test_prequential_ranks_before_learning_and_histories_within_a_batch(
    vocab: Vocabulary,
) -> None:
    learner = OnlineLearner(tiny_model(vocab.n_items), vocab, LearnerConfig(window=10))
    obs = learner.observe([("u", "i1"), ("u", "i2"), ("u", "i3")])
    assert obs.serving_ranks[0] == UNRANKABLE  # no history yet
    assert (obs.serving_ranks[1:] < vocab.size).all()
    assert learner.histories["u"] == [vocab["i1"], vocab["i2"], vocab["i3"]]
    assert [list(example) for example in learner.buffer.recent] == [
        [vocab["i1"], vocab["i2"]],
        [vocab["i1"], vocab["i2"], vocab["i3"]],
    ]


@pytest.mark.parametrize("repeats", ["keep", "first"])
def test_repeats_first_ranks_a_repeat_but_does_not_learn_it(
    vocab: Vocabulary, repeats: str
) -> None:
    config = LearnerConfig(window=10, repeats=repeats)
    learner = OnlineLearner(tiny_model(vocab.n_items), vocab, config)
    learner.seed_histories({"u": ["i1", "i2", "i1"]})
    obs = learner.observe([("u", "i3"), ("u", "i2"), ("u", "i4")])
    i1, i2, i3, i4 = (vocab[f"i{n}"] for n in range(1, 5))
    assert len(obs.candidate_ranks) == 3
    assert obs.candidate_ranks[1] == UNRANKABLE  # i2 is in the history: a miss either way
    if repeats == "keep":
        assert learner.histories["u"] == [i1, i2, i1, i3, i2, i4]
        assert len(learner.buffer) == 3 and learner.examples_seen == 3
    else:
        assert learner.histories["u"] == [i1, i2, i3, i4]
        assert [list(example) for example in learner.buffer.recent] == [
            [i1, i2, i3],
            [i1, i2, i3, i4],
        ]
        assert learner.examples_seen == 2 and learner.item_events == {i3: 1, i4: 1}
        # a batch of repeats only leaves nothing to train, so freshness does not start from it
        learner.observe([("u", "i3")], arrival_times=[5.0])
        assert learner.trained_through() is None


def test_repeats_first_knows_items_older_than_the_kept_history(vocab: Vocabulary) -> None:
    """The repeat check covers every item the user had, not only the newest context_len."""
    config = LearnerConfig(window=10, repeats="first", context_len=3)
    learner = OnlineLearner(tiny_model(vocab.n_items), vocab, config)
    learner.seed_histories({"u": ["i1", "i2", "i3", "i4", "i5"]})
    i = {n: vocab[f"i{n}"] for n in range(1, 12)}
    assert learner.histories["u"] == [i[3], i[4], i[5]]
    learner.observe([("u", "i6"), ("u", "i7"), ("u", "i1"), ("u", "i8"), ("u", "i6")])
    assert learner.histories["u"] == [i[6], i[7], i[8]]  # i1 (seeded) and i6 (streamed): repeats
    assert learner.examples_seen == 3

    # Saved and loaded (as a checkpoint does), the items had come back with the histories.
    clone = OnlineLearner(tiny_model(vocab.n_items), vocab, config)
    clone.load_state(learner.state())
    clone.observe([("u", "i2"), ("u", "i9")])
    assert clone.histories["u"] == [i[7], i[8], i[9]] and clone.examples_seen == 4
    # A state saved before the items were kept falls back to each user's history.
    old_state = learner.state()
    del old_state["seen"]
    older = OnlineLearner(tiny_model(vocab.n_items), vocab, config)
    older.load_state(old_state)
    older.observe([("u", "i7"), ("u", "i1")])
    assert older.histories["u"] == [i[7], i[8], i[1]] and older.examples_seen == 4

    # Carried to another learner (another version, another vocabulary) by item id.
    other_vocab = Vocabulary([f"i{n}" for n in range(30)][::-1])
    other = OnlineLearner(tiny_model(other_vocab.n_items), other_vocab, config)
    other.seed_histories(learner.carried_histories())
    assert other_vocab.decode(other.histories["u"]) == ["i6", "i7", "i8"]
    other.observe([("u", "i1"), ("u", "i3"), ("u", "i10")])
    assert other_vocab.decode(other.histories["u"]) == ["i7", "i8", "i10"]


def test_users_dropped_from_memory_take_their_items_had_with_them(vocab: Vocabulary) -> None:
    config = LearnerConfig(window=10, repeats="first", max_users=2)
    learner = OnlineLearner(tiny_model(vocab.n_items), vocab, config)
    learner.observe([("a", "i1"), ("b", "i1"), ("c", "i1")])
    assert list(learner.histories) == ["b", "c"] and set(learner.seen) == {"b", "c"}


def test_unknown_repeats_setting_is_refused(vocab: Vocabulary) -> None:
    with pytest.raises(ValueError, match="repeats"):
        OnlineLearner(tiny_model(vocab.n_items), vocab, LearnerConfig(repeats="last"))


def test_rolling_metrics_hand_computed() -> None:
    metrics = RollingMetrics(window=3, k=10)
    metrics.add([0, 1, 50, 2])  # window keeps [1, 50, 2]
    assert metrics.hr == 2 / 3
    expected = (1 / np.log2(3) + 0 + 1 / np.log2(4)) / 3
    assert abs(metrics.ndcg - expected) < 1e-12


def test_replay_buffer_mixes_recent_and_reservoir() -> None:
    buffer = ReplayBuffer(recent_size=4, reservoir_size=10, seed=1)
    for n in range(100):
        buffer.add([n, n + 1])
    assert [example[0] for example in buffer.recent] == [96, 97, 98, 99]
    assert len(buffer.reservoir) == 10 and buffer.seen_old == 96
    assert all(example[0] < 96 for example in buffer.reservoir)
    batch = buffer.sample(8, recent_share=0.5)
    assert sum(example[0] >= 96 for example in batch) == 4
    clone = ReplayBuffer(4, 10)
    clone.load_state(buffer.state())
    assert clone.sample(8) == buffer.sample(8)


def test_replay_buffer_draws_every_new_example_before_repeating() -> None:
    buffer = ReplayBuffer(recent_size=8, reservoir_size=4, seed=3)
    for n in range(6):
        buffer.add([n, n + 1])
    first = buffer.sample(4, recent_share=1.0)
    assert [example[0] for example in first] == [0, 1, 2, 3]
    second = buffer.sample(4, recent_share=1.0)
    assert [example[0] for example in second[:2]] == [4, 5]  # the two not drawn yet
    assert buffer.fresh == 0
    buffer.add([6, 7])
    assert buffer.sample(1, recent_share=1.0) == [(6, 7)]


def test_training_batch_targets_the_newest_positions_only() -> None:
    examples = [(5, 6, 7, 8), (9, 3)]  # the streamed event is each example's last item
    items, targets = training_batch(examples, context_len=10, train_positions=2)
    assert items.tolist() == [[5, 6, 7], [0, 0, 9]]
    # Position j's target is the item after it; older positions and padding have none.
    assert targets.tolist() == [[0, 7, 8], [0, 0, 3]]

    items, targets = training_batch(examples, context_len=10, train_positions=1)
    assert targets.tolist() == [[0, 0, 8], [0, 0, 3]]
    items, targets = training_batch(examples, context_len=2, train_positions=50)
    assert items.tolist() == [[6, 7], [0, 9]]  # the context window cuts the oldest items
    assert targets.tolist() == [[7, 8], [0, 3]]
    with pytest.raises(ValueError, match="train_positions"):
        training_batch(examples, context_len=10, train_positions=0)
