"""A :class:`~streamrec.serving.ranker.Ranker` backed by a SASRec/GRU4Rec model.

* Histories are encoded with the model's vocabulary; unknown item ids are skipped (logged at
  debug level), never fatal. The newest ``max_len`` known items are used. For a model trained
  with ``repeats = "first"`` (its meta), each item counts once, at its first occurrence.
* Histories with no known item go to the ``fallback`` ranker when one is given, else are ranked
  by the model's training-time item popularity.
* Scoring is batched (left-padded to the longest history in the batch) under
  ``torch.inference_mode``; top-k uses ``torch.topk`` after masking ``History.excluded()``.
* With a :class:`~streamrec.models.registry.ModelHandle` as source, each :meth:`rank` call takes
  one snapshot of the promoted model, so a hot reload never mixes versions inside a batch.
* ``explain=True`` fills :attr:`Ranked.explanations`: per recommended item, the history items
  that contributed most (attention-weighted similarity for SASRec, similarity for GRU4Rec).
* **New-item slots** (item cold start). A model fine-tuned from the stream knows items that
  appeared after its offline training, but with a handful of events their scores rarely reach a
  top-10, so they would collect no feedback and stay unknown. With ``new_item_slots = n`` the
  last ``n`` positions of a list go to new items that are ready (``new_item_min_events``) and
  still young (fewer than ``new_item_max_events`` events), unless such an item already made the
  list on its own: the best-scored one for this user (``new_item_temperature = 0``), or one
  drawn with probability ``softmax(z / temperature)`` of the user's standardised scores over
  the young items, so every young item gets some exposure while the better-matching ones get
  more. The exploration is personalised (the model's own ranking among new items) and ends by
  itself once an item has the data to compete.
  Only versions written by the fine-tuner carry new items (``offline_n_items`` in their meta).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from streamrec.models.base import mask_scores
from streamrec.models.batching import left_pad, seen_matrix
from streamrec.models.checkpoint import load_checkpoint
from streamrec.models.registry import LoadedModel, ModelHandle
from streamrec.serving.ranker import History, RankContext, Ranked, Ranker

__all__ = ["SequenceRanker"]

logger = logging.getLogger(__name__)


class SequenceRanker:
    """Ranks the catalogue for each history with a next-item model."""

    def __init__(
        self,
        source: LoadedModel | ModelHandle,
        *,
        fallback: Ranker | None = None,
        explain: bool = False,
        explain_top_n: int = 3,
        batch_size: int = 256,
        new_item_slots: int = 0,
        new_item_max_events: int = 100,
        new_item_temperature: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if new_item_slots < 0 or new_item_max_events < 1 or new_item_temperature < 0:
            raise ValueError(
                "need new_item_slots >= 0, new_item_max_events >= 1, new_item_temperature >= 0"
            )
        self.new_item_temperature = new_item_temperature
        self._rng = torch.Generator()
        if seed is not None:
            self._rng.manual_seed(seed)
        else:
            self._rng.seed()
        self._rng_lock = threading.Lock()
        self._source = source
        self.new_item_slots = new_item_slots
        self.new_item_max_events = new_item_max_events
        self._young_cache: dict[str, torch.Tensor | None] = {}
        self.fallback = fallback
        self.explain = explain
        self.explain_top_n = explain_top_n
        self.batch_size = batch_size
        self._blocked_cache: dict[str, torch.Tensor | None] = {}

    @classmethod
    def from_registry(
        cls,
        root: str | Path,
        *,
        device: torch.device | str = "cpu",
        check_interval_s: float = 1.0,
        watch: bool = False,
        **kwargs: object,
    ) -> SequenceRanker:
        """Serve the promoted version of the registry at ``root``, hot-reloading promotions
        (checked on use every ``check_interval_s``, or by a background thread if ``watch``)."""
        handle = ModelHandle(root, device=device, check_interval_s=check_interval_s)
        if watch:
            handle.start()
        return cls(handle, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: torch.device | str = "cpu", **kwargs: object
    ) -> SequenceRanker:
        """Serve a checkpoint directory (version = its directory name)."""
        checkpoint = load_checkpoint(path, device=device)
        loaded = LoadedModel(checkpoint.model, checkpoint.vocab, checkpoint.meta, Path(path).name)
        return cls(loaded, **kwargs)  # type: ignore[arg-type]

    def _snapshot(self) -> LoadedModel:
        return self._source.get() if isinstance(self._source, ModelHandle) else self._source

    @property
    def name(self) -> str:
        return str(self._snapshot().model.config.kind)

    @property
    def version(self) -> str:
        return self._snapshot().version

    def rank(
        self,
        histories: Sequence[History],
        contexts: Sequence[RankContext],
        k: int,
        *,
        explain: bool | None = None,
    ) -> list[Ranked]:
        """Top-``k`` per history (contexts are accepted for the interface and not used)."""
        snapshot = self._snapshot()
        want_explanations = self.explain if explain is None else explain
        max_len = snapshot.model.config.max_len
        encoded = [snapshot.vocab.encode(history.items) for history in histories]
        if snapshot.meta.get("repeats") == "first":
            # a model trained on first interactions only (`train --repeats first`) reads the
            # history the same way: each item once, where the user first met it
            encoded = [list(dict.fromkeys(items)) for items in encoded]
        encoded = [items[-max_len:] for items in encoded]
        results: list[Ranked | None] = [None] * len(histories)
        known_rows = [row for row, items in enumerate(encoded) if items]
        empty_rows = [row for row, items in enumerate(encoded) if not items]
        for start in range(0, len(known_rows), self.batch_size):
            rows = known_rows[start : start + self.batch_size]
            ranked = self._rank_model(
                snapshot,
                [encoded[r] for r in rows],
                [histories[r] for r in rows],
                k,
                want_explanations,
            )
            for row, result in zip(rows, ranked, strict=True):
                results[row] = result
        if empty_rows:
            fallback_histories = [histories[r] for r in empty_rows]
            if self.fallback is not None:
                fallback_contexts = [
                    contexts[r] if r < len(contexts) else RankContext() for r in empty_rows
                ]
                ranked = self.fallback.rank(fallback_histories, fallback_contexts, k)
                answered_by = self.fallback.version
            else:
                ranked = self._rank_popular(snapshot, fallback_histories, k)
                answered_by = f"{snapshot.version}:popular"  # the model's training counts
            for row, result in zip(empty_rows, ranked, strict=True):
                results[row] = replace(result, answered_by=result.answered_by or answered_by)
        return [result if result is not None else Ranked([], []) for result in results]

    def _excluded(self, snapshot: LoadedModel, histories: Sequence[History]) -> torch.Tensor:
        return seen_matrix([snapshot.vocab.encode(h.excluded()) for h in histories])

    def _not_ready(self, snapshot: LoadedModel) -> torch.Tensor | None:
        """Indices of items added by online learning that have too few events to be shown.

        A version written by the fine-tuner records ``offline_n_items`` and
        ``new_item_min_events`` in its meta; its ``item_popularity`` counts new items' events.
        """
        cached = self._blocked_cache.get(snapshot.version)
        if cached is not None or snapshot.version in self._blocked_cache:
            return cached
        offline = snapshot.meta.get("offline_n_items")
        needed = snapshot.meta.get("new_item_min_events")
        blocked = None
        if offline is not None and needed is not None:
            model = snapshot.model
            candidates = torch.arange(int(offline), model.n_items)
            counts = model.item_popularity.detach().cpu()[candidates]
            blocked = candidates[counts < float(needed)]
        self._blocked_cache = {snapshot.version: blocked}
        return blocked

    def _young(self, snapshot: LoadedModel) -> torch.Tensor | None:
        """Indices of new items that are ready to be shown and still young (see the module
        docstring); None when the version has no new items."""
        if snapshot.version in self._young_cache:
            return self._young_cache[snapshot.version]
        offline = snapshot.meta.get("offline_n_items")
        needed = snapshot.meta.get("new_item_min_events")
        young = None
        if offline is not None and needed is not None and int(offline) < snapshot.model.n_items:
            candidates = torch.arange(int(offline), snapshot.model.n_items)
            counts = snapshot.model.item_popularity.detach().cpu()[candidates]
            keep = (counts >= float(needed)) & (counts < float(self.new_item_max_events))
            young = candidates[keep] if bool(keep.any()) else None
        self._young_cache = {snapshot.version: young}
        return young

    def _with_new_items(
        self,
        snapshot: LoadedModel,
        item_scores: torch.Tensor,
        top_scores: torch.Tensor,
        top_items: torch.Tensor,
    ) -> None:
        """Give the last ``new_item_slots`` positions to each row's best young new items that
        are not on the list yet (in place). ``item_scores`` is already masked."""
        young = self._young(snapshot)
        width = top_items.shape[1]
        if young is None or width == 0:
            return
        young = young.to(item_scores.device)
        slots = min(self.new_item_slots, width, young.numel())
        young_scores = item_scores[:, young]  # [batch, n_young], -inf = seen/blocked
        if self.new_item_temperature > 0:
            best = self._sample(young_scores, slots)
            best_scores = young_scores.gather(1, best)
        else:
            best_scores, best = torch.topk(young_scores, slots, dim=-1)  # [batch, slots]
        best_items = young[best]
        for slot in range(slots):
            position = width - 1 - slot
            candidate = best_items[:, slot]
            fits = torch.isfinite(best_scores[:, slot]) & ~(top_items == candidate[:, None]).any(1)
            top_items[fits, position] = candidate[fits]
            top_scores[fits, position] = best_scores[fits, slot]

    def _sample(self, young_scores: torch.Tensor, slots: int) -> torch.Tensor:
        """``slots`` young items per row, drawn without replacement with probabilities
        ``softmax(z / temperature)``, ``z`` the row's scores standardised over its eligible
        young items (scale-free, so one temperature fits any model). Rows without an eligible
        item return indices whose score is -inf (ignored by the caller)."""
        finite = torch.isfinite(young_scores)
        counts = finite.sum(dim=1, keepdim=True).clamp(min=1)
        filled = torch.where(finite, young_scores, torch.zeros_like(young_scores))
        mean = filled.sum(dim=1, keepdim=True) / counts
        var = (torch.where(finite, young_scores - mean, torch.zeros_like(young_scores)) ** 2).sum(
            dim=1, keepdim=True
        ) / counts
        z = (young_scores - mean) / var.sqrt().clamp(min=1e-6)
        logits = torch.where(finite, z / self.new_item_temperature, torch.full_like(z, -1e9))
        probs = torch.softmax(logits, dim=1)
        with self._rng_lock:
            return torch.multinomial(probs, slots, replacement=False, generator=self._rng)

    def _rank_model(
        self,
        snapshot: LoadedModel,
        encoded: list[list[int]],
        histories: Sequence[History],
        k: int,
        want_explanations: bool,
    ) -> list[Ranked]:
        model = snapshot.model
        item_seq = left_pad(encoded, model.config.max_len).to(model.device)  # [batch, L]
        with torch.inference_mode():
            item_scores = model.scores(model.last_hidden(item_seq)).float()  # [batch, n_items]
            item_scores = mask_scores(item_scores, self._excluded(snapshot, histories))
            blocked = self._not_ready(snapshot)
            if blocked is not None and blocked.numel():
                item_scores[:, blocked.to(item_scores.device)] = float("-inf")
            top_scores, top_items = torch.topk(item_scores, min(k, model.n_items - 1), dim=-1)
            if self.new_item_slots:
                self._with_new_items(snapshot, item_scores, top_scores, top_items)
            positions = (
                model.explain(item_seq, top_items, self.explain_top_n)
                if want_explanations
                else None
            )  # [batch, k, top_n]
        return [
            self._to_ranked(
                snapshot,
                top_items[row],
                top_scores[row],
                item_seq[row] if positions is not None else None,
                positions[row] if positions is not None else None,
            )
            for row in range(len(encoded))
        ]

    def _rank_popular(
        self, snapshot: LoadedModel, histories: Sequence[History], k: int
    ) -> list[Ranked]:
        model = snapshot.model
        popularity = model.item_popularity.float().cpu()  # [n_items]
        item_scores = popularity[None, :].expand(len(histories), -1)  # [batch, n_items]
        item_scores = mask_scores(item_scores, self._excluded(snapshot, histories))
        blocked = self._not_ready(snapshot)
        if blocked is not None and blocked.numel():
            item_scores[:, blocked] = float("-inf")
        top_scores, top_items = torch.topk(item_scores, min(k, model.n_items - 1), dim=-1)
        return [
            self._to_ranked(snapshot, top_items[row], top_scores[row], None, None)
            for row in range(len(histories))
        ]

    @staticmethod
    def _to_ranked(
        snapshot: LoadedModel,
        items: torch.Tensor,
        scores: torch.Tensor,
        item_seq: torch.Tensor | None,
        positions: torch.Tensor | None,
    ) -> Ranked:
        keep = torch.isfinite(scores)  # -inf = nothing left to rank
        indices = items[keep].tolist()
        explanations = None
        if item_seq is not None and positions is not None:
            history = item_seq.tolist()
            explanations = []
            for slot in positions[keep].tolist():
                seen: dict[str, None] = {}
                for position in slot:
                    if position >= 0 and history[position]:
                        seen.setdefault(snapshot.vocab.id_of(history[position]), None)
                explanations.append(list(seen))
        return Ranked(
            item_ids=snapshot.vocab.decode(indices),
            scores=[float(score) for score in scores[keep].tolist()],
            explanations=explanations,
        )
