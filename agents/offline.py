"""Offline RL from logged decisions: BC and MARWIL (RLlib) on (context, action, propensity, reward).

A logged decision (:class:`LoggedStep`) is what the serving path knows when a page was shown
and what came back: the policy's observation (candidate features, session context, mask), the
action (index of the candidate put on top), its propensity, and the attributed reward. Steps are
grouped into episodes by ``session_id`` (ordered by ``step``), turned into RLlib
``SingleAgentEpisode`` objects (the propensity is kept as ``action_logp``) and written as the
msgpack-in-parquet episodes RLlib's offline pipeline reads (``input_read_episodes=True``).

:func:`steps_from_records` accepts reward-topic-shaped dicts (``session_id``, ``position``,
``reward``, ``propensity``) that additionally carry ``observation`` and ``step``; the current
recommendation/reward schema does not carry the policy's observation yet (see docs/rl.md), so
the simulator logs (:func:`log_sessions`) are the data used in this repository.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents.config import RLSettings, init_ray, offline_config
from agents.envs import make_env
from agents.evaluate import DistFn

__all__ = [
    "LoggedStep",
    "log_sessions",
    "steps_from_records",
    "to_episodes",
    "train_offline",
    "write_episodes",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggedStep:
    session_id: str
    step: int
    observation: dict[str, np.ndarray]
    action: int
    propensity: float
    reward: float
    terminated: bool


def log_sessions(
    env_config: Mapping[str, Any], logger_dist: DistFn, n_sessions: int, *, seed: int = 0
) -> list[LoggedStep]:
    """Run the exploring ``logger_dist`` in the simulator and log every decision."""
    env = make_env(env_config)
    rng = np.random.default_rng(seed)
    steps: list[LoggedStep] = []
    for index in range(n_sessions):
        observation, _ = env.reset(seed=seed + index)
        done, step = False, 0
        while not done:
            probs = logger_dist(observation)
            action = int(rng.choice(len(probs), p=probs))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            steps.append(
                LoggedStep(
                    f"s{index}",
                    step,
                    observation,
                    action,
                    float(probs[action]),
                    float(reward),
                    bool(terminated),
                )
            )
            observation, step = next_observation, step + 1
    return steps


def steps_from_records(records: Iterable[Mapping[str, Any]]) -> list[LoggedStep]:
    """Reward-topic-shaped records (plus ``observation`` and ``step``) to logged steps."""
    steps = []
    for record in records:
        observation = {k: np.asarray(v, dtype=np.float32) for k, v in record["observation"].items()}
        steps.append(
            LoggedStep(
                session_id=str(record["session_id"]),
                step=int(record["step"]),
                observation=observation,
                action=int(record["position"] if "action" not in record else record["action"]),
                propensity=float(record.get("propensity") or 1.0),
                reward=float(record["reward"]),
                terminated=bool(record.get("terminated", False)),
            )
        )
    return steps


def to_episodes(
    steps: Iterable[LoggedStep], observation_space: gym.Space, action_space: gym.Space
) -> list[Any]:
    """Group by session, order by step, build ``SingleAgentEpisode`` objects."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    sessions: dict[str, list[LoggedStep]] = defaultdict(list)
    for step in steps:
        sessions[step.session_id].append(step)
    episodes = []
    for session_id, items in sessions.items():
        items.sort(key=lambda s: s.step)
        observations = [s.observation for s in items] + [items[-1].observation]
        episode = SingleAgentEpisode(
            id_=session_id,
            observations=observations,
            actions=[s.action for s in items],
            rewards=[s.reward for s in items],
            extra_model_outputs={
                Columns.ACTION_LOGP: [float(np.log(max(s.propensity, 1e-12))) for s in items]
            },
            terminated=items[-1].terminated,
            truncated=not items[-1].terminated,
            observation_space=observation_space,
            action_space=action_space,
            len_lookback_buffer=0,
        )
        episodes.append(episode.to_numpy())
    return episodes


def write_episodes(episodes: Iterable[Any], directory: str | Path) -> Path:
    """Episodes as RLlib writes them: one parquet column ``item`` of msgpack'ed states."""
    import msgpack
    import msgpack_numpy

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    packed = [msgpack.packb(e.get_state(), default=msgpack_numpy.encode) for e in episodes]
    pq.write_table(
        pa.table({"item": pa.array(packed, type=pa.binary())}), directory / "episodes.parquet"
    )
    return directory


def train_offline(
    settings: RLSettings,
    input_path: str | Path,
    *,
    algorithm: Literal["bc", "marwil"] = "marwil",
    beta: float = 1.0,
    iterations: int = 10,
    out_dir: str | Path | None = None,
    ray_address: str | None = None,
) -> list[dict[str, float]]:
    """BC/MARWIL on logged episodes; exports the policy to ``<out_dir>/policy``."""
    from agents.policy import export_policy
    from agents.rl_module import scorer_from_weights
    from agents.train import item_table

    init_ray(ray_address)
    algo = offline_config(
        settings, str(Path(input_path).resolve()), algorithm=algorithm, beta=beta
    ).build_algo()
    history = []
    started = time.monotonic()
    try:
        for iteration in range(1, iterations + 1):
            result = algo.train()
            learner = result.get("learners", {}).get("default_policy", {})
            row = {
                "iteration": float(iteration),
                "policy_loss": float(learner.get("policy_loss", float("nan"))),
                "seconds": time.monotonic() - started,
            }
            history.append(row)
            logger.info("%s iter %d policy loss %.4f", algorithm, iteration, row["policy_loss"])
        if out_dir is not None:
            if algo.learner_group is None:
                raise RuntimeError("the offline algorithm has no learner group")
            env = make_env(settings.env_config)
            export_policy(
                Path(out_dir) / "policy",
                scorer_from_weights(
                    algo.learner_group.get_weights()["default_policy"],
                    settings.hidden,
                ),
                item_table(env),
                n_slots=env.config.n_candidates,
                slate_size=env.config.slate_size,
                horizon=env.config.horizon,
                meta={"algorithm": algorithm.upper(), "beta": beta, "history": history},
            )
    finally:
        algo.stop()
    return history
