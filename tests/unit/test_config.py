from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from streamrec.config import Settings, to_env

ROOT = Path(__file__).resolve().parents[2]


def _env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += [f"STREAMREC_{name}__{sub}".upper() for sub in annotation.model_fields]
        else:
            names.append(f"STREAMREC_{name}".upper())
    return names


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_setting() -> None:
    text = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(STREAMREC_[A-Z0-9_]+)`", text))
    missing = [name for name in _env_names() if name not in documented]
    assert not missing, f"README configuration table lacks {missing}"


def test_nested_env_vars_and_json_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TOPICS__EVENTS", "custom.events")
    monkeypatch.setenv("STREAMREC_STREAM__RECOMMEND_ON", '["purchase"]')
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", "hunter2")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.topics.events == "custom.events"
    assert settings.stream.recommend_on == ("purchase",)
    assert "hunter2" not in repr(settings)
    assert settings.kafka.librdkafka()["sasl.password"] == "hunter2"


def test_addresses_follow_the_local_stack_ports_unless_given() -> None:
    settings = Settings(stack={"kafka_port": 19092, "redis_port": 16379})  # type: ignore[arg-type]
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.redis.url == "redis://127.0.0.1:16379/0"
    explicit = Settings(kafka={"bootstrap_servers": "b:1"}, stack={"kafka_port": 2})  # type: ignore[arg-type]
    assert explicit.kafka.bootstrap_servers == "b:1"


def test_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "streamrec.env"
    env_file.write_text("STREAMREC_STREAM__TOP_K=25\n")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.stream.top_k == 25


def test_invalid_values_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="top_k"):
        Settings(stream={"top_k": 0})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="security_protocol"):
        Settings(kafka={"security_protocol": "CARRIER_PIGEON"})  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().metrics_port = 1  # type: ignore[misc]


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        topics={"events": "e"},  # type: ignore[arg-type]
        stream={"recommend_on": ["click"], "reward_values": {"click": 2.0}},  # type: ignore[arg-type]
        kafka={"sasl_password": "s3cret", "extra": {"socket.timeout.ms": "1000"}},  # type: ignore[arg-type]
    )
    for key, value in to_env(original).items():
        monkeypatch.setenv(key, value)
    assert Settings(_env_file=None) == original  # type: ignore[call-arg]
