"""Real data behind the simulator: a log's users split into model-training and simulated users.

Any interaction log (user, item, time; type and value optional) works; ML-1M is the default.

* Every user goes through the project's leave-one-out pipeline
  (:func:`streamrec.data.sequences.build_sequences`); users whose index is a multiple of
  ``heldout_every`` are **held out**: the candidate sequence model never trains on them and they
  become the simulated users.
* A simulated user's *observed* history is the first half of their real sequence; the second
  half is their *future*, used only by the user-response model (never shown to a policy).
* The **response space** is a truncated SVD of the training users' binary user-item matrix
  (``item_factors``, unit rows). A held-out user's *taste* is the feedback-weighted mean of the
  factors of their whole true history (:func:`feedback_weights`), so the simulated user prefers
  what the real user liked most, including items the recommender has not seen them consume yet.
* The **response model** proper is a second sequence model trained on *all* users' full
  sequences (held-out users included: it is the simulator's ground truth, never a policy input);
  a simulated user's affinity for an item is the cosine of the item's response-model vector to
  the mean vector of the user's next 30 real items (``user_affinity``).
* ``item_quality`` is the item's mean feedback mapped to [0, 1]: the "watch value" of a click.

**Feedback.** A log whose ``value`` column is mostly filled with at least two distinct values
has *explicit* feedback (ratings, stars, scores on any scale): its 1st..99th percentile range
``[low, high]`` maps to quality [0, 1], and a taste weight is the value minus the middle of that
range (ML-1M: stars minus 3). Any other log is *implicit*: each row weighs what its event type
earns as a reward (``STREAMREC_STREAM__REWARD_VALUES``: click 1, add_to_cart 3, purchase 10; a
view or unknown type 0); quality is that weight over the largest one, a taste weight is one plus
it. A view-only log thus has one quality for every item, which is all it can tell.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds

from streamrec.config import StreamSettings
from streamrec.data.sequences import SequenceData, Vocabulary, build_sequences
from streamrec.errors import DataError

__all__ = [
    "SimulatorData",
    "build_simulator_data",
    "feedback_weights",
    "load_simulator_data",
    "save_simulator_data",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatorData:
    """Arrays the simulator needs; index 0 of every item array is padding."""

    vocab: Vocabulary
    #: Real sequences of the users the candidate model may train on.
    train_sequences: list[np.ndarray]
    #: Held-out users: what the recommender has seen (oldest first) ...
    observed: list[np.ndarray]
    #: ... and what they consumed afterwards (the response model's ground truth).
    future: list[np.ndarray]
    #: ``[n_users, dim]`` unit taste vectors of the held-out users (from their whole history).
    user_taste: np.ndarray
    #: ``[n_rows, dim]`` unit item vectors of the response model (row 0 zero).
    item_factors: np.ndarray
    #: ``[n_rows]`` mean feedback mapped to [0, 1] (see the module docstring).
    item_quality: np.ndarray
    #: ``[n_rows]`` log(1 + training interactions), scaled to [0, 1].
    item_popularity: np.ndarray
    #: Real session lengths (30-minute gap) of the held-out users, for calibration.
    session_lengths: np.ndarray
    #: ``[n_users, n_rows]`` the response model's affinity of each simulated user for each item
    #: (see :func:`agents.envs.candidates.response_affinity`). None = ``taste . factor``.
    user_affinity: np.ndarray | None = None

    def affinity(self, user: int) -> np.ndarray:
        """``[n_rows]`` affinity of ``user`` for every item."""
        if self.user_affinity is not None:
            return np.asarray(self.user_affinity[user], dtype=np.float32)
        return np.asarray(self.item_factors @ self.user_taste[user], dtype=np.float32)

    @property
    def n_users(self) -> int:
        return len(self.observed)

    @property
    def n_rows(self) -> int:
        return int(self.item_factors.shape[0])


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def feedback_weights(
    frame: pd.DataFrame, type_weights: Mapping[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per row of ``frame``: quality in [0, 1], taste weight, and ``"explicit"`` or
    ``"implicit"`` (the rules are in the module docstring)."""
    values = (
        pd.to_numeric(frame["value"], errors="coerce")
        if "value" in frame
        else pd.Series(np.nan, index=frame.index)
    )
    if len(values) and values.notna().mean() >= 0.5 and values.nunique() >= 2:
        low, high = (float(q) for q in values.quantile([0.01, 0.99]))
        if high <= low:  # nearly every value equal: use the full range
            low, high = float(values.min()), float(values.max())
        middle = (low + high) / 2.0
        clipped = values.fillna(middle).clip(low, high).to_numpy(dtype=np.float64)
        quality = (clipped - low) / (high - low)
        taste = clipped - middle
        # a middling value still says the user chose the item: a small positive weight
        taste = np.where(taste == 0.0, (high - low) / 16.0, taste)
        return quality, taste, "explicit"
    weights = dict(type_weights if type_weights is not None else _default_type_weights())
    top = max([w for w in weights.values() if w > 0], default=1.0)
    types = frame["type"].astype(str) if "type" in frame else pd.Series("", index=frame.index)
    strength = types.map(lambda name: max(float(weights.get(name, 0.0)), 0.0)).to_numpy(
        dtype=np.float64
    )
    return strength / top, 1.0 + strength, "implicit"


def _default_type_weights() -> dict[str, float]:
    default = StreamSettings.model_fields["reward_values"].default_factory
    assert default is not None
    return dict(default())  # type: ignore[call-arg]


def build_simulator_data(
    frame: pd.DataFrame,
    *,
    heldout_every: int = 5,
    dim: int = 24,
    session_gap_s: int = 1800,
    max_heldout: int | None = None,
    type_weights: Mapping[str, float] | None = None,
    affinity_budget_bytes: int = 1 << 30,
) -> SimulatorData:
    """Split ``frame`` (any interaction log) into training and simulated users; fit the
    response space. Deterministic.

    The simulated users are capped so their float16 affinity table (users x items) stays
    within ``affinity_budget_bytes`` (ML-1M: 1,208 users x 3,707 items, 9 MB).
    """
    data: SequenceData = build_sequences(frame)
    n_rows = data.vocab.size
    heldout = [u for u in range(data.n_users) if u % heldout_every == 0]
    cap = max(1, affinity_budget_bytes // (2 * n_rows))
    if max_heldout is not None:
        cap = min(cap, max_heldout)
    if len(heldout) > cap:
        logger.info("simulating %d of the %d held-out users (affinity budget)", cap, len(heldout))
        heldout = heldout[:cap]
    heldout_set = set(heldout)
    train_users = [u for u in range(data.n_users) if u not in heldout_set]
    if not heldout or len(train_users) < 3 or n_rows < 4:
        raise DataError(
            f"the simulator needs held-out and training users and items: the log has "
            f"{data.n_users} users and {n_rows - 1} items with >= 5 interactions each"
        )
    train_sequences = [data.sequences[u] for u in train_users]

    rows = np.concatenate([np.full(len(data.sequences[u]), i) for i, u in enumerate(train_users)])
    cols = np.concatenate(train_sequences)
    matrix = csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(train_users), n_rows)
    )
    matrix.data[:] = 1.0
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    # IDF-like column scaling keeps the first factors from being pure popularity.
    scaled = matrix @ _diag(1.0 / np.sqrt(np.maximum(counts, 1.0)))
    rank = min(dim, min(scaled.shape) - 1)
    if rank < dim:
        logger.warning("response space: %d factors, not %d (a small log)", rank, dim)
    _, singular, item_vt = svds(scaled, k=rank, random_state=0)
    order = np.argsort(-singular)
    item_factors = _unit((item_vt[order] * np.sqrt(singular[order])[:, None]).T)
    item_factors[0] = 0.0

    log = frame[[c for c in ("user_id", "item_id", "type", "value") if c in frame]].copy()
    log["item_id"] = log["item_id"].astype(str)
    log["user_id"] = log["user_id"].astype(str)
    log["index"] = log["item_id"].map(lambda item: data.vocab.get(item) or 0)
    log = log[log["index"] > 0]
    quality_of_row, taste_of_row, kind = feedback_weights(log, type_weights)
    quality_sum = np.bincount(log["index"], weights=quality_of_row, minlength=n_rows)
    quality_count = np.bincount(log["index"], minlength=n_rows)
    fallback = float(quality_of_row.mean()) if len(quality_of_row) else 0.5
    item_quality = np.where(quality_count > 0, quality_sum / np.maximum(quality_count, 1), fallback)
    item_quality[0] = 0.0
    popularity = np.log1p(counts)
    popularity = popularity / max(popularity.max(), 1e-12)

    heldout_ids = {data.users[u] for u in heldout}
    in_heldout = log["user_id"].isin(heldout_ids).to_numpy()
    weight_of = {
        (user, int(index)): float(weight)
        for user, index, weight in zip(
            log["user_id"][in_heldout],
            log["index"][in_heldout],
            taste_of_row[in_heldout],
            strict=True,
        )
    }
    default_weight = float(np.median(taste_of_row)) if len(taste_of_row) else 1.0
    observed, future, tastes = [], [], []
    for u in heldout:
        sequence = data.sequences[u]
        cut = max(3, len(sequence) // 2)
        observed.append(sequence[:cut])
        future.append(sequence[cut:])
        user = data.users[u]
        weights = np.array([weight_of.get((user, int(i)), default_weight) for i in sequence])
        tastes.append((weights[:, None] * item_factors[sequence]).sum(axis=0))
    user_taste = _unit(np.stack(tastes))

    from streamrec.data.replay import assign_sessions  # local: only needed here

    held_log = frame[frame["user_id"].astype(str).isin(heldout_ids)]
    session_lengths = assign_sessions(held_log, session_gap_s).value_counts().to_numpy()
    logger.info(
        "simulator data: %d training users, %d simulated users, %d items, %d sessions, %s feedback",
        len(train_users),
        len(heldout),
        n_rows - 1,
        len(session_lengths),
        kind,
    )
    return SimulatorData(
        vocab=data.vocab,
        train_sequences=train_sequences,
        observed=observed,
        future=future,
        user_taste=user_taste.astype(np.float32),
        item_factors=item_factors.astype(np.float32),
        item_quality=item_quality.astype(np.float32),
        item_popularity=popularity.astype(np.float32),
        session_lengths=np.asarray(session_lengths, dtype=np.int64),
    )


def _diag(values: np.ndarray) -> csr_matrix:
    size = len(values)
    return csr_matrix((values, (np.arange(size), np.arange(size))), shape=(size, size))


def save_simulator_data(data: SimulatorData, directory: str | Path) -> Path:
    """Arrays as ``.npz`` (no pickle) + the vocabulary as JSON."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data.vocab.save(directory / "vocab.json")
    ragged = {
        "train": data.train_sequences,
        "observed": data.observed,
        "future": data.future,
    }
    arrays: dict[str, np.ndarray] = {}
    for name, sequences in ragged.items():
        arrays[f"{name}_values"] = (
            np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
        )
        arrays[f"{name}_lengths"] = np.array([len(s) for s in sequences], dtype=np.int64)
    arrays.update(
        user_taste=data.user_taste,
        item_factors=data.item_factors,
        item_quality=data.item_quality,
        item_popularity=data.item_popularity,
        session_lengths=data.session_lengths,
    )
    if data.user_affinity is not None:
        arrays["user_affinity"] = data.user_affinity
    np.savez(directory / "simulator.npz", **arrays)  # type: ignore[arg-type]
    return directory


def load_simulator_data(directory: str | Path) -> SimulatorData:
    directory = Path(directory)
    vocab = Vocabulary.load(directory / "vocab.json")
    with np.load(directory / "simulator.npz", allow_pickle=False) as payload:
        arrays = {name: payload[name] for name in payload.files}

    def ragged(name: str) -> list[np.ndarray]:
        lengths = arrays[f"{name}_lengths"]
        return list(np.split(arrays[f"{name}_values"], np.cumsum(lengths)[:-1]))

    return SimulatorData(
        vocab=vocab,
        train_sequences=ragged("train"),
        observed=ragged("observed"),
        future=ragged("future"),
        user_taste=arrays["user_taste"],
        item_factors=arrays["item_factors"],
        item_quality=arrays["item_quality"],
        item_popularity=arrays["item_popularity"],
        session_lengths=arrays["session_lengths"],
        user_affinity=arrays.get("user_affinity"),
    )
