"""Replay an interaction log into Kafka as streamrec events, in event-time order.

Sessions: a user's interactions are cut into pseudo-sessions wherever two consecutive events are
more than ``session_gap_s`` apart (30 minutes by default); ``session_id`` is ``<user>:<n>``.
Event ids are deterministic (``<source>:<row>``), so replaying the same log twice re-sends the
same ids and the worker's idempotency makes the second pass a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from streamrec.errors import DataError
from streamrec.events import EventType

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
    # Session ordinal within each user: cumulative starts minus the count before the user began.
    cumulative: np.ndarray = np.cumsum(starts)
    user_base: np.ndarray = np.maximum.accumulate(np.where(new_user, cumulative, 0))
    ordinal: list[int] = (cumulative - user_base).tolist()
    sessions = pd.Series(
        [f"{user}:{n}" for user, n in zip(users, ordinal, strict=True)], index=order
    )
    return sessions.reindex(frame.index)


def iter_events(
    frame: pd.DataFrame,
    *,
    source: str,
    as_type: str | None = None,
    session_gap_s: int = 1800,
) -> Iterator[dict[str, Any]]:
    """Event payloads, in the frame's (time) order.

    Raises :class:`DataError` up front, before anything is yielded, when the log holds event
    types the worker does not accept (they would only fill the dead-letter topic).
    """
    types = frame["type"] if as_type is None else pd.Series(as_type, index=frame.index)
    counts = types.value_counts()
    unknown = {str(kind): int(n) for kind, n in counts.items() if kind not in _TYPES}
    if unknown:
        raise DataError(
            f"event types the worker does not accept: {unknown}; known: {sorted(_TYPES)}. "
            "Map them in the log, or publish every row as one type with --as-type."
        )
    return _payloads(frame, types, source, session_gap_s)


def _payloads(
    frame: pd.DataFrame, types: pd.Series, source: str, session_gap_s: int
) -> Iterator[dict[str, Any]]:
    sessions = assign_sessions(frame, session_gap_s)
    values = frame["value"]
    for row, user, item, stamp, kind, value, session in zip(
        frame.index,
        frame["user_id"],
        frame["item_id"],
        frame["timestamp"],
        types,
        values,
        sessions,
        strict=True,
    ):
        payload: dict[str, Any] = {
            "event_id": f"{source}:{row}",
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
