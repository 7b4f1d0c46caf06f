"""Datasets: loaders for real interaction logs, sessionisation, replay into Kafka."""

from streamrec.data.loaders import (
    COLUMNS,
    LogFormat,
    load_dataset,
    load_interactions,
    load_movielens_1m,
)

__all__ = ["COLUMNS", "LogFormat", "load_dataset", "load_interactions", "load_movielens_1m"]
