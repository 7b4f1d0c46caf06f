from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamrec.cli import app

runner = CliRunner()
COMMANDS = [
    "stack",
    "topics",
    "replay",
    "schema",
    "demo",
    "worker",
    "api",
    "forget-user",
    "train",
    "evaluate",
    "registry",
    "finetune",
    "agent",
]


def test_help_lists_the_subcommands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize(
    "argv",
    [[c, "--help"] for c in COMMANDS]
    + [["stack", sub, "--help"] for sub in ("up", "down", "status", "logs", "fetch")]
    + [["topics", sub, "--help"] for sub in ("create", "counts")],
)
def test_every_subcommand_has_help(argv: list[str]) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    # the command is named once: `streamrec train [OPTIONS]`, not `streamrec train train`
    assert f"Usage: streamrec {' '.join(argv[:-1])} [" in result.output, result.output


def test_stack_status_of_a_stack_that_never_ran(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STREAMREC_HOME", str(tmp_path))
    result = runner.invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert '"state": "stopped"' in result.output
    assert '"version": "4.1.1"' in result.output


def test_schema_command_writes_the_published_schemas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "event.v1.json",
        "recommendation.v1.json",
        "reward.v1.json",
    ]


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["replay", "--dataset", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1
    assert "no such file" in result.output


# --- clear one-line errors --------------------------------------------------------------------


def _text(result: Any) -> str:
    """The output with typer's error panel (borders, wrapping) flattened."""
    return " ".join(str(result.output).replace("│", " ").split())


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_error_line(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    return str(lines[0])


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STREAMREC_STREAM__BATCH_SIZE", "-5", "STREAMREC_STREAM__BATCH_SIZE: should be"),
        ("STREAMREC_REDIS__URL", "notaurl", "STREAMREC_REDIS__URL: must be a redis://"),
        ("STREAMREC_STREAM__RECOMMEND_ON", "view", "STREAMREC_STREAM__RECOMMEND_ON: expected"),
        ("STREAMREC_LOG_LEVEL", "LOUD", "STREAMREC_LOG_LEVEL: should be one of"),
        ("STREAMREC_STREAM__RECOMMEND_ON", '["viwe"]', "'viwe' is not an event type"),
        ("STREAMREC_STREAM__REWARD_VALUES", '{"clik":1}', "'clik' is not an event type"),
    ],
)
@pytest.mark.parametrize("argv", [["stack", "status"], ["topics", "counts"], ["registry", "list"]])
def test_invalid_settings_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    name: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no streamrec.env
    monkeypatch.setenv(name, value)
    line = _one_error_line(runner.invoke(app, argv))
    assert expected in line
    assert f"(got {value})" in line or "is not an event type" in line


def test_a_misspelt_variable_is_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamrec import config

    monkeypatch.setattr(config, "_WARNED", set())
    monkeypatch.setenv("STREAMREC_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMREC_STREM__BATCH_SIZE", "10")
    warned: list[str] = []
    monkeypatch.setattr(config.log, "warning", lambda msg, *args: warned.append(msg % args))
    result = runner.invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert warned == [
        "STREAMREC_STREM__BATCH_SIZE matches no setting and is ignored; "
        "did you mean STREAMREC_STREAM__BATCH_SIZE?"
    ]


@pytest.mark.parametrize(("argv", "process"), [(["worker"], "worker"), (["api"], "api")])
def test_a_taken_metrics_port_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], process: str
) -> None:
    import socket
    import sys

    from streamrec.metrics import PROCESS_PORT_OFFSETS

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the worker command resets it
    monkeypatch.setenv("STREAMREC_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMREC_STREAM__EVENT_LOOP", "asyncio")  # no global loop policy
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = port - PROCESS_PORT_OFFSETS.get(process, 0)
        monkeypatch.setenv("STREAMREC_METRICS_PORT", str(base))
        line = _one_error_line(runner.invoke(app, argv))
    assert f"metrics port 127.0.0.1:{port} is in use" in line


@pytest.mark.parametrize("command", ["counts", "create"])
def test_topics_with_kafka_down_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    import time

    monkeypatch.chdir(tmp_path)
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP_SERVERS", address)
    started = time.monotonic()
    line = _one_error_line(runner.invoke(app, ["topics", command, "--timeout", "1"]))
    assert time.monotonic() - started < 10
    assert f"Kafka at {address} is unreachable" in line
    assert "Connection refused" in line


def test_stack_logs_of_an_unknown_component(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMREC_HOME", str(tmp_path))
    result = runner.invoke(app, ["stack", "logs", "nosuch"])
    assert result.exit_code == 2, result.output
    assert "unknown component 'nosuch'" in _text(result)
    assert "kafka, redis, prometheus" in _text(result)
    assert runner.invoke(app, ["stack", "logs", "-n", "0"]).exit_code == 2
    known = runner.invoke(app, ["stack", "logs", "prometheus"])  # never started
    assert known.exit_code == 0, known.output
    assert "no log" in known.output


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("u" * 300, "300 characters"),
        ("bad\x07id", "control character"),
        ("\u200b", "only white space"),
    ],
)
def test_forget_user_checks_the_id_as_the_event_contract_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, user_id: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    # nothing listens there: the id must be refused before Redis is asked
    monkeypatch.setenv("STREAMREC_REDIS__URL", f"redis://127.0.0.1:{_closed_port()}/0")
    result = runner.invoke(app, ["forget-user", user_id])
    assert result.exit_code == 2, result.output
    assert expected in _text(result)


def test_forget_user_takes_an_id_of_the_longest_length(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAMREC_REDIS__URL", f"redis://127.0.0.1:{_closed_port()}/0")
    result = runner.invoke(app, ["forget-user", "u" * 256])
    assert result.exit_code == 1, result.output  # accepted, then Redis is not there
    assert "forgetting user" in result.output
