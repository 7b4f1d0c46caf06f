"""docker-compose.yml: no Docker engine runs here, so check what can be checked without one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamrec.config import Settings
from streamrec.stack.prometheus import PROCESS_PORT_OFFSETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for mapping in service.get("ports", []):
        host, container = str(mapping).rsplit(":", 2)[-2:]
        out[int(container)] = int(host)
    return out


def test_valid_against_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    # check-jsonschema vendors the Compose specification's schema; read the file without
    # importing the package (its CLI import pulls a click version typer does not use).
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "pip install check-jsonschema"
    package = Path(next(iter(spec.submodule_search_locations)))
    schema = json.loads((package / "builtin_schemas/vendor/compose-spec.json").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_every_service_of_the_local_stack_is_there(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "prometheus", "grafana", "worker", "api", "topics"} <= set(
        compose["services"]
    )


def test_ports_match_the_settings(compose: dict[str, Any]) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    services = compose["services"]
    assert _host_ports(services["kafka"])[9092] == settings.stack.kafka_port
    assert _host_ports(services["redis"])[6379] == settings.stack.redis_port
    assert _host_ports(services["api"])[settings.api.port] == settings.api.port
    assert _host_ports(services["prometheus"])[9090] == settings.stack.prometheus_port
    assert _host_ports(services["worker"])[settings.metrics_port] == settings.metrics_port
    api_metrics = settings.metrics_port + PROCESS_PORT_OFFSETS["api"]
    assert _host_ports(services["api"])[api_metrics] == api_metrics


def test_kafka_matches_the_local_stack(compose: dict[str, Any]) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{settings.stack.kafka_version}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_streamrec_env_is_real_settings_matching_defaults(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in ("worker", "api", "topics"):
        env = compose["services"][name]["environment"]
        for key, value in env.items():
            assert key.startswith("STREAMREC_")
            monkeypatch.setenv(key, str(value))
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.topics == defaults.topics
        assert settings.metrics_port == defaults.metrics_port
        assert settings.kafka.bootstrap_servers == "kafka:19092"
        assert settings.redis.url == "redis://redis:6379/0"


def test_prometheus_in_compose_scrapes_the_worker_and_api(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.docker.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert f"worker:{settings.metrics_port}" in targets
    assert f"api:{settings.metrics_port + PROCESS_PORT_OFFSETS['api']}" in targets
