"""Grafana dashboards, their provisioning and the Prometheus rules, checked without a server.

The dashboards are what Grafana's file provider loads (``dashboards/grafana/dashboards/*.json``,
mounted by docker-compose where ``provisioning/dashboards/streamrec.yml`` looks). Whether their
queries return data is proven against a real Prometheus in
``tests/integration/test_observability.py``, which reuses the loaders below.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "dashboards" / "grafana" / "dashboards"
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"
RULES = ROOT / "dashboards" / "prometheus" / "rules.yml"
DOCKER_PROMETHEUS = ROOT / "dashboards" / "prometheus" / "prometheus.docker.yml"

#: Metrics that no process emits yet, with who will. Panels and rules using them sit in the
#: model/RL dashboards' "(needs ...)" rows; the integration test asserts their data only once
#: a process sets them.
#: Metric family -> the process that emits it, for metrics the running stack does not emit
#: (their panels sit in rows marked "(needs ...)"): the agent's training progress.
DEFERRED_METRICS: dict[str, str] = {
    "streamrec_agent_train_iterations_total": "streamrec agent train",
    "streamrec_agent_episode_return_mean": "streamrec agent train",
    "streamrec_agent_policy_loss": "streamrec agent train",
}

#: Grafana's built-in variables the dashboards may use (no templating variables of our own).
GRAFANA_VARIABLES = ("$__rate_interval", "$__range", "$__interval")

PANEL_TYPES = {"timeseries", "stat", "row", "table", "gauge", "bargauge"}
_SERIES = re.compile(r"\b(streamrec(?:_[a-z0-9]+)+|streamrec:[a-z0-9_:]+|up)\b(?!\s*\()")
_COMPARISON = re.compile(r" (>=|<=|==|!=|>|<) (?!bool)")


@dataclass(frozen=True)
class Query:
    """One PromQL expression: a dashboard target, a recording rule or an alert."""

    source: str  # "overview.json", "rules.yml"
    name: str  # panel title (with the legend of the target), record or alert name
    expr: str
    kind: str  # "panel", "record", "alert"

    @property
    def series(self) -> set[str]:
        """Metric and recording-rule names the expression reads."""
        return set(_SERIES.findall(re.sub(r"\{[^}]*\}", "", self.expr)))

    @property
    def deferred(self) -> set[str]:
        return {name for name in self.series if _family(name) in DEFERRED_METRICS}


def _family(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series[: -len(suffix)] in _exposed():
            return series[: -len(suffix)]
    return series


def _exposed() -> dict[str, Any]:
    return {metrics.exposed_name(metric): metric for metric in metrics.ALL}


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def load_rules() -> dict[str, Any]:
    return dict(yaml.safe_load(RULES.read_text()))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries() -> list[Query]:
    """Every PromQL expression of every dashboard panel and every rule."""
    out = []
    for name, dashboard in load_dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                label = f"{panel['title']} [{target.get('legendFormat') or target['refId']}]"
                out.append(Query(name, label, target["expr"], "panel"))
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            out.append(Query(RULES.name, rule.get("record") or rule["alert"], rule["expr"], kind))
    return out


def signal(alert_expr: str) -> str:
    """An alert expression with ``bool`` after each comparison: 0/1 wherever its inputs exist."""
    return _COMPARISON.sub(lambda match: f" {match.group(1)} bool ", " ".join(alert_expr.split()))


# --- dashboards ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


def test_the_three_dashboards_exist(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == {"overview.json", "model.json", "rl.json"}
    uids = [board["uid"] for board in dashboards.values()]
    titles = [board["title"] for board in dashboards.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", ["overview.json", "model.json", "rl.json"])
def test_dashboard_is_in_grafana_provisioning_format(
    dashboards: dict[str, dict[str, Any]], name: str
) -> None:
    board = dashboards[name]
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert board["title"] and isinstance(board["schemaVersion"], int)
    assert "id" not in board or board["id"] is None, "provisioned dashboards carry no db id"
    assert "streamrec" in board["tags"]
    assert set(board["time"]) == {"from", "to"}
    assert board["templating"] == {"list": []}
    datasources = _provisioned_datasource_uids()
    ids = [panel["id"] for panel in panels(board)]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), ids
    for panel in panels(board):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["title"]
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid)
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert not panel.get("targets")
            continue
        assert panel.get("description"), f"{panel['title']}: docs/metrics.md quotes it"
        assert panel["datasource"] == {"type": "prometheus", "uid": panel["datasource"]["uid"]}
        assert panel["datasource"]["uid"] in datasources
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [target["refId"] for target in targets]
        assert len(set(ref_ids)) == len(ref_ids)
        for target in targets:
            assert target["datasource"] == panel["datasource"]
            assert isinstance(target["expr"], str) and target["expr"].strip()


@pytest.mark.parametrize("name", ["overview.json", "model.json", "rl.json"])
def test_panels_do_not_overlap(dashboards: dict[str, dict[str, Any]], name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboards[name]["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_queries_read_only_defined_metrics_and_builtin_variables() -> None:
    exposed = _exposed()
    recorded = {q.name for q in queries() if q.kind == "record"}
    for query in queries():
        variables = set(re.findall(r"\$\w+", query.expr))
        assert variables <= set(GRAFANA_VARIABLES), (query.name, variables)
        if query.kind != "panel":
            assert not variables, f"{query.name}: rules cannot use Grafana variables"
        for series in query.series:
            assert series == "up" or series in recorded or _family(series) in exposed, (
                f"{query.source} {query.name}: {series} is not in streamrec.metrics"
            )
            family = exposed.get(_family(series))
            if series.endswith(("_bucket", "_sum", "_count")):
                assert family is not None and family._type == "histogram", series


def test_every_metric_is_on_a_dashboard() -> None:
    shown = {_family(series) for q in queries() if q.kind == "panel" for series in q.series}
    missing = sorted(set(_exposed()) - shown)
    assert not missing, f"on no dashboard panel: {missing}"


def test_deferred_metrics_only_in_the_needs_rows(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(DEFERRED_METRICS) <= set(_exposed())
    for name, board in dashboards.items():
        row = ""
        for panel in board["panels"]:
            if panel["type"] == "row":
                row = panel["title"]
                continue
            deferred = {
                family
                for target in panel["targets"]
                for family in Query(name, "", target["expr"], "panel").deferred
            }
            if deferred:
                assert name != "overview.json", panel["title"]
                assert "(needs " in row, f"{name}: {panel['title']} uses {deferred}"


# --- provisioning and docker-compose ---------------------------------------------------------


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _mounts(service: str) -> dict[str, str]:
    """Source (relative to the repo) -> target of a compose service's bind mounts."""
    out = {}
    for volume in _compose()["services"][service]["volumes"]:
        source, target = str(volume).split(":")[:2]
        out[source.removeprefix("./").rstrip("/")] = target
    return out


def _provisioned_datasource_uids() -> set[str]:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    return {source["uid"] for source in config["datasources"]}


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    mounts = _mounts("grafana")
    assert mounts["dashboards/grafana/provisioning"] == "/etc/grafana/provisioning"
    config = yaml.safe_load((PROVISIONING / "dashboards" / "streamrec.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    dashboards_source = str(DASHBOARD_DIR.relative_to(ROOT))
    assert provider["options"]["path"] == mounts[dashboards_source]
    home = _compose()["services"]["grafana"]["environment"]
    home_path = Path(home["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home_path.parent) == mounts[dashboards_source]
    assert (DASHBOARD_DIR / home_path.name).exists()


def test_datasource_is_the_compose_prometheus() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in _compose()["services"]
    command = _compose()["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_compose_prometheus_mounts_config_and_rules() -> None:
    mounts = _mounts("prometheus")
    config_target = mounts[str(DOCKER_PROMETHEUS.relative_to(ROOT))]
    rules_target = mounts[str(RULES.relative_to(ROOT))]
    assert config_target == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(DOCKER_PROMETHEUS.read_text())
    assert config["rule_files"] == [rules_target]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "streamrec"
    relabel = job["relabel_configs"][0]
    for target in job["static_configs"][0]["targets"]:
        host = re.fullmatch(relabel["regex"], target)
        assert host is not None and host.group(1) in _compose()["services"], target


# --- rules -----------------------------------------------------------------------------------


def test_rules_follow_the_conventions() -> None:
    rules = load_rules()
    names = [rule.get("record") or rule["alert"] for g in rules["groups"] for rule in g["rules"]]
    assert len(set(names)) == len(names)
    required = {
        "StreamrecConsumerLagGrowing",
        "StreamrecDeadLetterRateHigh",
        "StreamrecEventToRecommendationP99OverBudget",
        "StreamrecOnlineNdcgDrop",
        "StreamrecModelRolledBack",
    }
    assert required <= set(names)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"streamrec:[a-z0-9_]+:[a-z0-9_]+", rule["record"])
                continue
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"]
            assert signal(rule["expr"]) != " ".join(rule["expr"].split()), (
                f"{rule['alert']}: write the comparison as `<signal> > <threshold>`"
            )


def test_signal_inserts_bool_after_each_top_level_comparison() -> None:
    assert signal('a{x!="y"} > 0\n and b > 1000') == 'a{x!="y"} > bool 0 and b > bool 1000'
    assert signal("a < 0.8 * b") == "a < bool 0.8 * b"
    assert signal("up == 0") == "up == bool 0"
