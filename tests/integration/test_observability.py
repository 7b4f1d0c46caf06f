"""Metrics, dashboards and rules proven against a real Prometheus scraping real processes.

One module-scoped run: a real `streamrec worker`, a real `streamrec api` and a real
`streamrec finetune` (over a small promoted model; subprocesses, each serving /metrics on
``metrics_port + PROCESS_PORT_OFFSETS[name]``), Prometheus from the OS
package started by the stack's own :class:`PrometheusComponent` with the generated scrape config
and ``dashboards/prometheus/rules.yml`` (1 s scrape and evaluation interval), and traffic: valid
events, malformed records, a redelivered duplicate, clicks on recommended items (rewards) and
HTTP requests (200 and 422). Then every PromQL expression of every dashboard panel and rule is
evaluated by that Prometheus and must return at least one finite sample, except the expressions
over metrics no process emits yet (:data:`DEFERRED`, listed explicitly), which must still be
accepted by Prometheus and are asserted as soon as their metrics carry a non-zero value.

Without the prometheus/promtool binaries the tests skip, under ``CI=true`` they fail.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from streamrec.client import EventProducer, create_topics
from streamrec.config import Settings, to_env
from streamrec.events import Recommendation
from streamrec.metrics import PROCESS_PORT_OFFSETS
from streamrec.stack import free_port
from streamrec.stack.prometheus import PrometheusComponent
from tests.helpers import (
    drain,
    metric_value,
    metrics_port_block,
    stop_process,
    streamrec_process,
    wait_for,
    worker_process,
)
from tests.malformed import MALFORMED
from tests.unit.test_dashboards import (
    DOCKER_PROMETHEUS,
    GRAFANA_VARIABLES,
    RULES,
    Query,
    queries,
)
from tests.unit.test_dashboards import signal as alert_signal

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: Dashboard panels and rules whose data comes from a process that does not run here (see
#: tests/unit/test_dashboards.py DEFERRED_METRICS). Everything else must return data. The RL
#: trainer (Ray, minutes of CPU) is not started beside the stack; its /metrics are proven by
#: tests/agents/test_agent_metrics.py against a real `streamrec agent train` process.
DEFERRED: set[tuple[str, str]] = {
    ("rl.json", "Agent training iterations per minute [{{algorithm}}]"),
    ("rl.json", "Agent episode return and policy loss [return {{algorithm}}]"),
    ("rl.json", "Agent episode return and policy loss [loss {{algorithm}}]"),
}

#: Values for Grafana's built-in variables when a panel query is sent to Prometheus directly.
VARIABLE_VALUES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}

#: Traffic comes in rounds, each scraped before the next, so every series changes between
#: scrapes (rates, ratios and quantiles over a window need an increase inside it).
ROUNDS = 3
N_SESSIONS = 8
VIEWS_PER_SESSION = 3  # per round
N_CLICKS = 4  # per round: clicks on the session's latest recommendation -> rewards
N_DUPLICATES = 2  # per round: views sent twice
MALFORMED_LATER = MALFORMED[:4]  # every malformed record in round 0, these again later
N_HTTP = N_SESSIONS + 1  # per round: 200s on /v1/recommendations (plus one 422)


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        message = f"{name} not found: install the OS package `prometheus` (scripts/setup.sh does)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _port_outside(taken: set[int]) -> int:
    """A free port that is not one of ``taken`` (free_port() may hand out a port of the metrics
    block, since nothing listens there yet)."""
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


@dataclass
class Observed:
    settings: Settings
    prometheus: str  # http://host:port
    worker_metrics: str  # /metrics text of the worker after the traffic
    api_metrics: str
    config: Path  # generated Prometheus config

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus rejected {expr!r}: {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return result if isinstance(result, list) else [{"value": result}]

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.prometheus}/api/v1/{path}", timeout=10) as response:
            return json.load(response)["data"]


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@contextmanager
def _api_process(settings: Settings, port: int, log_path: Path) -> Iterator[str]:
    """A real `streamrec api` process; yields its base URL once /healthz answers."""
    env = {**os.environ, **to_env(settings)}
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "api", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"api exited: {log_path.read_text()[-2000:]}"
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=60)
        yield base
    finally:
        stop_process(proc)


def _round(settings: Settings, api: str, worker_port: int, round_: int) -> None:
    """One round: views, malformed records, duplicates, clicks on recommendations, HTTP."""
    start = time.time() - 600 + 120 * round_
    views = [
        {
            "event_id": f"obs-{round_}-{session}-{step}",
            "user_id": f"user{session}",
            "session_id": f"sess{session}",
            "item_id": f"item{(session * 7 + step * 3 + round_ * 11) % 40}",
            "type": "view",
            "timestamp": start + step * 10 + session,
            "context": {"device": "mobile" if session % 2 else "desktop"},
        }
        for step in range(VIEWS_PER_SESSION)  # in time order, as a live stream comes
        for session in range(N_SESSIONS)
    ]
    with EventProducer(settings) as producer:
        for event in views:
            producer.send(event)
        for name, raw, _ in MALFORMED if round_ == 0 else MALFORMED_LATER:
            producer.send_raw(raw, key=name.encode())
        for event in views[:N_DUPLICATES]:  # redelivered: applied once, counted as duplicates
            producer.send(event)
    # Views and earlier rounds' clicks each yield a recommendation.
    expected = (round_ + 1) * len(views) + round_ * N_CLICKS
    messages = drain(settings, settings.topics.recommendations, expected, timeout=90)
    recs = [Recommendation.model_validate_json(message.value() or b"") for message in messages]
    mine = [rec for rec in recs if (rec.event_id or "").startswith(f"obs-{round_}-")]
    assert len(mine) == len(views), "the worker did not recommend for every view"
    latest: dict[str, Recommendation] = {}  # a session's last list decides attribution
    for rec in sorted(mine, key=lambda rec: rec.event_time or 0):
        latest[rec.session_id or ""] = rec
    clicks: list[dict[str, Any]] = []
    for index, rec in enumerate(list(latest.values())[:N_CLICKS]):
        assert rec.event_time is not None and rec.items
        clicks.append(
            {
                "event_id": f"obs-click-{round_}-{index}",
                "user_id": rec.user_id,
                "session_id": rec.session_id,
                "item_id": rec.items[0].item_id,
                "type": "click",
                "timestamp": rec.event_time.timestamp() + 5,
            }
        )
    with EventProducer(settings) as producer:
        for event in clicks:
            producer.send(event)
    rewards = (round_ + 1) * N_CLICKS
    wait_for(lambda: metric_value(worker_port, "streamrec_rewards_total") >= rewards, 60)
    with httpx.Client(base_url=api, timeout=10) as client:
        for session in range(N_SESSIONS):
            assert client.get("/v1/recommendations", params={"session_id": f"sess{session}"})
        assert client.get("/v1/recommendations", params={"k": 3}).status_code == 200
        assert client.get("/v1/recommendations", params={"k": 0}).status_code == 422


@contextmanager
def _finetune_process(settings: Settings, metrics_port: int, log_path: Path) -> Iterator[None]:
    """A real `streamrec finetune` over a small promoted model of the traffic's items."""
    from streamrec.data.sequences import Vocabulary
    from streamrec.models.registry import ModelRegistry
    from tests.online.conftest import tiny_model

    vocab = Vocabulary([f"item{n}" for n in range(40)])
    registry = ModelRegistry(settings.registry_path)
    registry.promote(registry.save(tiny_model(vocab.n_items), vocab, {"dataset": "synthetic"}))
    with streamrec_process(["finetune"], settings, log_path, metrics_port=metrics_port) as proc:
        yield
        assert proc.poll() is None, f"finetune exited: {log_path.read_text()[-2000:]}"


@pytest.fixture(scope="module")
def observed(live_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    _binary("prometheus")
    home = tmp_path_factory.mktemp("observability")
    base = metrics_port_block()
    block = {base + offset for offset in PROCESS_PORT_OFFSETS.values()}
    api_port, prometheus_port = (_port_outside(block) for _ in range(2))
    settings = live_stack.settings(
        home=home,
        metrics_port=base,
        api={"port": api_port},
        stack={"prometheus_port": prometheus_port},
        # Small rounds so the fine-tuner trains, and its metrics move, during the traffic.
        online={"train_every_events": 16, "train_every_s": 1.0, "promote_min_events": 20},
    )
    create_topics(settings)
    prometheus = PrometheusComponent(settings, interval="1s")
    worker_port = base + PROCESS_PORT_OFFSETS["worker"]
    api_metrics_port = base + PROCESS_PORT_OFFSETS["api"]
    finetune_port = base + PROCESS_PORT_OFFSETS["finetune"]
    with (
        worker_process(settings, home / "worker.log", metrics_port=base),
        _api_process(settings, settings.api.port, home / "api.log") as api,
        _finetune_process(settings, base, home / "finetune.log"),
    ):
        prometheus.start()
        try:
            prometheus.wait_ready(60)
            run = Observed(
                settings,
                f"http://{prometheus.address}",
                "",
                "",
                prometheus.dir / "prometheus.yml",
            )
            # A baseline scrape of both processes before any traffic.
            up = 'count(up{job="streamrec", process=~"worker|api|finetune"} == 1) == 3'
            wait_for(lambda: run.query(up), timeout=30)
            for round_ in range(ROUNDS):
                _round(settings, api, worker_port, round_)
                consumed = metric_value(worker_port, "streamrec_events_consumed_total")
                requests = metric_value(api_metrics_port, "streamrec_http_requests_total")
                scraped = (
                    f"sum(streamrec_events_consumed_total) >= {consumed} and on() "
                    f"sum(streamrec_http_requests_total) >= {requests}"
                )
                wait_for(functools.partial(run.query, scraped), timeout=30)
            # The fine-tuner has ranked and trained on the traffic, and Prometheus has seen it.
            wait_for(lambda: metric_value(finetune_port, "streamrec_finetune_loss") > 0, 60)
            wait_for(functools.partial(run.query, "streamrec_finetune_loss > 0"), timeout=30)
            run.worker_metrics = _scrape(worker_port)
            run.api_metrics = _scrape(api_metrics_port)
            time.sleep(2)  # every rule group evaluates twice on the last scrape (deriv)
            yield run
        finally:
            prometheus.process.stop()


# --- Prometheus answers every query ----------------------------------------------------------


def _promql(query: Query) -> str:
    expr = alert_signal(query.expr) if query.kind == "alert" else query.expr
    for variable in GRAFANA_VARIABLES:
        expr = expr.replace(variable, VARIABLE_VALUES[variable])
    return expr


@pytest.mark.integration
def test_every_dashboard_and_rule_query_returns_data(observed: Observed) -> None:
    all_queries = queries()
    deferred = {(q.source, q.name) for q in all_queries if q.deferred}
    assert deferred == DEFERRED, "update DEFERRED (and say why) when the deferred panels change"
    empty, waiting = [], []
    for query in all_queries:
        result = observed.query(_promql(query))  # every expression must be valid PromQL
        if query.deferred and not all(
            observed.query(f"{name} != 0") for name in sorted(query.deferred)
        ):
            waiting.append(f"{query.source}: {query.name}")
            continue
        if not _finite(result):
            empty.append(f"{query.source}: {query.name}: {_promql(query)} -> {result}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    if waiting:  # nothing emits their metrics yet; once something does, they are asserted
        warnings.warn(
            f"{len(waiting)} deferred queries not asserted: " + "; ".join(waiting), stacklevel=1
        )


@pytest.mark.integration
def test_recording_rules_are_evaluated_by_prometheus(observed: Observed) -> None:
    groups = observed.api("rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = {q.name for q in queries() if q.source == RULES.name}
    assert set(rules) == expected
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        if rule["type"] == "recording":
            assert _finite(observed.query(name)), f"{name} recorded nothing"


@pytest.mark.integration
def test_metrics_reach_prometheus_with_the_expected_labels(observed: Observed) -> None:
    targets = observed.api("targets")["activeTargets"]
    by_process = {t["labels"]["process"]: t for t in targets}
    assert set(by_process) == set(PROCESS_PORT_OFFSETS)
    for name, offset in PROCESS_PORT_OFFSETS.items():
        assert by_process[name]["labels"]["job"] == "streamrec"
        assert by_process[name]["labels"]["instance"].endswith(
            f":{observed.settings.metrics_port + offset}"
        )
    for process in ("worker", "api", "finetune"):
        assert by_process[process]["health"] == "up", process

    def values(expr: str) -> dict[str, float]:
        return {
            "/".join(sample["metric"].values()): float(sample["value"][1])
            for sample in observed.query(expr)
        }

    consumer = observed.settings.stream.app_id
    assert values(f'sum by (type) (streamrec_events_consumed_total{{consumer="{consumer}"}})') == {
        "view": ROUNDS * (N_SESSIONS * VIEWS_PER_SESSION + N_DUPLICATES),
        "click": ROUNDS * N_CLICKS,
    }
    reasons = {reason for _, raw, reason in MALFORMED}
    invalid = values(f'sum by (reason) (streamrec_events_invalid_total{{consumer="{consumer}"}})')
    assert set(invalid) == reasons
    assert sum(invalid.values()) == len(MALFORMED) + (ROUNDS - 1) * len(MALFORMED_LATER)
    # Every consumer group validates (the fine-tuner too): one dead letter per rejection.
    assert values("sum by (reason) (streamrec_dead_letters_total)") == values(
        "sum by (reason) (streamrec_events_invalid_total)"
    )
    assert values("sum(streamrec_events_duplicate_total)") == {"": ROUNDS * N_DUPLICATES}
    assert values('sum(streamrec_rewards_total{type="click"})') == {"": ROUNDS * N_CLICKS}
    assert values('sum by (process) (streamrec_recommendations_total{path="http"})') == {
        "api": ROUNDS * N_HTTP
    }
    lag = observed.query("streamrec_consumer_lag_records")
    assert {s["metric"]["topic"] for s in lag} == {observed.settings.topics.events}
    assert {s["metric"]["process"] for s in observed.query("streamrec_model_info > 0")} == {
        "worker",
        "api",
    }
    statuses = values(
        'sum by (status) (streamrec_http_requests_total{route="/v1/recommendations"})'
    )
    assert statuses == {"200": ROUNDS * N_HTTP, "422": ROUNDS}


# --- promtool --------------------------------------------------------------------------------


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_binary("promtool"), *args], input=stdin, capture_output=True, text=True, check=False
    )


@pytest.mark.integration
def test_promtool_checks_rules_and_both_configs(observed: Observed, tmp_path: Path) -> None:
    rules = _promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    local = _promtool("check", "config", str(observed.config))
    assert local.returncode == 0, local.stdout + local.stderr
    assert str(RULES) in yaml.safe_load(observed.config.read_text())["rule_files"]
    # docker-compose mounts rules.yml at /etc/prometheus/rules.yml; point it at the repo copy.
    docker = yaml.safe_load(DOCKER_PROMETHEUS.read_text())
    docker["rule_files"] = [str(RULES)]
    config = tmp_path / "prometheus.docker.yml"
    config.write_text(yaml.safe_dump(docker))
    checked = _promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.integration
def test_promtool_checks_the_real_metrics_output(observed: Observed) -> None:
    for name, text in (("worker", observed.worker_metrics), ("api", observed.api_metrics)):
        assert "streamrec_events_consumed_total" in text or name == "api"
        checked = _promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"


# --- multiprocess mode -----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from streamrec import metrics

    port, role = int(sys.argv[1]), sys.argv[2]
    if role == "first":
        metrics.EVENTS_CONSUMED.labels("view", "w").inc(3)
        metrics.CONSUMER_LAG.labels("t", "0", "w").set(10)
        metrics.MODEL_INFO.info({"ranker": "popularity", "version": "v1"})
        metrics.MODEL_INFO.info({"ranker": "popularity", "version": "v2"})
        metrics.FINETUNE_LOSS.set(0.5)
        metrics.serve(port)
        print("serving", flush=True)
        sys.stdin.read()
    else:
        metrics.EVENTS_CONSUMED.labels("view", "w").inc(4)
        metrics.CONSUMER_LAG.labels("t", "0", "w").set(2)
        metrics.MODEL_INFO.info({"ranker": "popularity", "version": "v2"})
        metrics.serve(port)  # held by the first process: fine in multiprocess mode
    """
)


def test_multiprocess_mode_merges_every_process(tmp_path: Path) -> None:
    """Two processes sharing PROMETHEUS_MULTIPROC_DIR: one /metrics shows the merged values."""
    from prometheus_client.parser import text_string_to_metric_families

    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    port = free_port()
    first = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(port), "first"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "serving"
        second = subprocess.run(
            [sys.executable, "-c", _CHILD, str(port), "second"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 0, second.stderr
        text = _scrape(port)
    finally:
        first.communicate("", timeout=30)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("streamrec_events_consumed_total", (("consumer", "w"), ("type", "view")))] == 7
    lag = (("consumer", "w"), ("partition", "0"), ("topic", "t"))
    assert samples[("streamrec_consumer_lag_records", lag)] == 2  # the most recent write
    info = {labels: value for (name, labels), value in samples.items() if name.endswith("_info")}
    assert info == {
        (("ranker", "popularity"), ("version", "v1")): 0,
        (("ranker", "popularity"), ("version", "v2")): 1,
    }
    assert samples[("streamrec_finetune_loss", ())] == 0.5
    assert not [key for key in samples if "pid" in dict(key[1])], "a gauge without a merge mode"
    checked = _promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_serve_reports_a_taken_port_in_single_process_mode() -> None:
    from streamrec.errors import PortInUseError
    from streamrec.metrics import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PortInUseError, match="STREAMREC_METRICS_PORT"):
            serve(taken.getsockname()[1])
