"""`streamrec finetune`: the fine-tuner process.

Consumes the events topic in its own consumer group (validating, dead-lettering like every
consumer), feeds :class:`~streamrec.online.learner.OnlineLearner`, trains every
``train_every_events`` events or ``train_every_s`` seconds, checks promotion/rollback every
``promote_every_s`` through the registry (the worker's
:class:`~streamrec.serving.sequence_ranker.SequenceRanker` hot-reloads the promoted version),
and checkpoints every ``checkpoint_every_s``.

Exactly-once training across restarts: a checkpoint holds the candidate's weights, the
vocabulary, the learner's state and, per partition, the next offset it has not learnt from;
offsets are committed to Kafka only *after* the checkpoint is on disk, and on restart records
below the checkpoint's offsets are skipped. So a crash anywhere replays nothing twice and loses
nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamrec import metrics
from streamrec.client import ConsumedEvent, EventConsumer
from streamrec.config import Settings
from streamrec.data.sequences import atomic_write_text
from streamrec.errors import ModelError
from streamrec.models.checkpoint import load_checkpoint, save_checkpoint
from streamrec.models.registry import ModelRegistry
from streamrec.online.learner import (
    LearnerConfig,
    Observation,
    OnlineLearner,
    carried_histories,
    seen_of,
)
from streamrec.online.promotion import Decision, PromotionGuard

__all__ = ["FineTuner", "Freshness"]

log = logging.getLogger(__name__)


@dataclass
class Freshness:
    """Seconds from an event's arrival to the first promoted version trained on it."""

    samples: list[float] = field(default_factory=list)
    pending_oldest: float | None = None  # oldest arrival trained on but not yet promoted

    def trained(self, oldest_arrival: float | None) -> None:
        if oldest_arrival is not None and (
            self.pending_oldest is None or oldest_arrival < self.pending_oldest
        ):
            self.pending_oldest = oldest_arrival

    def promoted(self, now: float) -> float | None:
        if self.pending_oldest is None:
            return None
        value = now - self.pending_oldest
        self.samples.append(value)
        self.pending_oldest = None
        return value


class FineTuner:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        registry: ModelRegistry | None = None,
        histories: dict[str, list[str]] | None = None,
        observer: Callable[[list[ConsumedEvent], Observation], None] | None = None,
    ) -> None:
        """``histories`` seeds users' item histories when there is no checkpoint to resume
        (e.g. from the offline training data); ``observer`` sees every batch's outcome."""
        self.settings = settings
        self.online = settings.online
        self.registry = registry or ModelRegistry(settings.registry_path)
        self.state_dir = settings.data_path / "finetune" / settings.online.group_id
        self.clock = clock
        self.guard = PromotionGuard(
            margin=self.online.promote_margin, min_events=self.online.promote_min_events
        )
        self.freshness = Freshness()
        self.decisions: list[Decision] = []
        self.offsets: dict[str, int] = {}  # "topic:partition" -> next offset not yet learnt
        #: Ids of the newest events learnt (oldest first), so a resent event is learnt once.
        self.learnt_ids: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0  # events skipped as already learnt, since start
        self._checkpoint_seq = 0
        self.observer = observer
        self.resumed = False  # True once a checkpoint in state_dir has been read
        self.learner = self._build_learner()
        if histories and not self.resumed:
            self.learner.seed_histories(histories)
        self._consumer: EventConsumer | None = None

    # -- set-up ----------------------------------------------------------------------------
    def _build_learner(self) -> OnlineLearner:
        version = self.registry.current()
        if version is None:
            raise ModelError(
                f"no promoted model in {self.registry.root}; train one first: "
                "`streamrec train --model sasrec --promote`"
            )
        return self._resume(self._fresh_learner(version), version)

    def _fresh_learner(self, version: str) -> OnlineLearner:
        """A learner whose candidate starts as ``version`` of the registry."""
        served = self.registry.load(version)
        config = LearnerConfig(
            lr=self.online.lr,
            batch_size=self.online.batch_size,
            steps_per_round=self.online.steps_per_round,
            recent_share=self.online.recent_share,
            recent_size=self.online.replay_recent,
            reservoir_size=self.online.replay_reservoir,
            window=self.online.window,
            new_item_min_events=self.online.new_item_min_events,
            context_len=self.online.context_len,
            train_positions=self.online.train_positions,
            repeats=str(served.meta.get("repeats", "keep")),
        )
        return OnlineLearner(served.model, served.vocab, config, serving_version=version)

    def _resume(self, learner: OnlineLearner, version: str) -> OnlineLearner:
        current = self.state_dir / "CURRENT"
        if current.is_file():
            self.resumed = True
            checkpoint = self.state_dir / current.read_text().strip()
            self._checkpoint_seq = int(checkpoint.name.split("-")[1])
            state = json.loads((checkpoint / "state.json").read_text())
            restored = load_checkpoint(checkpoint)
            self.offsets = {key: int(value) for key, value in state["offsets"].items()}
            self.learnt_ids = OrderedDict.fromkeys(state.get("learnt_ids", []))
            tuned_from = state["learner"].get("serving_version")
            if tuned_from != version:
                # Promoted or rolled back by someone else while this process was down: its
                # candidate descends from another version, with another vocabulary.
                log.warning(
                    "the registry serves %s, but the checkpoint in %s fine-tuned %s: starting "
                    "again from %s (offsets and learnt event ids kept, histories carried "
                    "over by item id)",
                    version,
                    self.state_dir,
                    tuned_from,
                    version,
                )
                learner.seed_histories(
                    carried_histories(
                        dict(state["learner"]["histories"]),
                        seen_of(state["learner"]),
                        restored.vocab,
                    )
                )
                return learner
            learner.candidate = restored.model
            learner.candidate.train()
            learner.vocab = restored.vocab
            learner.optimizer = learner._new_optimizer()
            learner.load_state(state["learner"])
            previous = state["learner"].get("previous_version")
            if previous is not None:
                # The last promotion was not judged before the stop: judge it on the events
                # from here, against its predecessor, as if it had just been made.
                learner.shadow(self.registry.load(previous).model, previous)
            log.info(
                "resumed fine-tuner from %s: %d examples, offsets %s",
                self.state_dir,
                learner.examples_seen,
                self.offsets,
            )
        return learner

    def consumer(self) -> EventConsumer:
        if self._consumer is None:
            self._consumer = EventConsumer(self.settings, group_id=self.online.group_id)
        return self._consumer

    # -- the loop --------------------------------------------------------------------------
    def run(
        self,
        *,
        max_events: int | None = None,
        idle_timeout_s: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Consume until ``stop()``, ``max_events`` learnt, or ``idle_timeout_s`` without input."""
        consumer = self.consumer()
        now = self.clock()
        last_train = last_promote = last_checkpoint = last_input = now
        since_train = 0
        learnt = 0
        try:
            while not (stop and stop()):
                batch = self._fresh(consumer.poll_batch(512, 0.5))
                now = self.clock()
                if batch:
                    last_input = now
                    self._observe(batch)
                    since_train += len(batch)
                    learnt += len(batch)
                elif not consumer.assigned():
                    last_input = now  # idle time counts once partitions are assigned
                elif idle_timeout_s is not None and now - last_input > idle_timeout_s:
                    break
                if since_train and (
                    since_train >= self.online.train_every_events
                    or now - last_train >= self.online.train_every_s
                ):
                    self._train()
                    since_train, last_train = 0, now
                if now - last_promote >= self.online.promote_every_s:
                    self.review()
                    last_promote = now
                if now - last_checkpoint >= self.online.checkpoint_every_s:
                    self.checkpoint()
                    last_checkpoint = now
                if max_events is not None and learnt >= max_events:
                    break
        finally:
            if since_train:
                self._train()
            self.checkpoint()

    def _fresh(self, batch: list[ConsumedEvent]) -> list[ConsumedEvent]:
        """Drop records already learnt from: by offset (read again after a restart that came
        before a commit) and by event id (sent again: a producer's retry, a replayed log)."""
        out = []
        ids = self.learnt_ids
        in_batch: set[str] = set()
        skipped = 0
        for item in batch:
            key = f"{item.topic}:{item.partition}"
            if item.offset < self.offsets.get(key, 0):
                continue
            event_id = item.event.event_id
            if event_id in ids or event_id in in_batch:
                self.offsets[key] = item.offset + 1  # nothing to learn: past it
                skipped += 1
                continue
            in_batch.add(event_id)
            out.append(item)
        if skipped:
            self.duplicates += skipped
            log.info("skipped %d events already learnt (same event_id)", skipped)
        limit = self.online.dedup_events
        if limit:
            ids.update(dict.fromkeys(item.event.event_id for item in out))
            while len(ids) > limit:
                ids.popitem(last=False)
        return out

    def _observe(self, batch: list[ConsumedEvent]) -> None:
        observation = self.learner.observe(
            [(item.event.user_id, item.event.item_id) for item in batch],
            [item.append_time for item in batch],
        )
        for item in batch:
            self.offsets[f"{item.topic}:{item.partition}"] = item.offset + 1
        if self.observer is not None:
            self.observer(batch, observation)
        metrics.ONLINE_NDCG.labels("serving").set(self.learner.serving_metrics.ndcg)
        metrics.ONLINE_NDCG.labels("candidate").set(self.learner.candidate_metrics.ndcg)
        metrics.ONLINE_HR.labels("serving").set(self.learner.serving_metrics.hr)
        metrics.ONLINE_HR.labels("candidate").set(self.learner.candidate_metrics.hr)
        if observation.new_items:
            log.info("%d new items: %s", len(observation.new_items), observation.new_items[:5])

    def _train(self) -> None:
        loss = self.learner.train()
        self.freshness.trained(self.learner.trained_through())
        if loss is not None:
            metrics.FINETUNE_LOSS.set(loss)

    # -- versions --------------------------------------------------------------------------
    def review(self) -> Decision:
        """Judge the last promotion (roll back or confirm); with none pending, or once it is
        confirmed (in the same check, so a confirmation costs no extra period of staleness),
        consider promoting the candidate. Returns the last decision taken."""
        learner = self.learner
        current = self.registry.current()
        if current is not None and current != learner.serving_version:
            return self._follow(current)
        verdict: Decision | None = None
        if learner.previous is not None:
            verdict = self.guard.judge(learner.since_promotion, learner.previous_metrics)
            if verdict.action == "rollback":
                previous = learner.previous
                restored = self.registry.rollback()
                learner.adopt_serving(previous, restored)
                metrics.MODEL_ROLLBACKS.inc()
                self._log(verdict, restored)
                return verdict
            if verdict.action != "confirm":
                return verdict
            learner.end_shadow()
            self._log(verdict, learner.serving_version)
        decision = self.guard.should_promote(learner.candidate_metrics, learner.serving_metrics)
        if decision.action != "promote":
            # No record in promotions.jsonl (one per check would flood it); the log says why.
            log.info("keeping %s: %s", learner.serving_version, decision.reason)
            return verdict or decision
        exported = learner.export()
        version = self.registry.save(
            exported,
            learner.vocab,
            {
                "dataset": "stream",
                "parent": learner.serving_version,
                "metrics": {
                    "online_ndcg@10": decision.candidate_ndcg,
                    "serving_ndcg@10": decision.serving_ndcg,
                    "window_events": decision.events,
                },
                "offline_n_items": learner.offline_n_items,
                "new_item_min_events": self.online.new_item_min_events,
                "repeats": learner.config.repeats,
                "examples_seen": learner.examples_seen,
            },
        )
        self.registry.promote(version)
        learner.adopt_serving(exported, version, shadow=True)
        freshness = self.freshness.promoted(self.clock())
        metrics.MODEL_PROMOTIONS.inc()
        self._log(decision, version, freshness_s=freshness)
        return decision

    def _follow(self, version: str) -> Decision:
        """The registry was promoted or rolled back by someone else (`streamrec registry`,
        `train --promote`): fine-tune that version from now on, never override it."""
        log.warning(
            "the registry now serves %s, not %s: fine-tuning %s from here",
            version,
            self.learner.serving_version,
            version,
        )
        histories = self.learner.carried_histories()
        old = self.learner
        self.learner = self._fresh_learner(version)
        self.learner.seed_histories(histories)
        self.learner.examples_seen, self.learner.steps = old.examples_seen, old.steps
        decision = Decision(
            "follow",
            f"the registry serves {version}, set outside the fine-tuner",
            0.0,
            0.0,
            0,
            time.time(),
        )
        self._log(decision, version)
        return decision

    def _log(self, decision: Decision, version: str, **extra: Any) -> None:
        self.decisions.append(decision)
        record = {**decision.as_dict(), "version": version, **extra}
        path = self.registry.root / "promotions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- durability ------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write candidate + state into a new directory, switch ``CURRENT`` to it atomically,
        then commit the consumed offsets (so Kafka never runs ahead of the checkpoint)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._checkpoint_seq += 1
        name = f"ckpt-{self._checkpoint_seq:08d}"
        staging = self.state_dir / f".{name}"
        shutil.rmtree(staging, ignore_errors=True)
        save_checkpoint(
            staging,
            self.learner.candidate,
            self.learner.vocab,
            {"dataset": "stream", "parent": self.learner.serving_version},
        )
        (staging / "state.json").write_text(
            json.dumps(
                {
                    "learner": self.learner.state(),
                    "offsets": self.offsets,
                    "learnt_ids": list(self.learnt_ids),
                }
            )
        )
        staging.rename(self.state_dir / name)
        atomic_write_text(self.state_dir / "CURRENT", name)
        for old in self.state_dir.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        if self._consumer is not None:
            self._consumer.commit()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
