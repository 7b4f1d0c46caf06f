"""`streamrec agent` commands on the synthetic world (no Ray needed for these)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from agents.cli import app
from agents.envs import make_env
from agents.policy import CandidateScorer, ItemTable, export_policy

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "train", "log", "evaluate", "export", "ope"):
        assert command in result.output


def test_log_writes_rllib_episodes(tmp_path) -> None:
    result = runner.invoke(
        app, ["log", "--synthetic", "--sessions", "5", "--out", str(tmp_path / "eps")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["steps"] > 0
    assert pq.read_table(tmp_path / "eps" / "episodes.parquet").num_rows == 5


def test_evaluate_compares_policy_greedy_and_random(tmp_path) -> None:
    env = make_env({"synthetic": True})
    table = ItemTable(
        list(env.data.vocab.ids),
        env.source.item_vectors(),
        env.data.item_popularity,
        env.data.item_quality,
    )
    export_policy(tmp_path / "p", CandidateScorer(), table, n_slots=20, slate_size=3, horizon=30)
    result = runner.invoke(
        app, ["evaluate", "--synthetic", "--policy", str(tmp_path / "p"), "--sessions", "10"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert {"rl", "greedy", "random", "ratio_rl_greedy"} <= set(payload)


def test_train_refuses_unknown_algorithm(tmp_path) -> None:
    result = runner.invoke(app, ["train", "--synthetic", "--algo", "sarsa", "--out", str(tmp_path)])
    assert result.exit_code != 0
