"""Build the configured ranker (composition helper for the worker and the API).

* ``popularity``: recent popularity from Redis, context-aware, excluding seen items.
* ``model``: the registry's promoted sequence model (hot-reloaded on promotion/rollback), with
  the popularity ranker for histories the model knows nothing about.
"""

from __future__ import annotations

from streamrec.config import Settings
from streamrec.errors import ConfigError
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.ranker import Ranker

__all__ = ["RANKERS", "build_ranker"]

RANKERS = ("popularity", "model")


def build_ranker(settings: Settings) -> Ranker:
    name = settings.stream.ranker
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
            settings.registry_path, fallback=PopularityRanker(), check_interval_s=1.0
        )
    raise ConfigError(f"unknown ranker {name!r}; choose one of: {', '.join(RANKERS)}")
