import json

import pandas as pd
import pytest

from streamrec.data.sequences import PAD_INDEX, Vocabulary, build_sequences
from streamrec.errors import DataError


def test_round_trip_and_hash(tmp_path) -> None:
    vocab = Vocabulary(["b", "a", "c"])
    assert [vocab["b"], vocab["a"], vocab["c"]] == [1, 2, 3]
    assert vocab.size == 4 and PAD_INDEX == 0
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.content_hash() == vocab.content_hash()
    assert loaded.decode([3, 1]) == ["c", "b"]
    assert loaded.encode(["a", "unknown", "c"]) == [2, 3]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_growth_keeps_old_indices(tmp_path) -> None:
    vocab = Vocabulary(["x", "y"])
    old_hash = vocab.content_hash()
    assert vocab.add("y") == 2  # existing id: same index
    assert vocab.add("z") == 3
    assert [vocab["x"], vocab["y"]] == [1, 2]
    assert vocab.content_hash() != old_hash
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json")["z"] == 3


def test_corrupt_file_is_rejected(tmp_path) -> None:
    path = tmp_path / "v.json"
    payload = json.loads(Vocabulary(["a", "b"]).to_json())
    payload["items"] = ["b", "a"]
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match="hash"):
        Vocabulary.load(path)


def test_build_sequences_protocol() -> None:
    rows = []
    # user u1: equal timestamps keep log order; item "rare" appears once and is dropped.
    for item, ts in [("a", 5), ("b", 5), ("c", 4), ("rare", 6), ("d", 7), ("e", 8)]:
        rows.append(("u1", item, ts))
    for user in ("u2", "u3", "u4", "u5"):
        rows += [(user, item, ts) for ts, item in enumerate("abcde")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    data = build_sequences(frame, min_item_interactions=5, min_user_interactions=3)
    assert "rare" not in data.vocab
    first = data.users.index("u1")
    assert data.vocab.decode(data.sequences[first].tolist()) == ["c", "a", "b", "d", "e"]
    inputs, targets = data.test_split()
    assert data.vocab.id_of(int(targets[first])) == "e"
    assert data.vocab.decode(inputs[first].tolist()) == ["c", "a", "b", "d"]
    val_inputs, val_targets = data.validation_split()
    assert data.vocab.id_of(int(val_targets[first])) == "d"
    assert len(val_inputs[first]) == 3 and len(data.train_sequences()[first]) == 3


def test_too_small_log() -> None:
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1]})
    with pytest.raises(DataError):
        build_sequences(frame)


def test_train_sequences_hold_out_only_the_validation_sample() -> None:
    frame = pd.DataFrame(
        [(user, item, ts) for user in ("u1", "u2", "u3") for ts, item in enumerate("abcde")],
        columns=["user_id", "item_id", "timestamp"],
    )
    data = build_sequences(frame, min_item_interactions=1, min_user_interactions=3)
    validated = data.users.index("u2")
    train = data.train_sequences([validated])
    for user, seq in enumerate(data.sequences):
        # the test item is never a training target; the validation item only for u2
        expected = seq[:-2] if user == validated else seq[:-1]
        assert train[user].tolist() == expected.tolist()
    assert [s.tolist() for s in data.train_sequences()] == [s[:-2].tolist() for s in data.sequences]


def test_repeats_first_keeps_each_users_first_interaction_with_an_item() -> None:
    # u1 views a, b, a, c, b, d: with repeats=first only a, b, c, d remain, in first-seen order
    rows = [("u1", item, ts) for ts, item in enumerate("abacbd")]
    rows += [(user, item, ts) for user in ("u2", "u3") for ts, item in enumerate("abcd")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    kept = build_sequences(frame, min_item_interactions=1, min_user_interactions=3)
    first = build_sequences(
        frame, min_item_interactions=1, min_user_interactions=3, repeats="first"
    )
    u1 = kept.users.index("u1")
    assert kept.vocab.decode(kept.sequences[u1].tolist()) == list("abacbd")
    assert first.vocab.decode(first.sequences[first.users.index("u1")].tolist()) == list("abcd")
    # the minimums count what is left: u4's 3 views of one item are one interaction
    frame4 = pd.concat(
        [frame, pd.DataFrame({"user_id": "u4", "item_id": "a", "timestamp": [1, 2, 3]})]
    )
    assert "u4" in build_sequences(frame4, min_item_interactions=1, min_user_interactions=3).users
    assert (
        "u4"
        not in build_sequences(
            frame4, min_item_interactions=1, min_user_interactions=3, repeats="first"
        ).users
    )
    with pytest.raises(DataError, match="repeats must be one of keep, first"):
        build_sequences(frame, repeats="last")
