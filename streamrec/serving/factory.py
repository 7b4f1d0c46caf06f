"""Build the configured ranker (composition helper for the worker and the API).

* ``popularity``: recent popularity from Redis, context-aware, excluding seen items.
* ``model``: the registry's promoted sequence model (hot-reloaded on promotion/rollback), with
  the popularity ranker for histories the model knows nothing about.
* ``policy``: the exported RL policy (``STREAMREC_STREAM__POLICY_PATH``) re-ranking the top
  candidates of ``STREAMREC_STREAM__POLICY_CANDIDATES`` (``model`` or ``popularity``), exploring
  with the configured temperature / epsilon and logging propensities.
"""

from __future__ import annotations

from streamrec.config import Settings
from streamrec.errors import ConfigError
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.ranker import Ranker

__all__ = ["RANKERS", "build_ranker"]

RANKERS = ("popularity", "model", "policy")


def build_ranker(settings: Settings, name: str | None = None) -> Ranker:
    stream = settings.stream
    name = name or stream.ranker
    if name == "policy":
        from streamrec.serving.policy_ranker import PolicyRanker

        if stream.policy_path is None or not (stream.policy_path / "policy.json").is_file():
            raise ConfigError(
                f"ranker 'policy' needs STREAMREC_STREAM__POLICY_PATH pointing at an exported "
                f"policy (policy.json), not {stream.policy_path}; export one with "
                "`streamrec agent export`"
            )
        if stream.policy_candidates == "policy":
            raise ConfigError("policy_candidates must be 'model' or 'popularity'")
        return PolicyRanker.from_export(
            stream.policy_path,
            build_ranker(settings, stream.policy_candidates),
            temperature=stream.policy_temperature,
            epsilon=stream.policy_epsilon,
            diversity=stream.policy_diversity,
            log_decisions=stream.policy_log_decisions,
        )
    if name == "popularity":
        return PopularityRanker()
    if name == "model":
        from streamrec.models.registry import ModelRegistry
        from streamrec.serving.sequence_ranker import SequenceRanker

        registry = ModelRegistry(settings.registry_path)
        if registry.current() is None:
            raise ConfigError(
                f"ranker 'model' needs a promoted model in {settings.registry_path}; "
                "train one with `streamrec train --model sasrec --promote`"
            )
        return SequenceRanker.from_registry(
            settings.registry_path,
            fallback=PopularityRanker(),
            check_interval_s=1.0,
            new_item_slots=settings.stream.new_item_slots,
            new_item_max_events=settings.stream.new_item_max_events,
            new_item_temperature=settings.stream.new_item_temperature,
        )
    raise ConfigError(f"unknown ranker {name!r}; choose one of: {', '.join(RANKERS)}")
