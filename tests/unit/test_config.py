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


# --- errors that name the variable, event types, unknown variables ---------------------------


def _load_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    from streamrec.config import get_settings
    from streamrec.errors import ConfigError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        get_settings(_env_file=None)
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "STREAMREC_STREAM__BATCH_SIZE",
            "-5",
            "STREAMREC_STREAM__BATCH_SIZE: should be greater than or equal to 1 (got -5)",
        ),
        (
            "STREAMREC_REDIS__URL",
            "notaurl",
            "STREAMREC_REDIS__URL: must be a redis://, rediss:// or unix:// URL (got notaurl)",
        ),
        (
            "STREAMREC_STREAM__RECOMMEND_ON",
            "view",
            'STREAMREC_STREAM__RECOMMEND_ON: expected a JSON list such as ["view", "click"] '
            "(got view)",
        ),
        (
            "STREAMREC_STREAM__REWARD_VALUES",
            "click=1",
            "STREAMREC_STREAM__REWARD_VALUES: expected a JSON object such as",
        ),
        (
            "STREAMREC_STREAM__GC_THRESHOLDS",
            "1,2,3",
            "STREAMREC_STREAM__GC_THRESHOLDS: expected a JSON list such as [50000, 20, 100]",
        ),
        (
            "STREAMREC_LOG_LEVEL",
            "LOUD",
            "STREAMREC_LOG_LEVEL: should be one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
            "(got LOUD)",
        ),
        (
            "STREAMREC_STREAM__BATCHSIZE",
            "5",
            "STREAMREC_STREAM__BATCHSIZE: matches no setting; did you mean "
            "STREAMREC_STREAM__BATCH_SIZE? (got 5)",
        ),
        (
            "STREAMREC_STREAM__GC_THRESHOLDS",
            "[1, 2, 3.5]",
            "STREAMREC_STREAM__GC_THRESHOLDS: item 2: should be a valid integer",
        ),
    ],
)
def test_invalid_settings_name_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    message = _load_error(monkeypatch, **{name: value})
    assert expected in message
    assert "\n" not in message


def test_every_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _load_error(
        monkeypatch, STREAMREC_STREAM__TOP_K="0", STREAMREC_KAFKA__SECURITY_PROTOCOL="X"
    )
    assert message.splitlines()[0].startswith("STREAMREC_KAFKA__SECURITY_PROTOCOL: ")
    assert message.splitlines()[1].startswith("STREAMREC_STREAM__TOP_K: ")


def test_a_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _load_error(monkeypatch, STREAMREC_KAFKA='{"sasl_password": "hunter2", "x": 1}')
    assert "STREAMREC_KAFKA__X: matches no setting" in message
    assert "hunter2" not in message


def test_redis_url_schemes() -> None:
    for url in ("redis://h:1/0", "rediss://u:p@h:6380/2", "unix:///run/redis.sock?db=1"):
        assert Settings(redis={"url": url}).redis.url == url  # type: ignore[arg-type]
    for url in ("notaurl", "http://h:6379", "REDIS://h", "redis://h:notaport/0", ""):
        with pytest.raises(ValidationError, match="url must be a redis://"):
            Settings(redis={"url": url})  # type: ignore[arg-type]


def test_log_level_is_a_level_name() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"
    assert Settings(log_level="warn").log_level == "WARNING"
    for level in ("LOUD", "10", "NOTSET"):
        with pytest.raises(ValidationError, match="log_level"):
            Settings(log_level=level)


@pytest.mark.parametrize(
    "stream",
    [
        {"recommend_on": ["viwe"]},
        {"recommend_on": ["view", "Click"]},
        {"reward_values": {"clik": 1.0}},
    ],
)
def test_unknown_event_types_are_refused(stream: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(stream=stream)  # type: ignore[arg-type]
    assert "view, click, add_to_cart, purchase, rating" in str(info.value)


def test_unknown_event_type_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _load_error(monkeypatch, STREAMREC_STREAM__REWARD_VALUES='{"clik": 1}')
    assert message.startswith("STREAMREC_STREAM__REWARD_VALUES: ")
    assert "'clik' is not an event type" in message
    assert "view, click, add_to_cart, purchase, rating" in message


def test_unknown_streamrec_variables_warn_once_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from streamrec import config

    monkeypatch.setattr(config, "_WARNED", set())
    monkeypatch.setenv("STREAMREC_STREM__BATCH_SIZE", "10")
    monkeypatch.setenv("STREAMREC_ZZZ", "1")
    # not settings, but the project's own: no warning
    monkeypatch.setenv("STREAMREC_TEST_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("STREAMREC_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("STREAMREC_KAFKA__EXTRA__socket.timeout.ms", "1000")
    monkeypatch.setenv("STREAMREC_STREAM__REWARD_VALUES__PURCHASE", "5")
    with caplog.at_level("WARNING", logger="streamrec.config"):
        settings = config.get_settings(_env_file=None)
        config.get_settings(_env_file=None)
    assert settings.stream.batch_size == 256  # ignored, as before: a warning, not an error
    assert settings.kafka.extra == {"socket.timeout.ms": "1000"}
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert (
        "STREAMREC_STREM__BATCH_SIZE matches no setting and is ignored; "
        "did you mean STREAMREC_STREAM__BATCH_SIZE?"
    ) in messages
    assert any(m.startswith("STREAMREC_ZZZ matches no setting") for m in messages)


def test_unknown_variables_in_the_settings_file_warn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from streamrec import config

    monkeypatch.setattr(config, "_WARNED", set())
    env_file = tmp_path / "streamrec.env"
    env_file.write_text("STREAMREC_STREAM__TOP_K=25\nSTREAMREC_METRIC_PORT=1\n")
    with caplog.at_level("WARNING", logger="streamrec.config"):
        assert config.get_settings(_env_file=env_file).stream.top_k == 25
    assert [record.getMessage() for record in caplog.records] == [
        f"STREAMREC_METRIC_PORT (in {env_file}) matches no setting and is ignored; "
        "did you mean STREAMREC_METRICS_PORT?"
    ]


def test_the_project_sets_only_known_streamrec_variables() -> None:
    from streamrec.config import unknown_variable

    paths = [
        ROOT / "Makefile",
        ROOT / "docker-compose.yml",
        ROOT / "Dockerfile",
        ROOT / "README.md",
    ]
    for folder in ("tests", "scripts", "bench", ".ci", "agents", "streamrec", "docs"):
        paths += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix != ".pyc"]
    # these two misspell names on purpose
    paths = [p for p in paths if p.name not in ("test_config.py", "test_cli.py")]
    found: dict[str, Path] = {}
    for path in paths:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for name in re.findall(r"\bSTREAMREC_[A-Z0-9_]*[A-Z0-9]\b", text):
            found.setdefault(name, path)
    assert "STREAMREC_TEST_BOOTSTRAP" in found
    found.pop("STREAMREC_STREM__BATCH_SIZE")  # the README's example of a misspelt name
    unknown = {name: str(path) for name, path in found.items() if unknown_variable(name)}
    assert not unknown


def test_every_process_metrics_port_is_a_port() -> None:
    from streamrec.metrics import PROCESS_PORT_OFFSETS

    top = 65535 - max(PROCESS_PORT_OFFSETS.values())
    assert Settings(metrics_port=top).metrics_port == top
    with pytest.raises(ValidationError, match="metrics_port"):
        Settings(metrics_port=top + 1)  # the agent's +3 would be past 65535
