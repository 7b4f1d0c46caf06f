"""Guarded promotion and automatic rollback of fine-tuned versions.

* **Promote** a candidate only when, on the recent prequential window (events each model ranked
  *before* it was trained on them, so a true holdout), its NDCG@10 beats the serving version's
  by ``margin`` (relative) over at least ``min_events`` events.
* **Roll back** a promoted version when, after ``min_events`` of its own, its rolling NDCG@10
  falls below what the previous version had when it was replaced, by more than ``margin``.

Every decision is logged with the numbers that justified it and returned as a record that the
fine-tuner writes to ``promotions.jsonl`` beside the registry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from streamrec.online.prequential import RollingMetrics

__all__ = ["Decision", "PromotionGuard"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    action: str  # promote | rollback | keep
    reason: str
    candidate_ndcg: float
    serving_ndcg: float
    events: int
    at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PromotionGuard:
    def __init__(self, *, margin: float = 0.01, min_events: int = 500) -> None:
        self.margin = margin
        self.min_events = min_events
        #: NDCG of the version that was replaced at the last promotion (rollback reference).
        self.previous_ndcg: float | None = None

    def should_promote(self, candidate: RollingMetrics, serving: RollingMetrics) -> Decision:
        events = min(len(candidate), len(serving))
        cand, serv = candidate.ndcg, serving.ndcg
        if events < self.min_events:
            return Decision(
                "keep", f"only {events} events in the window", cand, serv, events, time.time()
            )
        if cand >= serv * (1.0 + self.margin) and cand > 0:
            decision = Decision(
                "promote",
                f"candidate NDCG@10 {cand:.4f} >= serving {serv:.4f} x (1 + {self.margin})",
                cand,
                serv,
                events,
                time.time(),
            )
            log.info("promotion: %s over %d events", decision.reason, events)
            return decision
        return Decision(
            "keep",
            f"candidate NDCG@10 {cand:.4f} < serving {serv:.4f} x (1 + {self.margin})",
            cand,
            serv,
            events,
            time.time(),
        )

    def promoted(self, decision: Decision) -> None:
        self.previous_ndcg = decision.serving_ndcg

    def should_roll_back(self, serving: RollingMetrics) -> Decision:
        current = serving.ndcg
        reference = self.previous_ndcg
        if reference is None or len(serving) < self.min_events:
            return Decision(
                "keep", "no promotion to judge yet", current, current, len(serving), time.time()
            )
        if current < reference * (1.0 - self.margin):
            decision = Decision(
                "rollback",
                f"serving NDCG@10 {current:.4f} < previous version's {reference:.4f} "
                f"x (1 - {self.margin})",
                current,
                reference,
                len(serving),
                time.time(),
            )
            log.warning("rollback: %s over %d events", decision.reason, len(serving))
            return decision
        return Decision("keep", "serving holds up", current, reference, len(serving), time.time())

    def rolled_back(self) -> None:
        self.previous_ndcg = None
