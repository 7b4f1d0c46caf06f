"""Per-user item sequences, the leave-one-out split and the item vocabulary.

The standard sequential-recommendation protocol, for any ``user_id, item_id, timestamp`` log:

1. interactions are ordered by time per user with a *stable* sort, so equal timestamps keep
   their order in the log (MovieLens-1M has many);
2. with ``repeats="first"``, only a user's first interaction with each item is kept. Serving
   never recommends an item already in the history and evaluation counts a repeated target
   as a miss, so on a log full of repeats (views of the same product) a model trained on them
   learns to predict what it will never be allowed to show. The default keeps them;
3. items with fewer than ``min_item_interactions`` interactions are dropped (one pass, as in the
   SASRec preprocessing), then users left with fewer than ``min_user_interactions``;
4. the last item of each user is the test target, the second-last the validation target, the rest
   is training data (leave-one-out).

:class:`Vocabulary` maps raw item ids to contiguous indices, index 0 being padding. It only ever
grows: :meth:`Vocabulary.add` appends, so indices handed out earlier never change and a model's
embedding rows stay aligned when the online learner adds items. It is persisted as JSON with an
atomic write (temp file + ``os.replace``) and identified by :meth:`Vocabulary.content_hash`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.errors import DataError

__all__ = [
    "PAD_INDEX",
    "REPEATS",
    "SequenceData",
    "Vocabulary",
    "atomic_write_text",
    "build_sequences",
]

logger = logging.getLogger(__name__)

#: Index reserved for padding in every vocabulary and embedding table.
PAD_INDEX = 0
_FORMAT = "streamrec.vocabulary/1"
#: What :func:`build_sequences` does with a user's later interactions with an item.
REPEATS = ("keep", "first")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class Vocabulary:
    """Append-only mapping ``item_id <-> index``; index 0 is padding and has no id."""

    def __init__(self, item_ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for item_id in item_ids:
            self.add(item_id)

    # -- growth and lookup ------------------------------------------------------------------
    def add(self, item_id: str) -> int:
        """Index of ``item_id``, appending it first if new (old indices never move)."""
        item_id = str(item_id)
        index = self._index.get(item_id)
        if index is None:
            self._ids.append(item_id)
            index = len(self._ids)  # 1-based: 0 is padding
            self._index[item_id] = index
        return index

    def get(self, item_id: str) -> int | None:
        """Index of ``item_id`` or ``None`` when unknown."""
        return self._index.get(item_id)

    def __getitem__(self, item_id: str) -> int:
        try:
            return self._index[item_id]
        except KeyError as exc:
            raise DataError(f"unknown item id {item_id!r}") from exc

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def id_of(self, index: int) -> str:
        """Raw id at ``index`` (1..n_items)."""
        if not 1 <= index <= len(self._ids):
            raise DataError(f"index {index} outside 1..{len(self._ids)}")
        return self._ids[index - 1]

    def encode(self, item_ids: Iterable[str]) -> list[int]:
        """Indices of the known ids, unknown ones skipped."""
        lookup = self._index
        return [index for index in (lookup.get(item_id) for item_id in item_ids) if index]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self._ids[index - 1] for index in indices]

    @property
    def ids(self) -> Sequence[str]:
        """Item ids in index order (position ``i`` holds index ``i + 1``)."""
        return tuple(self._ids)

    @property
    def n_items(self) -> int:
        """Number of real items (padding excluded)."""
        return len(self._ids)

    @property
    def size(self) -> int:
        """Rows an embedding table needs: items + padding."""
        return len(self._ids) + 1

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    # -- persistence --------------------------------------------------------------------------
    def content_hash(self) -> str:
        """SHA-256 of the ordered ids; equal hashes mean identical index assignment."""
        digest = hashlib.sha256()
        for item_id in self._ids:
            digest.update(item_id.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "pad_index": PAD_INDEX,
                "hash": self.content_hash(),
                "items": self._ids,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            payload = json.loads(text)
            items = payload["items"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"not a vocabulary file: {exc}") from exc
        vocab = cls(items)
        if len(vocab) != len(items):
            raise DataError("vocabulary file lists an item id twice")
        expected = payload.get("hash")
        if expected and expected != vocab.content_hash():
            raise DataError("vocabulary file is corrupt: content hash mismatch")
        return vocab

    def save(self, path: str | Path) -> None:
        """Atomically write the vocabulary as JSON."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read vocabulary {path}: {exc}") from exc
        return cls.from_json(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids == other._ids

    def __hash__(self) -> int:  # pragma: no cover - identity by content
        return hash(self.content_hash())

    def __repr__(self) -> str:
        return f"Vocabulary(n_items={len(self._ids)}, hash={self.content_hash()[:12]})"


@dataclass(frozen=True)
class SequenceData:
    """Users' full index sequences (oldest first) and the vocabulary that encodes them.

    With leave-one-out, ``sequences[u][:-2]`` trains, ``[-2]`` validates and ``[-1]`` tests.
    """

    vocab: Vocabulary
    users: list[str]
    sequences: list[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.users) != len(self.sequences):
            raise DataError("users and sequences differ in length")

    @property
    def n_users(self) -> int:
        return len(self.users)

    def train_sequences(self, validated: Collection[int] | None = None) -> list[np.ndarray]:
        """What a model may learn from: each user's items except the test item, and except the
        validation item for the users in ``validated`` (positions in ``users``; None = all).

        Holding out only a validation sample's items is the protocol of the aprec code behind
        the gSASRec anchor (2,048 validation users on ML-1M): everyone else's second-last item
        is trained on. The test item is never a training target either way.
        """
        if validated is None:
            return [seq[:-2] for seq in self.sequences]
        held_out = set(validated)
        return [
            seq[:-2] if user in held_out else seq[:-1] for user, seq in enumerate(self.sequences)
        ]

    def validation_split(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(inputs, targets) with the second-last item as target."""
        return [seq[:-2] for seq in self.sequences], np.array(
            [seq[-2] for seq in self.sequences], dtype=np.int64
        )

    def test_split(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(inputs, targets) with the last item as target; the validation item is an input."""
        return [seq[:-1] for seq in self.sequences], np.array(
            [seq[-1] for seq in self.sequences], dtype=np.int64
        )

    def subset(self, n_users: int) -> SequenceData:
        """The first ``n_users`` users (same vocabulary); for quick experiments and tests."""
        return SequenceData(self.vocab, self.users[:n_users], self.sequences[:n_users])


def build_sequences(
    frame: pd.DataFrame,
    *,
    min_item_interactions: int = 5,
    min_user_interactions: int = 5,
    vocab: Vocabulary | None = None,
    repeats: str = "keep",
) -> SequenceData:
    """Time-ordered per-user sequences from an interaction log (see the module docstring).

    ``vocab``, when given, is extended (never reordered) with the items of ``frame``; otherwise a
    new one assigns indices in order of first appearance in time.
    """
    missing = {"user_id", "item_id", "timestamp"} - set(frame.columns)
    if missing:
        raise DataError(f"interaction log lacks columns {sorted(missing)}")
    if min_user_interactions < 3:
        raise DataError("leave-one-out needs min_user_interactions >= 3")
    if repeats not in REPEATS:
        raise DataError(f"repeats must be one of {', '.join(REPEATS)}, not {repeats!r}")
    log = frame[["user_id", "item_id", "timestamp"]].astype(
        {"user_id": str, "item_id": str, "timestamp": "int64"}
    )
    # Two stable sorts: by time, then by user, keep log order for equal timestamps.
    log = log.sort_values("timestamp", kind="stable").sort_values("user_id", kind="stable")
    rows = len(log)
    if repeats == "first":
        log = log.drop_duplicates(["user_id", "item_id"], keep="first")  # stable: earliest
        if len(log) < rows:
            logger.info("dropped %d repeated interactions (repeats=first)", rows - len(log))
    kept_repeats = len(log)
    item_counts = log["item_id"].value_counts()
    log = log[log["item_id"].map(item_counts) >= min_item_interactions]
    after_items = len(log)
    user_counts = log["user_id"].value_counts()
    log = log[log["user_id"].map(user_counts) >= min_user_interactions]
    if log.empty:
        raise DataError(
            f"no user is left after filtering ({rows} interactions: items with fewer than "
            f"{min_item_interactions} and then users with fewer than {min_user_interactions} "
            "dropped); is the log too small? Lower the minimums (`train --min-item-events/"
            "--min-user-events`)."
        )
    if len(log) < 0.5 * kept_repeats:
        logger.warning(
            "filtering kept %d of %d interactions (%d dropped as items with fewer than %d, "
            "%d as users with fewer than %d); lower the minimums for a sparse log",
            len(log),
            kept_repeats,
            kept_repeats - after_items,
            min_item_interactions,
            after_items - len(log),
            min_user_interactions,
        )

    vocab = vocab if vocab is not None else Vocabulary()
    first_seen = log.sort_values("timestamp", kind="stable")["item_id"].drop_duplicates()
    for item_id in first_seen:
        vocab.add(item_id)
    lookup = {item_id: vocab[item_id] for item_id in first_seen}
    codes = log["item_id"].map(lookup).to_numpy(dtype=np.int64)
    users_col = log["user_id"].to_numpy()
    boundaries = np.flatnonzero(users_col[1:] != users_col[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    users = [str(users_col[start]) for start in starts]
    sequences = np.split(codes, boundaries)
    logger.info(
        "sequences: %d users, %d items, %d interactions (dropped items < %d, users < %d)",
        len(users),
        vocab.n_items,
        len(codes),
        min_item_interactions,
        min_user_interactions,
    )
    return SequenceData(vocab=vocab, users=users, sequences=sequences)
