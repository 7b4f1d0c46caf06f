"""The README (metrics, dashboard panels) and docs/metrics.md (rules, alerts) document exactly
the metrics, panels and rules that exist."""

from __future__ import annotations

import re
from pathlib import Path

from streamrec import metrics
from tests.unit.test_dashboards import load_dashboards, load_rules, panels

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
README = ROOT / "README.md"


def _section(title: str, doc: Path = DOC) -> str:
    text = doc.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{doc.name} has no '## {title}' section"
    return match.group(1)


def _rows(text: str) -> list[list[str]]:
    """Cells of the table rows (header and separator excluded), split on unescaped pipes."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or set(line) <= {"|", "-", " "}:
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    return rows


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected `name`, got {cell!r}"
    return match.group(1)


def test_metric_table_lists_exactly_the_metrics_in_all() -> None:
    rows = [row for row in _rows(_section("Metrics", README)) if row[0] != "metric"]
    documented = {_code(row[0]): row for row in rows}
    assert len(documented) == len(rows), "a metric is listed twice"
    defined = {metrics.exposed_name(metric): metric for metric in metrics.ALL}
    assert set(documented) == set(defined)
    for name, (_, kind, labels, emitted_by, meaning) in documented.items():
        metric = defined[name]
        assert kind == metric._type, name
        listed = [] if labels == "\N{EN DASH}" else [_code(label) for label in labels.split(", ")]
        assert listed == list(metric._labelnames), name
        assert emitted_by and meaning, name


def test_panel_tables_list_every_panel_of_every_dashboard() -> None:
    text = _section("Dashboards", README)
    documented = set()
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        heading, _, table = block.partition("\n")
        file_name = re.search(r"\(`([^`]+\.json)`\)", heading)
        assert file_name, heading
        for row in _rows(table):
            if row[0] != "panel" and not row[0].startswith("**"):
                assert row[1], f"{row[0]}: say what it shows"
                documented.add((file_name.group(1), row[0]))
    existing = {
        (name, panel["title"])
        for name, board in load_dashboards().items()
        for panel in panels(board)
        if panel["type"] != "row"
    }
    assert documented == existing


def test_rule_tables_list_every_rule() -> None:
    rules = [rule for group in load_rules()["groups"] for rule in group["rules"]]
    records = {_code(row[0]) for row in _rows(_section("Recording rules")) if row[0] != "rule"}
    alerts = {_code(row[0]): row for row in _rows(_section("Alerts")) if row[0] != "alert"}
    assert records == {rule["record"] for rule in rules if "record" in rule}
    assert set(alerts) == {rule["alert"] for rule in rules if "alert" in rule}
    for rule in rules:
        if "alert" in rule:
            expr = alerts[rule["alert"]][1].replace("\\|", "|")
            assert _code(expr) == " ".join(rule["expr"].split()), rule["alert"]
            assert alerts[rule["alert"]][2] == rule.get("for", "0m")


def test_every_gauge_declares_how_processes_merge() -> None:
    """Multiprocess mode would otherwise export one series per pid ("all")."""
    for metric in metrics.ALL:
        if metric._type == "gauge":
            mode = getattr(metric, "_multiprocess_mode", None)
            assert mode not in (None, "all"), metrics.exposed_name(metric)
