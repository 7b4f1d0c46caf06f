"""The online learner: pure logic (no Kafka, no registry) so it can be tested in isolation.

For each batch of events, in stream order:

1. *test*: rank the event's item under the serving model and the candidate, given the user's
   history so far (prequential evaluation; items unknown to a model count as misses);
2. *grow*: an item never seen before gets a vocabulary index at once, and a new embedding row
   (the mean of the existing rows) so old indices, rows and predictions stay as they were;
3. *remember*: the example (history + item) goes into the replay buffer, the history grows.

:meth:`OnlineLearner.train` runs small optimisation steps on batches that mix recent examples
with a reservoir of older ones. New items become recommendable once they have
``new_item_min_events`` events: until then their ``item_popularity`` prior stays below the
threshold that :class:`~streamrec.serving.sequence_ranker.SequenceRanker` masks on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from streamrec.data.sequences import REPEATS, Vocabulary
from streamrec.models.base import SequenceModel
from streamrec.models.batching import left_pad
from streamrec.models.losses import sequence_loss
from streamrec.online.buffer import ReplayBuffer
from streamrec.online.prequential import RollingMetrics, rank_targets

__all__ = [
    "LearnerConfig",
    "Observation",
    "OnlineLearner",
    "carried_histories",
    "seen_of",
    "training_batch",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnerConfig:
    #: One streamed event is one example, against thousands of targets per offline step. A
    #: small lr keeps the gradient noise from undoing the offline model; training each
    #: example's history positions too (``train_positions``) gives each step ~50x the targets.
    #: Measured on ML-1M's late period (docs/online.md): Adam at 3e-4 or 1e-3 did worse than
    #: frozen, more steps per round did not help, a larger recent share did.
    lr: float = 1e-4
    batch_size: int = 64
    steps_per_round: int = 4
    recent_share: float = 0.75
    recent_size: int = 4096
    reservoir_size: int = 16384
    max_users: int = 200_000  # histories kept in memory (least recently active dropped)
    window: int = 5000  # rolling prequential window
    new_item_min_events: int = 3
    exclude_seen: bool = True
    #: Newest items per history used online (scoring and training); None = the model's max_len.
    context_len: int | None = None
    #: Newest positions of each example trained as targets (1 = the streamed event only;
    #: more = also the history items before it, each predicted from what preceded it).
    train_positions: int = 50
    #: ``first``: as the model was trained offline (``train --repeats first``), an event on an
    #: item the user has had before is ranked (a miss, as serving cannot show it) but not
    #: learnt from and not added to the history. The learner remembers every item of each
    #: user it keeps (``max_users``), not only the newest ``context_len``.
    repeats: str = "keep"
    seed: int = 0


@dataclass
class Observation:
    """What one batch of events did."""

    serving_ranks: np.ndarray
    candidate_ranks: np.ndarray
    new_items: list[str] = field(default_factory=list)
    arrival_times: list[float] = field(default_factory=list)


def training_batch(
    examples: Sequence[Sequence[int]], context_len: int, train_positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets ``[batch, L]`` (left-padded, 0 = no target) for replay
    examples (item indices, oldest first, the streamed event last): the input is the example
    without its last item, and only the newest ``train_positions`` positions have a target,
    so 1 trains the streamed event alone."""
    if train_positions < 1:
        raise ValueError(f"train_positions must be >= 1, not {train_positions}")
    item_seq = left_pad([example[:-1] for example in examples], context_len)
    # Same lengths, same right alignment: position j's target is the item after it.
    target_seq = left_pad([example[1:] for example in examples], context_len)
    target_seq[:, :-train_positions] = 0
    return item_seq, target_seq


class OnlineLearner:
    """Candidate model being fine-tuned, the serving model it is compared against, the shared
    vocabulary, per-user histories and the replay buffer."""

    def __init__(
        self,
        serving: SequenceModel,
        vocab: Vocabulary,
        config: LearnerConfig | None = None,
        *,
        serving_version: str = "unknown",
    ) -> None:
        self.config = config or LearnerConfig()
        if self.config.repeats not in REPEATS:
            raise ValueError(f"repeats must be one of {', '.join(REPEATS)}")
        self.vocab = vocab
        self.serving = serving
        self.serving_version = serving_version
        self.serving.eval()
        self.candidate = copy.deepcopy(serving)
        self.candidate.train()
        #: The version replaced by the last promotion, scored alongside until the verdict.
        self.previous: SequenceModel | None = None
        self.previous_version: str | None = None
        self.previous_metrics = RollingMetrics(self.config.window)
        self.since_promotion = RollingMetrics(self.config.window)
        self.offline_n_items = int(serving.n_items)
        self.context_len = min(
            self.config.context_len or serving.config.max_len, serving.config.max_len
        )
        self.histories: OrderedDict[str, list[int]] = OrderedDict()
        #: repeats="first": every item index each kept user has had (a superset of the
        #: history), sorted int32 arrays: 4 bytes an item (a Python set takes ~60)
        self.seen: dict[str, np.ndarray] = {}
        self.buffer = ReplayBuffer(
            self.config.recent_size, self.config.reservoir_size, self.config.seed
        )
        self.serving_metrics = RollingMetrics(self.config.window)
        self.candidate_metrics = RollingMetrics(self.config.window)
        self.item_events: dict[int, int] = {}
        self.steps = 0
        self.examples_seen = 0
        self.untrained_since: float | None = None  # arrival time of the oldest untrained event
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self.optimizer = self._new_optimizer()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.candidate.parameters(), lr=self.config.lr)

    # -- stream side -----------------------------------------------------------------------
    def observe(
        self, events: Sequence[tuple[str, str]], arrival_times: Sequence[float] | None = None
    ) -> Observation:
        """Test-then-remember a batch of ``(user_id, item_id)`` in stream order."""
        max_len = self.context_len
        histories: list[list[int]] = []
        targets: list[int] = []
        provisional: dict[str, int] = {}  # new item -> the index the vocabulary will give it
        running: dict[str, list[int]] = {}  # histories as they were before each event
        first_only = self.config.repeats == "first"
        learnt: list[bool] = []  # False: a repeat, not learnt from (repeats="first")
        added: dict[str, set[int]] = {}  # repeats="first": items first had in this batch
        for user, item in events:
            history = running.get(user)
            if history is None:
                history = list(self.histories.get(user, []))
                running[user] = history
                added[user] = set()
            histories.append(history[-max_len:])
            index = self.vocab.get(item)
            if index is None:
                index = provisional.setdefault(item, self.vocab.size + len(provisional))
            targets.append(index)
            if first_only:
                repeat = index in added[user] or _holds(self.seen.get(user), index)
                learnt.append(not repeat)
                added[user].add(index)
            else:
                learnt.append(True)
            if learnt[-1]:
                history.append(index)
        # Test first: each model ranks with what it knew (indices past its table are unknown).
        serving_ranks = rank_targets(
            self.serving, histories, targets, exclude_seen=self.config.exclude_seen
        )
        candidate_ranks = rank_targets(
            self.candidate, histories, targets, exclude_seen=self.config.exclude_seen
        )
        self.serving_metrics.add(serving_ranks)
        self.candidate_metrics.add(candidate_ranks)
        if self.previous is not None:
            # Shadow the version that was replaced, on the same events, until the verdict.
            self.previous_metrics.add(
                rank_targets(
                    self.previous, histories, targets, exclude_seen=self.config.exclude_seen
                )
            )
            self.since_promotion.add(serving_ranks)
        new_items = list(provisional)
        if new_items:
            self._grow(new_items)
            assert all(self.vocab[item] == index for item, index in provisional.items())
        for (user, _), history, index, learn in zip(
            events, histories, targets, learnt, strict=True
        ):
            if not learn:
                continue
            self.item_events[index] = self.item_events.get(index, 0) + 1
            if history:
                self.buffer.add([*history, index])
            self._remember(user, index)
        self.examples_seen += sum(learnt)
        learnt_times = [t for t, learn in zip(arrival_times or [], learnt, strict=False) if learn]
        if learnt_times and self.untrained_since is None:
            self.untrained_since = min(learnt_times)  # freshness: from an event to be trained
        self._update_priors()
        return Observation(serving_ranks, candidate_ranks, new_items, list(arrival_times or []))

    def seed_histories(self, histories: dict[str, list[str]]) -> None:
        """Start users from known histories (item ids oldest first; unknown ids skipped).

        With repeats="first" each user's whole list counts as items had before, and the
        history is its first interactions, in order."""
        max_len = self.context_len
        for user, items in histories.items():
            encoded = self.vocab.encode(items)
            if self.config.repeats == "first":
                encoded = list(dict.fromkeys(encoded))  # first interactions, in order
                if encoded:
                    self.seen[user] = np.unique(np.asarray(encoded, dtype=np.int32))
            encoded = encoded[-max_len:]
            if encoded:
                self.histories[user] = encoded

    def carried_histories(self) -> dict[str, list[str]]:
        """Users' histories as item ids, for :meth:`seed_histories` of another learner (one
        that fine-tunes another version, with another vocabulary)."""
        return carried_histories(self.histories, self.seen, self.vocab)

    def _remember(self, user: str, index: int) -> None:
        history = self.histories.pop(user, [])
        history.append(index)
        del history[: -self.context_len]
        self.histories[user] = history  # most recently active last
        if self.config.repeats == "first":
            self.seen[user] = _with(self.seen.get(user), index)
        while len(self.histories) > self.config.max_users:
            dropped, _ = self.histories.popitem(last=False)
            self.seen.pop(dropped, None)

    def _grow(self, new_items: list[str]) -> None:
        """New vocabulary indices and embedding rows for items never seen before."""
        for item in dict.fromkeys(new_items):
            self.vocab.add(item)
        n_new = self.vocab.size - self.candidate.n_items
        if n_new <= 0:
            return
        old_params = dict(self.candidate.named_parameters())
        old_state = {
            name: self.optimizer.state.get(param, {}) for name, param in old_params.items()
        }
        self.candidate.grow_items(n_new)
        self.optimizer = self._new_optimizer()
        for name, param in self.candidate.named_parameters():
            state = old_state.get(name)
            if not state:
                continue
            moved = {}
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape != param.shape and value.dim() > 0:
                    padded = value.new_zeros(param.shape)
                    padded[: value.shape[0]] = value
                    moved[key] = padded
                else:
                    moved[key] = value
            self.optimizer.state[param] = moved
        log.info("vocabulary grew by %d items to %d", n_new, self.vocab.n_items)

    def _update_priors(self) -> None:
        """Item priors used for masking: new items count their events; old ones keep theirs."""
        prior = self.candidate.item_popularity
        for index, count in self.item_events.items():
            if index >= self.offline_n_items and index < prior.shape[0]:
                prior[index] = float(count)

    # -- learning --------------------------------------------------------------------------
    def train(self, steps: int | None = None) -> float | None:
        """A few optimisation steps on replay batches; returns the mean loss (None: no data)."""
        if len(self.buffer) == 0:
            return None
        self.candidate.train()
        losses = []
        for _ in range(steps or self.config.steps_per_round):
            batch = self.buffer.sample(self.config.batch_size, self.config.recent_share)
            item_seq, target_seq = training_batch(
                batch, self.context_len, self.config.train_positions
            )
            loss = sequence_loss(
                self.candidate,
                item_seq.to(self.candidate.device),
                target_seq.to(self.candidate.device),
                generator=None,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.candidate.parameters(), 1.0)
            self.optimizer.step()
            with torch.no_grad():
                self.candidate.item_embedding.weight[0].zero_()
            losses.append(float(loss.item()))
            self.steps += 1
        return float(np.mean(losses))

    def trained_through(self) -> float | None:
        """Arrival time of the oldest event not yet in a training step (then reset)."""
        oldest, self.untrained_since = self.untrained_since, None
        return oldest

    # -- versions --------------------------------------------------------------------------
    def export(self) -> SequenceModel:
        """A frozen copy of the candidate for the registry."""
        exported = copy.deepcopy(self.candidate)
        exported.eval()
        return exported

    def adopt_serving(self, model: SequenceModel, version: str, *, shadow: bool = False) -> None:
        """The registry now serves ``model``. With ``shadow`` (after a promotion) the replaced
        version keeps being scored on the same events until :meth:`end_shadow`."""
        if shadow:
            self.shadow(self.serving, self.serving_version)
        else:
            self.end_shadow()
        self.serving = model
        self.serving.eval()
        self.serving_version = version
        self.serving_metrics = RollingMetrics(self.config.window)

    def shadow(self, model: SequenceModel, version: str) -> None:
        """Score ``model`` (the version the serving one replaced) alongside on every event
        from now, until :meth:`end_shadow`."""
        self.previous, self.previous_version = model, version
        self.previous.eval()
        self.previous_metrics = RollingMetrics(self.config.window)
        self.since_promotion = RollingMetrics(self.config.window)

    def end_shadow(self) -> None:
        self.previous, self.previous_version = None, None

    def state(self) -> dict[str, Any]:
        return {
            "histories": list(self.histories.items()),
            "seen": [(user, items.tolist()) for user, items in self.seen.items()],
            "buffer": self.buffer.state(),
            "item_events": list(self.item_events.items()),
            "steps": self.steps,
            "examples_seen": self.examples_seen,
            "offline_n_items": self.offline_n_items,
            "serving_version": self.serving_version,
            # a promotion not judged yet: its predecessor is shadowed again after a restart
            "previous_version": self.previous_version,
            "saved_at": time.time(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.histories = OrderedDict((user, list(items)) for user, items in state["histories"])
        self.seen = seen_of(state) if self.config.repeats == "first" else {}
        self.buffer.load_state(state["buffer"])
        self.item_events = {int(index): int(count) for index, count in state["item_events"]}
        self.steps = int(state["steps"])
        self.examples_seen = int(state["examples_seen"])
        self.offline_n_items = int(state["offline_n_items"])


def _holds(items: np.ndarray | None, index: int) -> bool:
    """Whether the sorted array ``items`` holds ``index``."""
    if items is None:
        return False
    at = int(np.searchsorted(items, index))
    return at < len(items) and int(items[at]) == index


def _with(items: np.ndarray | None, index: int) -> np.ndarray:
    """The sorted array ``items`` with ``index`` in it."""
    if items is None:
        return np.array([index], dtype=np.int32)
    at = int(np.searchsorted(items, index))
    if at < len(items) and int(items[at]) == index:
        return items
    return np.insert(items, at, index)


def seen_of(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-user item sets of a saved learner state (a state saved before they were kept,
    or under repeats="keep", gives each user's history), as sorted int32 arrays."""
    seen = {user: list(items) for user, items in state.get("seen", [])}
    for user, items in state["histories"]:
        seen.setdefault(user, []).extend(items)
    return {user: np.unique(np.asarray(items, dtype=np.int32)) for user, items in seen.items()}


def carried_histories(
    histories: dict[str, list[int]], seen: dict[str, np.ndarray], vocab: Vocabulary
) -> dict[str, list[str]]:
    """Item ids per user, oldest first as far as known: the items had before the history
    (in no particular order), then the history, so that seeding with repeats="first" rebuilds
    both the history and the items had."""
    carried = {}
    for user, history in histories.items():
        had = seen.get(user)
        earlier = [] if had is None else np.setdiff1d(had, history).tolist()
        carried[user] = vocab.decode([*earlier, *history])
    return carried
