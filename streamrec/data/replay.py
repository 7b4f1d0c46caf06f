"""Replay an interaction log into Kafka as streamrec events, in event-time order.

Sessions: a user's interactions are cut into pseudo-sessions wherever two consecutive events are
more than ``session_gap_s`` apart (30 minutes by default); ``session_id`` is
``<user>:<epoch seconds of the session's first event>`` (``<digest of user>:<...>`` when that
would be longer than an id may be). It depends only on the user's own events around it, so
two logs of one user (``day1``, ``day2``) replayed one after the other do not share sessions,
and rows added to a log elsewhere leave it as it was.
Event ids are deterministic: ``<source>:<digest>``, the digest of the row's user, item, time,
type and value and of its place among identical rows. Replaying a log again re-sends the same
ids, and the worker's idempotency makes the second pass a no-op; rows added to a log (even
before the others in time) leave the other rows' ids as they were; logs that share a name but
not their rows (``day1/events.csv``, ``day2/events.csv``) share no ids.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from streamrec.errors import DataError
from streamrec.events import ID_MAX_LENGTH, ID_PATTERN, EventType

__all__ = ["assign_sessions", "iter_events", "replay"]

_TYPES = frozenset(kind.value for kind in EventType)


def assign_sessions(frame: pd.DataFrame, gap_s: int = 1800) -> pd.Series:
    """Session id per row: a new session after a gap longer than ``gap_s`` in a user's stream.

    ``frame`` must be stable-sorted by timestamp (as the loaders return it).
    """
    order = frame.sort_values(["user_id", "timestamp"], kind="stable").index
    users = frame.loc[order, "user_id"].to_numpy()
    stamps = frame.loc[order, "timestamp"].to_numpy()
    new_user = np.ones(len(order), dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    gap = np.zeros(len(order), dtype=bool)
    gap[1:] = (stamps[1:] - stamps[:-1]) > gap_s
    starts = new_user | gap
    # Each row takes the time of its session's first event: the index of the last start so far.
    first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    began: list[int] = stamps[first].astype("int64").tolist()
    sessions = pd.Series(
        [_session_id(user, at) for user, at in zip(users, began, strict=True)], index=order
    )
    return sessions.reindex(frame.index)


def _session_id(user: str, began: int) -> str:
    session = f"{user}:{began}"
    if len(session) <= ID_MAX_LENGTH:
        return session
    return f"{hashlib.blake2b(user.encode(), digest_size=16).hexdigest()}:{began}"


def iter_events(
    frame: pd.DataFrame,
    *,
    source: str,
    as_type: str | None = None,
    session_gap_s: int = 1800,
) -> Iterator[dict[str, Any]]:
    """Event payloads, in the frame's (time) order.

    Raises :class:`DataError` up front, before anything is yielded, when the log holds event
    types or ids the worker does not accept (they would only fill the dead-letter topic).
    """
    for column in ("user_id", "item_id"):
        _check_ids(frame[column], column)
    if len(source) + 1 + 2 * _DIGEST_BYTES > ID_MAX_LENGTH:
        raise DataError(
            f"event ids '<source>:<digest>' would be longer than {ID_MAX_LENGTH} characters: "
            f"source {source[:40]!r}... has {len(source)}; pass a shorter source"
        )
    types = frame["type"] if as_type is None else pd.Series(as_type, index=frame.index)
    counts = types.value_counts()
    unknown = {str(kind): int(n) for kind, n in counts.items() if kind not in _TYPES}
    if unknown:
        raise DataError(
            f"event types the worker does not accept: {unknown}; known: {sorted(_TYPES)}. "
            "Map them in the log, or publish every row as one type with --as-type."
        )
    return _payloads(frame, types, source, session_gap_s)


def _check_ids(ids: pd.Series, column: str) -> None:
    text = ids.astype(str)
    bad = (text.str.len() > ID_MAX_LENGTH) | ~text.str.match(ID_PATTERN)
    if bad.any():
        first = text[bad].iloc[0]
        raise DataError(
            f"{column}: {int(bad.sum())} rows hold an id the event contract refuses (longer "
            f"than {ID_MAX_LENGTH} characters, with a control character such as a tab or "
            f"newline, or only white space or zero-width characters); first: row "
            f"{bad[bad].index[0]}, {first[:60]!r} ({len(first)} characters). Shorten or clean "
            "those ids in the log."
        )


_DIGEST_BYTES = 16


def event_ids(frame: pd.DataFrame, types: pd.Series, source: str) -> list[str]:
    """``<source>:<digest>`` per row: what the row holds, and which of the rows holding the
    same it is (in the frame's order), so an id does not depend on the other rows."""
    values = frame["value"].astype("float64")
    content = (
        frame["user_id"].astype(str)
        + "\x1f"
        + frame["item_id"].astype(str)
        + "\x1f"
        + frame["timestamp"].astype("int64").astype(str)
        + "\x1f"
        + types.astype(str)
        + "\x1f"
        + values.map(repr).where(values.notna(), "")
    )
    occurrence = content.groupby(content, sort=False).cumcount().astype(str)
    keyed = (content + "\x1f" + occurrence).str.encode("utf-8")
    return [
        f"{source}:{hashlib.blake2b(key, digest_size=_DIGEST_BYTES).hexdigest()}" for key in keyed
    ]


def _payloads(
    frame: pd.DataFrame, types: pd.Series, source: str, session_gap_s: int
) -> Iterator[dict[str, Any]]:
    sessions = assign_sessions(frame, session_gap_s)
    values = frame["value"]
    for event_id, user, item, stamp, kind, value, session in zip(
        event_ids(frame, types, source),
        frame["user_id"],
        frame["item_id"],
        frame["timestamp"],
        types,
        values,
        sessions,
        strict=True,
    ):
        payload: dict[str, Any] = {
            "event_id": event_id,
            "user_id": user,
            "session_id": session,
            "item_id": item,
            "type": kind,
            "timestamp": int(stamp),
        }
        if kind in ("rating", "purchase", "add_to_cart") and not pd.isna(value):
            payload["value"] = float(value)
        elif kind == "rating":
            payload["value"] = 0.0
        yield payload


def replay(
    events: Iterator[dict[str, Any]],
    send: Callable[[dict[str, Any]], None],
    *,
    total: int,
    rate: float | None = None,
    progress: bool = True,
) -> int:
    """Send every event, paced at ``rate`` events/s (None: as fast as possible)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    sent = 0
    start = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("replay", total=total)
        for payload in events:
            if rate:
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            send(payload)
            sent += 1
            if sent % 500 == 0:
                bar.update(task, completed=sent)
        bar.update(task, completed=sent)
    return sent
