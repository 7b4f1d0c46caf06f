"""The ranker interface: the one seam between the stream/HTTP paths and any model.

A ranker takes a *batch* of histories (one per request) with their contexts and returns, per
request, the top-k candidates with scores, never including items in ``exclude``. The popularity
baseline, the sequence models and the RL re-ranker all implement it, so the worker and the HTTP
API never change when the model does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Decision", "History", "RankContext", "Ranked", "Ranker"]


@dataclass(frozen=True, slots=True)
class History:
    """What is known about one request's user: items oldest first."""

    items: Sequence[str]
    user_id: str | None = None
    session_id: str | None = None
    #: Items never to recommend (already seen); defaults to ``items``.
    exclude: frozenset[str] | None = None

    def excluded(self) -> frozenset[str]:
        return self.exclude if self.exclude is not None else frozenset(self.items)


@dataclass(frozen=True, slots=True)
class RankContext:
    """Request context; every field optional."""

    hour: int | None = None
    device: str | None = None
    #: Popular items for this context, most popular first (filled by the service from state).
    popular: Sequence[tuple[str, float]] = ()
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a learned policy saw and chose, logged for offline RL (BC/MARWIL) and OPE.

    ``candidates`` holds the feature rows of the real candidate slots only (the policy pads to
    ``n_slots`` and masks the rest); ``action`` is the slot put on top of the page, chosen with
    probability ``propensity``.
    """

    candidates: list[list[float]]
    context: list[float]
    n_slots: int
    action: int
    propensity: float


@dataclass(frozen=True, slots=True)
class Ranked:
    """Top-k for one request, best first."""

    item_ids: list[str]
    scores: list[float]
    #: Per item, the history items that contributed most (optional).
    explanations: list[list[str]] | None = None
    #: Per item, the probability the (stochastic) policy put it there (optional).
    propensities: list[float] | None = None
    #: The policy placed some item other than its greedy choice (exploration).
    explored: bool = False
    #: The policy's observation and action, when it logs them (offline RL from the stream).
    decision: Decision | None = None
    #: Who answered this row when not the ranker itself (a fallback, e.g. popularity for a
    #: history with no item the model knows): the record's ``model_version``.
    answered_by: str | None = None


@runtime_checkable
class Ranker(Protocol):
    """Anything that ranks candidates for a batch of histories."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def rank(
        self, histories: Sequence[History], contexts: Sequence[RankContext], k: int
    ) -> list[Ranked]: ...
