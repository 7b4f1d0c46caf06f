from __future__ import annotations

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
