"""The one place RLlib is configured (Ray 2.5x-2.60, new API stack).

* :func:`ppo_config` — online PPO on the session (or bandit) simulator with the
  candidate-scoring RLModule.
* :func:`offline_config` — BC or MARWIL from logged episodes (``agents/offline.py`` writes them).
  On a 2-CPU machine Ray Data's default ``map_batches`` concurrency (2) can take every CPU and
  starve the reader task, so the pipeline runs with concurrency 1 and one prefetched batch.
* :func:`init_ray` — ``ray.init`` capped at 2 CPUs locally, or joins a cluster by address; the
  configs never pin resources to a node, so the same code runs on a multi-node cluster.

All settings are keyword-only with defaults sized for this machine; :class:`RLSettings`
validates them in one place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import ray
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.bc import BCConfig
from ray.rllib.algorithms.marwil import MARWILConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from agents.envs import make_env
from agents.rl_module import CandidateScoringRLModule

__all__ = ["ENV_NAME", "RLSettings", "init_ray", "offline_config", "ppo_config"]

logger = logging.getLogger(__name__)

ENV_NAME = "streamrec-session"


@dataclass(frozen=True, kw_only=True)
class RLSettings:
    """Knobs of a training run (also written next to every checkpoint)."""

    env_config: dict[str, Any]
    seed: int = 0
    hidden: int = 64
    lr: float = 3e-4
    gamma: float = 0.95
    train_batch_size: int = 2000
    minibatch_size: int = 250
    num_epochs: int = 6
    entropy_coeff: float = 0.01
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 1

    def validate(self) -> RLSettings:
        problems = []
        if "sim_dir" not in self.env_config and not self.env_config.get("synthetic"):
            problems.append("env_config needs sim_dir (streamrec agent prepare) or synthetic")
        if self.minibatch_size > self.train_batch_size:
            problems.append("minibatch_size must be <= train_batch_size")
        if not 0.0 < self.gamma <= 1.0:
            problems.append("gamma must be in (0, 1]")
        if self.num_env_runners < 0 or self.num_envs_per_env_runner < 1:
            problems.append("num_env_runners >= 0 and num_envs_per_env_runner >= 1")
        if problems:
            raise ValueError("invalid RL settings: " + "; ".join(problems))
        return self


def init_ray(address: str | None = None, *, num_cpus: int = 2) -> None:
    """Start (or join) Ray once: a local instance capped at ``num_cpus``, or ``address``."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, make_env)


def _module_spec(hidden: int) -> RLModuleSpec:
    return RLModuleSpec(module_class=CandidateScoringRLModule, model_config={"hidden": hidden})


def ppo_config(settings: RLSettings) -> PPOConfig:
    """PPO over the simulator with the candidate-scoring module."""
    settings.validate()
    register_env(ENV_NAME, make_env)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config=settings.env_config)
        .framework("torch")
        .env_runners(
            num_env_runners=settings.num_env_runners,
            num_envs_per_env_runner=settings.num_envs_per_env_runner,
            num_cpus_per_env_runner=1,
        )
        .learners(num_learners=0)
        .rl_module(rl_module_spec=_module_spec(settings.hidden))
        .training(
            lr=settings.lr,
            gamma=settings.gamma,
            lambda_=0.95,
            train_batch_size_per_learner=settings.train_batch_size,
            minibatch_size=settings.minibatch_size,
            num_epochs=settings.num_epochs,
            entropy_coeff=settings.entropy_coeff,
            vf_loss_coeff=0.5,
            clip_param=0.2,
            vf_clip_param=50.0,
        )
        .debugging(seed=settings.seed, log_level="WARN")
    )


def offline_config(
    settings: RLSettings,
    input_path: str,
    *,
    algorithm: Literal["bc", "marwil"] = "marwil",
    beta: float = 1.0,
    spaces: tuple[gym.Space, gym.Space] | None = None,
) -> AlgorithmConfig:
    """BC (``beta = 0``) or MARWIL from episodes written by ``agents.offline``.

    ``spaces`` (observation, action): episodes logged by the live system, which need no
    simulator; without it the spaces are those of the simulator of ``settings.env_config``.
    """
    settings.validate()
    config: AlgorithmConfig = BCConfig() if algorithm == "bc" else MARWILConfig()
    if spaces is None:
        register_env(ENV_NAME, make_env)
        spaces_of = make_env(settings.env_config)
        config = config.environment(
            ENV_NAME,
            env_config=settings.env_config,
            observation_space=spaces_of.observation_space,
            action_space=spaces_of.action_space,
        )
    else:
        config = config.environment(observation_space=spaces[0], action_space=spaces[1])
    config = (
        config.framework("torch")
        .env_runners(num_env_runners=0)
        .learners(num_learners=0)
        .rl_module(rl_module_spec=_module_spec(settings.hidden))
        .offline_data(
            input_=[input_path],  # type: ignore[arg-type]
            input_read_episodes=True,
            input_read_batch_size=64,
            dataset_num_iters_per_learner=1,
            # 2 CPUs: one map_batches actor, or it starves the read task.
            map_batches_kwargs={"concurrency": 1, "num_cpus": 0.5},
            iter_batches_kwargs={"prefetch_batches": 1},
        )
        .training(
            lr=settings.lr,
            gamma=settings.gamma,
            train_batch_size_per_learner=settings.train_batch_size,
        )
        .evaluation(evaluation_interval=0)
        .debugging(seed=settings.seed, log_level="WARN")
    )
    if algorithm == "marwil":
        config.training(beta=beta)  # type: ignore[call-arg]
    return config
