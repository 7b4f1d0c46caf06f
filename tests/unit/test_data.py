from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from streamrec.data import load_dataset, load_interactions, load_movielens_1m
from streamrec.data.loaders import LogFormat
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


def test_parquet_datetimes_with_gaps_and_integer_ids_with_nulls(tmp_path: Path) -> None:
    """Parquet keeps a datetime column's type (NaT for a gap) and stores integer ids that have
    a null as floats: a gap is a dropped row, not year 1677, and id 10.0 is "10", as the
    same id arrives from a live client."""
    raw = pd.DataFrame(
        {
            "user_id": [1, 2, None, 3, 1],
            "item_id": [10, 11, 12, float("nan"), 13],
            "timestamp": pd.to_datetime(
                [
                    "2024-01-01 00:00:10",
                    None,
                    "2024-01-01 00:00:30",
                    "2024-01-01 00:00:40",
                    "2024-01-01 00:00:50",
                ]
            ),
        }
    )
    path = tmp_path / "log.parquet"
    raw.to_parquet(path)
    frame = load_interactions(path)
    assert list(frame["user_id"]) == ["1", "1"]  # no time, no user, no item: dropped
    assert list(frame["item_id"]) == ["10", "13"]
    assert list(frame["timestamp"]) == [1704067210, 1704067250]
    # An aware column is converted to UTC first.
    raw["timestamp"] = raw["timestamp"].dt.tz_localize("Europe/Berlin")
    raw.to_parquet(path)
    assert list(load_interactions(path)["timestamp"]) == [1704067210 - 3600, 1704067250 - 3600]


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
    assert list(assign_sessions(frame, gap_s=1800)) == ["a:0", "b:10", "a:0", "a:1901", "b:5000"]


def test_a_session_id_does_not_depend_on_other_logs_or_rows() -> None:
    def frame(stamps: list[int]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": "u",
                "item_id": [f"i{n}" for n in range(len(stamps))],
                "timestamp": stamps,
                "type": "view",
                "value": float("nan"),
            }
        )

    day1 = assign_sessions(frame([0, 60]))
    day2 = assign_sessions(frame([86_400, 86_460]))
    assert set(day1).isdisjoint(day2)  # the second day's first session is not the first day's
    both = assign_sessions(frame([0, 60, 86_400, 86_460]))
    assert list(both) == [*day1, *day2]  # and a log of both days says the same


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


def test_columns_are_found_by_their_usual_names(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "UserId,movieId,Rating,unix_timestamp,extra\n007,m1,4.5,1700000000,x\n8,m2,3,1700000005,y\n"
    )
    frame = load_interactions(path)
    assert list(frame["user_id"]) == ["007", "8"]  # ids stay strings, leading zeros kept
    assert list(frame["item_id"]) == ["m1", "m2"]
    assert list(frame["timestamp"]) == [1_700_000_000, 1_700_000_005]
    assert list(frame["value"]) == [4.5, 3.0]
    assert set(frame["type"]) == {"view"}


def test_a_named_column_wins_over_an_alias_and_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,session_id,item,time\nu1,s1,a,10\nu1,s2,b,20\n")
    assert list(load_interactions(path)["user_id"]) == ["u1", "u1"]  # user before session
    by_session = load_interactions(path, user_col="session_id")
    assert list(by_session["user_id"]) == ["s1", "s2"]


def test_headerless_multichar_separator_log(tmp_path: Path) -> None:
    # MovieLens' own ratings.dat layout
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    log_format = LogFormat.parse(sep="::", names="user_id,item_id,value,timestamp")
    frame = load_dataset(str(path), log_format=log_format)
    assert list(frame["item_id"]) == ["1193", "661"]
    assert list(frame["timestamp"]) == [978300760, 978302109]
    assert list(frame["value"]) == [5.0, 3.0]


def test_day_stamps_and_event_type_spellings(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "visitorid,itemid,date,event\n"
        "1,a,20240102,addtocart\n"
        "1,b,20240101,Transaction\n"
        "2,c,20240103,view\n"
    )
    frame = load_interactions(path)
    assert list(frame["timestamp"]) == [1_704_067_200, 1_704_153_600, 1_704_240_000]
    assert list(frame["type"]) == ["purchase", "add_to_cart", "view"]


def test_missing_columns_name_the_options(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("who,item,when\n1,a,5\n")
    with pytest.raises(DataError, match=r"user_id \(usual names.*--columns user=NAME.*it has"):
        load_interactions(path)
    with pytest.raises(DataError, match="lacks columns \\['nope'\\]"):
        load_interactions(path, user_col="nope")
    frame = load_dataset(str(path), log_format=LogFormat.parse("user=who,time=when"))
    assert list(frame["user_id"]) == ["1"]


def test_log_format_from_the_command_line() -> None:
    parsed = LogFormat.parse("user=visitor, item=sku,time=ts,type=event", sep="\\t")
    assert parsed == LogFormat(
        user_col="visitor", item_col="sku", time_col="ts", type_col="event", sep="\t"
    )
    assert LogFormat.from_dict(parsed.to_dict()) == parsed
    assert LogFormat.parse().to_dict() == {}
    for bad in ("user", "who=x", "user="):
        with pytest.raises(DataError, match="bad --columns"):
            LogFormat.parse(bad)
    with pytest.raises(DataError, match="bad --names"):
        LogFormat.parse(names="a,,b")
    with pytest.raises(DataError, match="bad --names"):
        LogFormat.parse(names="a,a")


def test_replay_refuses_event_types_the_worker_would_dead_letter() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": ["1", "2", "3"],
            "timestamp": [0, 1, 2],
            "type": ["view", "like", "like"],
            "value": float("nan"),
        }
    )
    with pytest.raises(DataError, match=r"\{'like': 2\}.*--as-type"):
        iter_events(frame, source="t")
    assert len(list(iter_events(frame, source="t", as_type="click"))) == 3


@pytest.mark.parametrize("sep", [",", ";", "|", "\t"])
def test_the_separator_is_sniffed(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "log.txt"
    rows = [["user_id", "item_id", "timestamp"], ["u", "Heat (1995)", "5"], ["v", "b", "6"]]
    if sep != ",":
        rows[1][1] = "Heat, The (1995)"  # a comma inside a field of a non-comma log
    path.write_text("\n".join(sep.join(row) for row in rows) + "\n")
    assert list(load_interactions(path)["item_id"]) == [rows[1][1], "b"]
    # and through a compression suffix, sniffed on the text, not the compressed bytes
    import gzip

    packed = tmp_path / "log.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert list(load_interactions(packed)["item_id"]) == [rows[1][1], "b"]


def test_rows_without_ids_or_times_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,timestamp,type\n"
        "u,a,1,view\n"
        ",b,2,view\n"  # no user: never the user "nan"
        "u, ,3,view\n"  # blank item
        "u,c,soon,view\n"  # unreadable time
        "u,d,4,\n"  # no type: the default
    )
    with caplog.at_level("WARNING"):
        frame = load_interactions(path)
    assert list(frame["item_id"]) == ["a", "d"]
    assert list(frame["type"]) == ["view", "view"]
    assert "dropped 3 of 5 rows" in caplog.text


def test_replay_keeps_long_user_ids_valid_and_refuses_bad_ids_up_front() -> None:
    long_user = "u" * 255  # the contract's limit is 256: "<user>:<start>" would not fit
    frame = pd.DataFrame(
        {
            "user_id": [long_user, long_user, "short"],
            "item_id": ["a", "b", "c"],
            "timestamp": [0, 10_000, 5],
            "type": "view",
            "value": float("nan"),
        }
    )
    payloads = list(iter_events(frame, source="log"))
    events = [parse_event(payload) for payload in payloads]  # every one valid
    sessions = [event.session_id for event in events]
    assert sessions[2] == "short:5"
    assert sessions[0] != sessions[1]  # the 30-minute gap still starts a new session
    assert sessions[0].rsplit(":", 1)[0] == sessions[1].rsplit(":", 1)[0]
    assert all(len(session) <= 256 for session in sessions)

    with_tab = frame.assign(item_id=["a", "b\tc", "c"])
    with pytest.raises(DataError, match=r"item_id: 1 rows .* row 1"):
        next(iter_events(with_tab, source="log"))
    too_long = frame.assign(user_id=["x" * 300, "y", "z"])
    with pytest.raises(DataError, match="user_id"):
        next(iter_events(too_long, source="log"))
    with pytest.raises(DataError, match="shorter source"):
        next(iter_events(frame, source="s" * 260))


def _items(path: Path, text: str, **options: object) -> list[str]:
    path.write_text(text)
    return list(load_interactions(path, **options)["item_id"])  # type: ignore[arg-type]


def test_events_within_one_second_keep_their_order(tmp_path: Path) -> None:
    """Times finer than a second sort at their own resolution before they are cut."""
    ms = "user_id,item_id,timestamp\nu,C,1700000000900\nu,B,1700000000500\nu,A,1700000000100\n"
    ms += "u,D,1700000001900\nu,E,1700000002900\n"
    frame = load_interactions(_write(tmp_path / "ms.csv", ms))
    assert list(frame["item_id"]) == ["A", "B", "C", "D", "E"]
    assert list(frame["timestamp"]) == [1700000000] * 3 + [1700000001, 1700000002]
    iso = "user_id,item_id,timestamp\nu,B,2024-01-01T00:00:00.999Z\nu,A,2024-01-01T00:00:00.001Z\n"
    assert _items(tmp_path / "iso.csv", iso) == ["A", "B"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_day_first_dates_are_read_in_one_order_for_the_whole_column(tmp_path: Path) -> None:
    text = "user_id,item_id,date\nu,A,02/01/2024\nu,B,05/01/2024\nu,C,13/01/2024\n"
    frame = load_interactions(_write(tmp_path / "eu.csv", text))
    assert list(frame["item_id"]) == ["A", "B", "C"]
    assert pd.to_datetime(frame["timestamp"], unit="s").dt.month.tolist() == [1, 1, 1]
    # month first when that is the only reading
    us = "user_id,item_id,date\nu,B,12/25/2024\nu,A,1/2/2024\n"
    assert _items(tmp_path / "us.csv", us) == ["A", "B"]
    # ISO forms mixed in one column are read as ISO, not as day-first
    mixed = "user_id,item_id,ts\nu,B,2024-01-02T10:00:00Z\nu,A,2024-01-02T10:00:00.5+01:00\n"
    mixed += "u,C,2024-01-03\n"
    assert _items(tmp_path / "mixed.csv", mixed) == ["A", "B", "C"]


def test_times_of_day_are_read_with_their_dates_or_refused(tmp_path: Path) -> None:
    text = "user_id,item_id,date,time\nu,A,2024-05-01,23:00:00\nu,B,2024-05-02,08:00:00\n"
    text += "u,C,2024-05-03,07:00:00\n"
    frame = load_interactions(_write(tmp_path / "dt.csv", text))
    assert list(frame["item_id"]) == ["A", "B", "C"]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2024-05-01 23:00", tz="UTC").timestamp()
    lone = "user_id,item_id,time\nu,A,23:00\nu,B,08:00\n"
    with pytest.raises(DataError, match="times of day only"):
        load_interactions(_write(tmp_path / "lone.csv", lone))
    # with AM/PM or a zone too (pandas would date them today)
    for one, two in (("9:00 AM", "11:30 PM"), ("09:00:00Z", "23:00:00Z"), ("09:00+02:00", "10:00")):
        with pytest.raises(DataError, match="times of day only"):
            load_interactions(_write(tmp_path / "lone.csv", f"user_id,item_id,time\nu,A,{one}\n"))
        dated = f"user_id,item_id,date,time\nu,A,2024-05-01,{one}\nu,B,2024-05-02,{two}\n"
        frame = load_interactions(_write(tmp_path / "dated.csv", dated))
        assert pd.to_datetime(frame["timestamp"].iloc[0], unit="s").date().isoformat() == (
            "2024-05-01"
        )


def test_one_bad_day_stamp_is_dropped_not_read_as_seconds(tmp_path: Path) -> None:
    text = "user_id,item_id,date\n" + "".join(f"u,i{n},202401{n:02d}\n" for n in range(1, 20))
    text += "u,bad,20240199\n"
    frame = load_interactions(_write(tmp_path / "days.csv", text))
    assert len(frame) == 19 and "bad" not in set(frame["item_id"])
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    # a small log: one bad day in five is still a log of days, not of August 1970
    small = "user_id,item_id,date\n" + "".join(f"u,i{n},2024050{n}\n" for n in range(1, 5))
    frame = load_interactions(_write(tmp_path / "few.csv", small + "u,bad,20240199\n"))
    assert len(frame) == 4
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2024-05-01", tz="UTC").timestamp()


def test_names_must_match_the_fields_of_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::1193::4::978300000\n")
    with pytest.raises(DataError, match=r"lists 3 columns .* has 4 fields"):
        load_interactions(path, sep="::", names=["user_id", "item_id", "timestamp"])
    frame = load_interactions(path, sep="::", names=["user_id", "item_id", "value", "timestamp"])
    assert list(frame["user_id"]) == ["2", "1"] and list(frame["item_id"]) == ["1193", "1193"]


def test_replay_ids_follow_the_rows_not_their_place_in_the_file() -> None:
    def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
        users, items, stamps = zip(*rows, strict=True)
        return pd.DataFrame(
            {"user_id": users, "item_id": items, "timestamp": stamps, "type": "view"}
        ).assign(value=float("nan"))

    def ids(rows: list[tuple[str, str, int]]) -> list[str]:
        return [payload["event_id"] for payload in iter_events(frame(rows), source="events")]

    day1 = [("u", "a", 10), ("u", "b", 20), ("u", "b", 20)]  # the last two: the same row twice
    first = ids(day1)
    assert len(set(first)) == 3 and all(i.startswith("events:") for i in first)
    assert ids([("v", "z", 5), *day1])[1:] == first  # a row added earlier renumbers nothing
    day2 = ids([("u", "a", 86_410), ("u", "b", 86_420)])  # another day's file, same name
    assert not set(day2) & set(first)
    as_click = [p["event_id"] for p in iter_events(frame(day1), source="events", as_type="click")]
    assert not set(as_click) & set(first)


def test_json_lines_upper_case_suffixes_and_typed_recbole_headers(tmp_path: Path) -> None:
    lines = '{"user_id": 7, "item_id": "007", "timestamp": "2024-01-01T00:00:01Z"}\n'
    lines += '{"user_id": 7, "item_id": "8", "timestamp": "2024-01-01T00:00:00Z", "x": {"a": 1}}\n'
    frame = load_interactions(_write(tmp_path / "log.JSONL", lines))
    assert list(frame["item_id"]) == ["8", "007"] and list(frame["user_id"]) == ["7", "7"]
    array = '[{"user": "u", "item": "x", "ts": 5}, {"user": "u", "item": "y", "ts": 3}]'
    assert _items(tmp_path / "log.json", array) == ["y", "x"]
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "ts": [2, 1]}).to_parquet(
        tmp_path / "log.PARQUET"
    )
    assert list(load_interactions(tmp_path / "log.PARQUET")["item_id"]) == ["b", "a"]
    # RecBole's column types are dropped from the names; other colons stay part of them
    typed = "user_id:token\titem_id:token\tcreated:at\nu\ta\t2\nu\tb\t1\n"
    assert _items(tmp_path / "log.inter", typed, time_col="created:at") == ["b", "a"]


def test_ids_that_look_like_missing_values_are_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "user_id,item_id,timestamp\nu,NULL,1\nu,a,2\nNA,b,3\nNA,c,4\n"
    with caplog.at_level("WARNING"):
        frame = load_interactions(_write(tmp_path / "log.csv", text))
    assert len(frame) == 4
    assert "item_id: 1 rows hold 'NULL'" in caplog.text
    assert "user_id: 2 rows hold 'NA'" in caplog.text


def test_day_first_dates_of_mixed_precision_and_compressed_logs(tmp_path: Path) -> None:
    import gzip

    text = "user_id,item_id,date\nu,A,01/02/2024 09:00\nu,B,01/02/2024 09:05:30\n"
    text += "u,C,13/02/2024 10:00\nu,D,01/03/2024\n"
    frame = load_interactions(_write(tmp_path / "eu.csv", text))
    assert list(frame["item_id"]) == ["A", "B", "C", "D"]
    assert pd.to_datetime(frame["timestamp"], unit="s").dt.month.tolist() == [2, 2, 2, 3]
    packed = tmp_path / "log.csv.gz"
    packed.write_bytes(gzip.compress(b"u,a,1\nu,b,2\n"))
    names = ["user_id", "item_id", "timestamp"]
    assert list(load_interactions(packed, names=names)["item_id"]) == ["a", "b"]
    array = tmp_path / "log.json.gz"
    array.write_bytes(gzip.compress(b'[{"user": "u", "item": "x", "ts": 5}]'))
    assert list(load_interactions(array)["item_id"]) == ["x"]


def test_a_day_first_column_reads_every_value_day_first(tmp_path: Path) -> None:
    text = "user_id,item_id,date\nu,a,13/01/2024\nu,b,02/03/2024\nu,c,01/13/2024\n"
    text += "u,d,14/03/2024\n"
    frame = load_interactions(_write(tmp_path / "dm.csv", text))
    # 01/13/2024 has no 13th month day first: unreadable, not 13 January read the other way
    assert list(frame["item_id"]) == ["a", "b", "d"]
    days = pd.to_datetime(frame["timestamp"], unit="s").dt.strftime("%F").tolist()
    assert days == ["2024-01-13", "2024-03-02", "2024-03-14"]


def test_the_day_month_order_is_the_one_that_reads_more_values(tmp_path: Path) -> None:
    rows = ["u,a,13/01/2024"] + [f"u,m{n},01/{13 + n}/2024" for n in range(3)]
    frame = load_interactions(
        _write(tmp_path / "md.csv", "user_id,item_id,date\n" + "\n".join(rows))
    )
    assert list(frame["item_id"]) == ["m0", "m1", "m2"]  # month first; 13/01 is unreadable
