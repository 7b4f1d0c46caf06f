"""What the worker does with one micro-batch of valid events (no faust in here).

1. apply the batch to Redis state (one round trip; duplicates change nothing),
2. attribute rewards for events on items that were recommended to the session,
3. rank every newly applied qualifying event in one batched ranker call,
4. defer remembering what was shown (for later attribution: written with the next batch's
   state call, or flushed before the batch is acknowledged) and return the records to publish.

Recommendations are produced for *newly applied* events only: a redelivered event (after a
crash between the state write and the offset commit) yields no second recommendation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrec import metrics
from streamrec.config import StreamSettings
from streamrec.events import OutgoingRecommendation, Reward
from streamrec.serving.ranker import History
from streamrec.serving.service import Recommender, Request
from streamrec.state.keys import shown_scope
from streamrec.state.store import Page, StateStore

__all__ = ["BatchProcessor", "BatchResult"]

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    recommendations: list[tuple[str, OutgoingRecommendation]] = field(default_factory=list)
    rewards: list[tuple[str, Reward]] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    #: Duplicates whose outputs are produced again (never confirmed delivered; see StateStore).
    reemitted: int = 0
    #: Done once what the recommendations showed is in Redis (:meth:`StateStore.settle`).
    shown: list[asyncio.Future[None]] = field(default_factory=list)


class PolicyStats:
    """Per policy, over this process's last ``window_s`` seconds: the share of recommendations
    in which the policy explored, and the reward attributed per recommendation. Exported as
    ``streamrec_policy_exploration_rate`` and ``streamrec_policy_reward_mean``.

    Running totals per policy, so a batch costs the same after hours as after seconds (a
    busy worker adds ~100 batches a second to the window)."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        # (monotonic time, policy, recommendations, explored, reward value), one per batch
        self._buckets: deque[tuple[float, str, int, int, float]] = deque()
        # policy -> [recommendations, explored, reward, buckets] over the buckets above
        self._totals: dict[str, list[float]] = {}
        self._exported: set[str] = set()

    def add(
        self, policy: str, recommendations: int, explored: int, reward: float, now: float
    ) -> None:
        self._buckets.append((now, policy, recommendations, explored, reward))
        total = self._totals.setdefault(policy, [0, 0, 0.0, 0])
        total[0] += recommendations
        total[1] += explored
        total[2] += reward
        total[3] += 1

    def export(self, now: float) -> dict[str, tuple[float, float]]:
        """Set the gauges; returns ``{policy: (exploration rate, reward mean)}``."""
        buckets = self._buckets
        while buckets and now - buckets[0][0] > self.window_s:
            _, policy, recommendations, explored, reward = buckets.popleft()
            total = self._totals[policy]
            if total[3] == 1:  # its last bucket: drop it (and any rounding left in the sum)
                del self._totals[policy]
                continue
            total[0] -= recommendations
            total[1] -= explored
            total[2] -= reward
            total[3] -= 1
        out = {
            policy: (explored / recs, reward / recs)
            for policy, (recs, explored, reward, _) in self._totals.items()
            if recs > 0
        }
        for policy, (rate, mean) in out.items():
            metrics.POLICY_EXPLORATION_RATE.labels(policy).set(rate)
            metrics.POLICY_REWARD_MEAN.labels(policy).set(mean)
        for policy in self._exported - set(out):  # nothing recommended in the window
            metrics.POLICY_EXPLORATION_RATE.remove(policy)
            metrics.POLICY_REWARD_MEAN.remove(policy)
        self._exported = set(out)
        return out


class BatchProcessor:
    def __init__(
        self, state: StateStore, recommender: Recommender, settings: StreamSettings
    ) -> None:
        self.state = state
        self.recommender = recommender
        self.settings = settings
        self._trigger = set(settings.recommend_on)
        self._reward_types = set(settings.reward_values)
        self.policy_stats = PolicyStats()

    def encode(self, events: Sequence[Any]) -> bytes:
        """The state call's argument for ``events``, made ahead (see :meth:`process`)."""
        return self.state.encode_batch(events, attribute=self._reward_types)

    async def process(
        self, events: Sequence[Any], *, replay: bool = False, encoded: bytes | None = None
    ) -> BatchResult:
        """``replay``: these events were in a call that failed (see :meth:`StateStore.apply`).
        ``encoded``: :meth:`encode` of ``events``, if made ahead."""
        result = BatchResult()
        if not events:
            return result
        started = time.perf_counter()
        outcomes = await self.state.apply(
            events, attribute=self._reward_types, replay=replay, encoded=encoded
        )
        requests: list[Request] = []
        for event, outcome in zip(events, outcomes, strict=True):
            if not outcome.applied:
                result.duplicates += 1
                if not outcome.reemit:
                    continue
                result.reemitted += 1  # its outputs were lost with a crashed worker
            else:
                result.applied += 1
            kind = event.type.value
            if outcome.shown is not None:
                reward = self._reward(event, outcome.shown)
                if reward is not None:
                    result.rewards.append((event.key, reward))
            if kind in self._trigger:
                device = event.context.device if event.context else None
                requests.append(
                    Request(
                        History(
                            outcome.user_items,
                            user_id=event.user_id,
                            session_id=event.session_id,
                            exclude=frozenset(outcome.user_items),
                        ),
                        hour=time.gmtime(event.ts).tm_hour,
                        device=device,
                        event_id=event.event_id,
                        event_time=event.ts,
                    )
                )
        rewards_by_policy: dict[str, float] = defaultdict(float)
        for _, reward in result.rewards:
            rewards_by_policy[reward.policy] += reward.reward
        explored = 0
        if requests:
            ranked = await self.recommender.rank(requests, self.settings.top_k)
            shown_by_scope: dict[str, list[Page]] = {}
            shown_by_policy: Counter[str] = Counter()  # metrics, added once per batch
            recs_by_policy: Counter[str] = Counter()
            for request, ranking in zip(requests, ranked, strict=True):
                explored += ranking.explored
                record = self.recommender.record(request, ranking)
                scope = request.history.session_id or request.history.user_id or ""
                result.recommendations.append((scope, record))
                # Every page of the batch is remembered (a session with two views in one
                # batch saw both); an item on several pages keeps its latest.
                shown_at = shown_scope(request.history.session_id, request.history.user_id or "")
                shown_by_scope.setdefault(shown_at, []).append(
                    Page(
                        record.rec_id,
                        ranking.item_ids,
                        ranking.propensities or None,
                        record.policy,
                        record.model_version,
                        request.event_time or 0.0,
                    )
                )
                shown_by_policy[record.policy] += len(record.item_ids)
                recs_by_policy[record.policy] += 1
            for name, count in shown_by_policy.items():
                metrics.IMPRESSIONS.labels(name).inc(count)
            for name, count in recs_by_policy.items():
                metrics.RECOMMENDATIONS.labels("stream", name).inc(count)
            result.shown.append(self.state.defer_shown(shown_by_scope))
        if result.duplicates:
            metrics.EVENTS_DUPLICATE.inc(result.duplicates)
        now = time.monotonic()
        policy = self.recommender.policy
        earned = rewards_by_policy.pop(policy, 0.0)
        self.policy_stats.add(policy, len(requests), explored, earned, now)
        for other, value in rewards_by_policy.items():  # rewards for an earlier policy's lists
            self.policy_stats.add(other, 0, 0, value, now)
        self.policy_stats.export(now)
        metrics.BATCH_SIZE.observe(len(events))
        metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        return result

    def _reward(self, event: Any, shown: dict[str, Any]) -> Reward | None:
        delay = event.ts - float(shown.get("event_time") or 0.0)
        if delay < 0 or delay > self.settings.reward_window_s:
            return None
        kind = event.type.value
        value = self.settings.reward_values.get(kind, 0.0)
        metrics.REWARDS.labels(kind, shown["policy"]).inc()
        metrics.REWARD_VALUE.labels(shown["policy"]).inc(value)
        return Reward(
            rec_id=shown["rec_id"],
            user_id=event.user_id,
            session_id=event.session_id,
            item_id=event.item_id,
            position=int(shown["position"]),
            event_id=event.event_id,
            event_type=kind,
            reward=value,
            propensity=shown.get("propensity"),
            policy=shown["policy"],
            model_version=shown["model_version"],
            delay_s=delay,
        )
