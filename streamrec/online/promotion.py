"""Guarded promotion and automatic rollback of fine-tuned versions.

* **Promote** a candidate only when, on the recent prequential window (events each model ranked
  *before* it was trained on them, so a true holdout), its NDCG@10 beats the serving version's
  by ``margin`` (relative) over at least ``min_events`` events.
* **Roll back** a promoted version when, on the ``min_events`` events after its promotion, its
  NDCG@10 is below the replaced version's *on the same events* (the replaced version is kept
  and scored in the shadow until the verdict) by more than ``margin``; otherwise confirm it.
  Comparing on the same events keeps drift in the stream from passing for a regression.

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
    action: str  # promote | rollback | confirm | keep | follow (the registry moved outside)
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

    def should_promote(self, candidate: RollingMetrics, serving: RollingMetrics) -> Decision:
        """Both windows end at the same event (each batch is ranked by both models); the
        serving one restarts at each promotion, so compare the newest events both hold."""
        events = min(len(candidate), len(serving))
        cand, serv = candidate.ndcg_last(events), serving.ndcg_last(events)
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

    def judge(self, promoted: RollingMetrics, previous: RollingMetrics) -> Decision:
        """Verdict on a promotion, from both versions' ranks of the *same* events since then:
        ``rollback`` if the new one is worse by more than ``margin``, ``confirm`` once
        ``min_events`` show it is not, else ``keep`` (still watching)."""
        events = min(len(promoted), len(previous))
        new, old = promoted.ndcg_last(events), previous.ndcg_last(events)
        if events < self.min_events:
            return Decision(
                "keep", f"judging: {events} events so far", new, old, events, time.time()
            )
        if new < old * (1.0 - self.margin):
            decision = Decision(
                "rollback",
                f"promoted NDCG@10 {new:.4f} < previous version's {old:.4f} x (1 - {self.margin})"
                " on the same events",
                new,
                old,
                events,
                time.time(),
            )
            log.warning("rollback: %s over %d events", decision.reason, events)
            return decision
        return Decision(
            "confirm",
            f"promoted NDCG@10 {new:.4f} >= previous {old:.4f} x (1 - {self.margin})",
            new,
            old,
            events,
            time.time(),
        )
