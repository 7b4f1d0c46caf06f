"""Build the configured ranker (composition helper for the worker and the API)."""

from __future__ import annotations

from streamrec.config import Settings
from streamrec.errors import ConfigError
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.ranker import Ranker

__all__ = ["build_ranker"]


def build_ranker(settings: Settings) -> Ranker:
    name = settings.stream.ranker
    if name == "popularity":
        return PopularityRanker()
    raise ConfigError(f"unknown ranker {name!r}; choose one of: popularity")
