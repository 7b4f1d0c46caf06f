"""Every Prometheus metric streamrec exports, defined once.

Names follow Prometheus conventions: ``streamrec_`` prefix, base units (seconds, bytes),
``_total`` for counters. Each process serves its own ``/metrics`` on
``metrics_port + PROCESS_PORT_OFFSETS[process]`` (:func:`serve`).

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` names an existing, empty directory
*before* this module is imported, every process of a group (e.g. forked API workers) writes its
values there and :func:`serve` exposes the merged view: counters and histograms are summed,
each gauge merges by the ``multiprocess_mode`` it declares (never ``all``). The
``live*`` modes forget a process once its supervisor calls
``prometheus_client.multiprocess.mark_process_dead(pid)``. prometheus-client's ``Info`` is not
collected in that mode, so the model version is a gauge with an ``info()`` method
(:class:`InfoGauge`), exposed as the same ``streamrec_model_info`` series.

The table in ``docs/metrics.md`` is checked against :data:`ALL` by
``tests/unit/test_metrics_doc.py``; the dashboards and rules in ``dashboards/`` use only these.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics import MetricWrapperBase

from streamrec.errors import PortInUseError

__all__ = [
    "AGENT_EPISODE_RETURN_MEAN",
    "AGENT_POLICY_LOSS",
    "AGENT_TRAIN_ITERATIONS",
    "ALL",
    "BATCH_SIZE",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EVENTS_CONSUMED",
    "EVENTS_DUPLICATE",
    "EVENTS_INVALID",
    "EVENT_TO_REC_SECONDS",
    "FINETUNE_LOSS",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "IMPRESSIONS",
    "INFERENCE_SECONDS",
    "MODEL_INFO",
    "MODEL_PROMOTIONS",
    "MODEL_ROLLBACKS",
    "ONLINE_HR",
    "ONLINE_NDCG",
    "POLICY_EXPLORATION_RATE",
    "POLICY_REWARD_MEAN",
    "PROCESSING_SECONDS",
    "PROCESS_PORT_OFFSETS",
    "RECOMMENDATIONS",
    "REDIS_SECONDS",
    "REWARDS",
    "REWARD_VALUE",
    "InfoGauge",
    "exposed_name",
    "serve",
]

log = logging.getLogger(__name__)

#: Process name -> offset from ``settings.metrics_port`` of that process's ``/metrics``.
PROCESS_PORT_OFFSETS = {"worker": 0, "api": 1, "finetune": 2, "agent": 3, "worker-2": 4}

_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Loopback Redis round trips and small ranker calls take 0.1-1 ms; the slow end covers a
# broker or Redis stall (the p99 alert budgets sit at 0.1-0.25 s, between buckets' edges).
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
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
    # After a rebalance the new owner of a partition writes last: the most recent value wins.
    multiprocess_mode="livemostrecent",
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


class InfoGauge(Gauge):
    """A gauge used as an info metric: ``name{labels...} 1`` for the current label set.

    Exposed exactly like prometheus-client's ``Info`` (which the multiprocess collector drops).
    ``info()`` replaces the previous label set; in multiprocess mode the previous set stays
    in the shared files at 0, so select the current one with ``> 0``.
    """

    def info(self, values: Mapping[str, str]) -> None:
        unknown = set(values) - set(self._labelnames)
        if unknown:
            raise ValueError(f"{self._name} has labels {self._labelnames}, not {sorted(unknown)}")
        current = tuple(str(values.get(name, "")) for name in self._labelnames)
        previous: tuple[str, ...] | None = getattr(self, "_current", None)
        if previous is not None and previous != current:
            self.labels(*previous).set(0)
            if not _MULTIPROCESS:
                self.remove(*previous)
        self.labels(*current).set(1)
        self._current = current


MODEL_INFO = InfoGauge(
    "streamrec_model_info",
    "Model serving in this process (value 1), by ranker and version.",
    ["ranker", "version"],
    multiprocess_mode="livemax",
)
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

POLICY_EXPLORATION_RATE = Gauge(
    "streamrec_policy_exploration_rate",
    "Share of recommendations where the policy explored (0-1), by policy.",
    ["policy"],
    multiprocess_mode="livemostrecent",
)
POLICY_REWARD_MEAN = Gauge(
    "streamrec_policy_reward_mean",
    "Mean reward per recommendation over the policy's recent window, by policy.",
    ["policy"],
    multiprocess_mode="livemostrecent",
)

AGENT_TRAIN_ITERATIONS = Counter(
    "streamrec_agent_train_iterations",
    "Training iterations done by `streamrec agent train`, by algorithm.",
    ["algorithm"],
)
AGENT_EPISODE_RETURN_MEAN = Gauge(
    "streamrec_agent_episode_return_mean",
    "Mean simulator episode return of the last online training iteration (PPO), by algorithm.",
    ["algorithm"],
    multiprocess_mode="livemostrecent",
)
AGENT_POLICY_LOSS = Gauge(
    "streamrec_agent_policy_loss",
    "Policy loss of the last training iteration, by algorithm.",
    ["algorithm"],
    multiprocess_mode="livemostrecent",
)

#: Every metric object above (docs/metrics.md, the dashboards and their tests walk this).
ALL: list[MetricWrapperBase] = [
    value
    for name, value in list(globals().items())
    if name.isupper() and isinstance(value, MetricWrapperBase) and not name.startswith("_")
]


def exposed_name(metric: MetricWrapperBase) -> str:
    """The metric family name as scraped (counters gain ``_total``, infos ``_info``)."""
    suffix = {"counter": "_total", "info": "_info"}.get(str(metric._type), "")
    return f"{metric._name}{suffix}"


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0: do not serve).

    In multiprocess mode the endpoint shows the merged values of every process writing to
    ``PROMETHEUS_MULTIPROC_DIR``, so one server per group is enough: when another process of
    the group already holds the port, this one logs that and does not serve.
    """
    if port <= 0:
        return
    try:
        if _MULTIPROCESS:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry)
            start_http_server(port, addr=addr, registry=registry)
        else:
            start_http_server(port, addr=addr)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        if _MULTIPROCESS:
            log.info("metrics port %d is served by another process of this group", port)
            return
        raise PortInUseError(
            f"metrics port {addr}:{port} is in use; give this process another "
            "STREAMREC_METRICS_PORT (or 0 to disable /metrics)"
        ) from exc
    log.info("metrics on http://%s:%d/metrics", addr, port)
