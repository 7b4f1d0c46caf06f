from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from streamrec.data import load_dataset, load_interactions, load_movielens_1m
from streamrec.data.replay import assign_sessions, iter_events
from streamrec.errors import DataError
from streamrec.events import parse_event


def test_movielens_1m_is_the_real_dataset() -> None:
    frame = load_movielens_1m()
    assert len(frame) == 1_000_209
    assert frame["user_id"].nunique() == 6040
    assert frame["item_id"].nunique() == 3706
    assert frame["timestamp"].is_monotonic_increasing
    assert set(frame["value"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_stable_sort_keeps_file_order_on_equal_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\nu,b,5\nu,a,5\nu,c,1\n")
    frame = load_interactions(path)
    assert list(frame["item_id"]) == ["c", "b", "a"]


def test_generic_loader_with_custom_columns_ms_timestamps_and_parquet(tmp_path: Path) -> None:
    raw = pd.DataFrame(
        {
            "visitor": [1, 2, 1],
            "sku": ["x", "y", "z"],
            "ts_ms": [1_700_000_000_000, 1_700_000_001_000, 1_700_000_002_000],
            "event": ["view", "purchase", "click"],
            "price": [None, 9.5, None],
        }
    )
    path = tmp_path / "log.parquet"
    raw.to_parquet(path)
    frame = load_interactions(
        path,
        user_col="visitor",
        item_col="sku",
        time_col="ts_ms",
        type_col="event",
        value_col="price",
    )
    assert list(frame["timestamp"]) == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    assert list(frame["user_id"]) == ["1", "2", "1"]
    assert frame["value"].iloc[1] == 9.5


def test_iso_timestamps_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("user_id\titem_id\ttimestamp\nu\ti\t2024-01-01T00:00:10Z\n")
    assert list(load_dataset(str(path))["timestamp"]) == [1704067210]
    bad = tmp_path / "bad.csv"
    bad.write_text("who,what\n1,2\n")
    with pytest.raises(DataError, match="lacks columns"):
        load_interactions(bad)


def test_sessions_cut_at_gaps_per_user() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "a", "a", "b"],
            "item_id": list("12345"),
            "timestamp": [0, 10, 100, 100 + 1801, 5000],
            "type": "view",
            "value": float("nan"),
        }
    )
    assert list(assign_sessions(frame, gap_s=1800)) == ["a:0", "b:0", "a:0", "a:1", "b:1"]


def test_replayed_payloads_are_valid_events_with_deterministic_ids() -> None:
    frame = load_movielens_1m(limit=200)
    first = list(iter_events(frame, source="ml-1m"))
    again = list(iter_events(frame, source="ml-1m"))
    assert first == again
    assert len({p["event_id"] for p in first}) == 200
    events = [parse_event(p) for p in first]
    assert all(e.type.value == "rating" and e.value is not None for e in events)
    assert {parse_event(p).type.value for p in iter_events(frame, source="x", as_type="click")} == {
        "click"
    }
