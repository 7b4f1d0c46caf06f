"""A short real RLlib (PPO, new API stack) run in the tiny synthetic world beats random."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from agents.config import RLSettings  # noqa: E402
from agents.envs import make_env  # noqa: E402
from agents.evaluate import random_dist, run_sessions, softmax_dist  # noqa: E402
from agents.policy import load_policy  # noqa: E402
from agents.train import train_ppo  # noqa: E402

ENV = {"synthetic": True, "synthetic_noise": 0.2, "n_candidates": 10, "mode": "bandit"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    settings = RLSettings(
        env_config=ENV,
        train_batch_size=400,
        minibatch_size=100,
        num_epochs=8,
        lr=3e-3,
        entropy_coeff=0.0,
        hidden=32,
        seed=0,
    )
    outcome = train_ppo(settings, iterations=6, out_dir=out)
    yield outcome
    ray.shutdown()


def test_ppo_run_writes_checkpoint_history_and_export(trained) -> None:
    assert trained.checkpoint_dir is not None and trained.checkpoint_dir.is_dir()
    assert trained.policy_dir is not None
    assert len(trained.history) == 6
    assert all(np.isfinite(row["episode_return_mean"]) for row in trained.history)


def test_trained_policy_beats_random_in_the_tiny_env(trained) -> None:
    policy = load_policy(trained.policy_dir)
    env = make_env(ENV)
    learned = run_sessions(env, softmax_dist(policy, temperature=0.0), 1500, seed=100)
    baseline = run_sessions(env, random_dist, 1500, seed=100)
    difference = learned.returns - baseline.returns  # paired: same users, same seeds
    stderr = difference.std(ddof=1) / np.sqrt(len(difference))
    assert difference.mean() > 2 * stderr, (learned.summary(), baseline.summary())


def test_cli_export_from_the_rllib_checkpoint_matches_the_training_export(
    trained, tmp_path
) -> None:
    from typer.testing import CliRunner

    from agents.cli import app

    result = CliRunner().invoke(
        app,
        [
            "export",
            "--checkpoint",
            str(trained.checkpoint_dir),
            "--out",
            str(tmp_path / "p"),
            "--synthetic",
        ],
    )
    assert result.exit_code == 0, result.output
    env = make_env(ENV)
    observation, _ = env.reset(seed=0)
    args = (observation["candidates"], observation["context"], observation["action_mask"])
    np.testing.assert_allclose(
        load_policy(tmp_path / "p").logits(*args), load_policy(trained.policy_dir).logits(*args)
    )
