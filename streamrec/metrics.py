"""Every Prometheus metric streamrec exports, defined once.

Names follow Prometheus conventions: ``streamrec_`` prefix, base units (seconds, bytes),
``_total`` for counters. Each process serves its own ``/metrics`` (:func:`serve`); when
``PROMETHEUS_MULTIPROC_DIR`` is set, forked workers aggregate through prometheus-client's
multiprocess collector. The README's metric table is checked against :data:`ALL` by a test.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = [
    "ALL",
    "DEAD_LETTERS",
    "EVENTS_CONSUMED",
    "EVENTS_INVALID",
    "serve",
]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

EVENTS_CONSUMED = Counter(
    "streamrec_events_consumed_total",
    "Valid events consumed, by event type and consumer.",
    ["type", "consumer"],
)
EVENTS_INVALID = Counter(
    "streamrec_events_invalid_total",
    "Records rejected by validation, by reason and consumer.",
    ["reason", "consumer"],
)
DEAD_LETTERS = Counter(
    "streamrec_dead_letters_total",
    "Records written to the dead-letter topic, by reason.",
    ["reason"],
)
EVENTS_DUPLICATE = Counter(
    "streamrec_events_duplicate_total",
    "Redelivered events (event_id already applied) that changed nothing.",
)
PROCESSING_SECONDS = Histogram(
    "streamrec_batch_processing_seconds",
    "Wall time to process one micro-batch (state update + ranking + emit).",
    buckets=_LATENCY_BUCKETS,
)
EVENT_TO_REC_SECONDS = Histogram(
    "streamrec_event_to_recommendation_seconds",
    "From the event's Kafka append time to its recommendation being produced.",
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "streamrec_batch_size_events",
    "Events per micro-batch.",
    buckets=_BATCH_BUCKETS,
)
REDIS_SECONDS = Histogram(
    "streamrec_redis_seconds",
    "Latency of one Redis round trip, by operation.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "streamrec_consumer_lag_records",
    "Records between the consumer's position and the partition end.",
    ["topic", "partition", "consumer"],
    multiprocess_mode="max",
)
RECOMMENDATIONS = Counter(
    "streamrec_recommendations_total",
    "Recommendation lists produced, by path (stream, http) and policy.",
    ["path", "policy"],
)
REWARDS = Counter(
    "streamrec_rewards_total",
    "Attributed reward events, by event type and policy.",
    ["type", "policy"],
)
REWARD_VALUE = Counter(
    "streamrec_reward_value_total",
    "Sum of attributed reward values, by policy.",
    ["policy"],
)
IMPRESSIONS = Counter(
    "streamrec_impressions_total",
    "Items shown in recommendation lists, by policy (denominator of CTR).",
    ["policy"],
)
MODEL_INFO = Info("streamrec_model", "Model version currently serving.")
INFERENCE_SECONDS = Histogram(
    "streamrec_inference_seconds",
    "Latency of one batched ranker call, by ranker.",
    ["ranker"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "streamrec_http_requests_total",
    "HTTP API requests, by route and status code.",
    ["route", "status"],
)
HTTP_SECONDS = Histogram(
    "streamrec_http_request_seconds",
    "HTTP API latency, by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)

FINETUNE_LOSS = Gauge(
    "streamrec_finetune_loss",
    "Mean training loss of the fine-tuner's last round.",
    multiprocess_mode="max",
)
ONLINE_NDCG = Gauge(
    "streamrec_online_ndcg_at_10",
    "Rolling prequential NDCG@10, by model (serving, candidate).",
    ["model"],
    multiprocess_mode="max",
)
ONLINE_HR = Gauge(
    "streamrec_online_hr_at_10",
    "Rolling prequential HR@10, by model (serving, candidate).",
    ["model"],
    multiprocess_mode="max",
)
MODEL_PROMOTIONS = Counter(
    "streamrec_model_promotions_total",
    "Fine-tuned versions promoted by the guard.",
)
MODEL_ROLLBACKS = Counter(
    "streamrec_model_rollbacks_total",
    "Automatic rollbacks to the previous version.",
)

#: Every metric object above (the README table and the dashboards test walk this).
ALL = [
    value
    for name, value in list(globals().items())
    if name.isupper() and hasattr(value, "_name") and not name.startswith("_")
]


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0: do not serve)."""
    if port <= 0:
        return
    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
    if registry is None:
        start_http_server(port, addr=addr)
    else:
        start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr, port)
