"""Offline RL from logged decisions: BC and MARWIL (RLlib) on (context, action, propensity, reward).

A logged decision (:class:`LoggedStep`) is what the serving path knows when a page was shown
and what came back: the policy's observation (candidate features, session context, mask), the
action (index of the candidate put on top), its propensity, and the attributed reward. Steps are
grouped into episodes by ``session_id`` (ordered by ``step``), turned into RLlib
``SingleAgentEpisode`` objects (the propensity is kept as ``action_logp``) and written as the
msgpack-in-parquet episodes RLlib's offline pipeline reads (``input_read_episodes=True``).

Two sources of logged steps:

* :func:`log_sessions` — an exploring policy in the simulator (OPE validation, tests);
* :func:`steps_from_logs` — the live system: the worker serving the RL policy writes each page's
  ``decision`` (observation, top slot, propensity) into its recommendation record, and the
  rewards topic carries what each ``rec_id`` earned; :func:`read_topic` reads both topics
  (``streamrec agent collect``). The features are the ones the policy served with, so there is
  no train/serve skew.
"""

from __future__ import annotations

import json
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
from agents.envs import make_env, policy_spaces
from agents.evaluate import DistFn
from agents.policy import N_FEATURES, ExportedPolicy

__all__ = [
    "LoggedStep",
    "collect_episodes",
    "log_sessions",
    "read_topic",
    "steps_from_logs",
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


def steps_from_logs(
    recommendations: Iterable[Mapping[str, Any]], rewards: Iterable[Mapping[str, Any]]
) -> list[LoggedStep]:
    """The worker's logged decisions joined with their rewards, one step per page.

    ``recommendations`` are recommendation records (dicts as on the topic); those without a
    ``decision`` (not served by a logging policy) or without a session are skipped. A page's
    reward is the sum of the rewards attributed to its ``rec_id`` (any position: the env's reward
    is the whole page's engagement). A session's pages are ordered by ``created_at`` and become
    one episode; the last page is *truncated*, not terminated (the log cannot tell whether the
    user left or just has not come back yet).

    Raises:
        ValueError: if the decisions disagree on ``n_slots`` (logs of different policies).
    """
    earned: dict[str, float] = defaultdict(float)
    for reward in rewards:
        earned[str(reward["rec_id"])] += float(reward["reward"])
    pages: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    n_slots: set[int] = set()
    for record in recommendations:
        decision = record.get("decision")
        session = record.get("session_id") or record.get("user_id")
        if not decision or not session:
            continue
        n_slots.add(int(decision["n_slots"]))
        created = str(record.get("created_at") or "")
        pages[str(session)].append((created, str(record["rec_id"]), decision))
    if len(n_slots) > 1:
        raise ValueError(f"decisions of policies with different slot counts: {sorted(n_slots)}")
    steps: list[LoggedStep] = []
    for session, items in pages.items():
        items.sort(key=lambda page: page[0])
        for index, (_, rec_id, decision) in enumerate(items):
            steps.append(
                LoggedStep(
                    session_id=session,
                    step=index,
                    observation=_observation(decision),
                    action=int(decision["action"]),
                    propensity=float(decision["propensity"]),
                    reward=earned.get(rec_id, 0.0),
                    terminated=False,
                )
            )
    return steps


def _observation(decision: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A logged decision back to the policy's padded observation."""
    rows = np.asarray(decision["candidates"], dtype=np.float32).reshape(-1, N_FEATURES)
    n_slots = int(decision["n_slots"])
    if not 0 < len(rows) <= n_slots or not 0 <= int(decision["action"]) < len(rows):
        raise ValueError(f"malformed decision: {len(rows)} candidates, {n_slots} slots")
    candidates = np.zeros((n_slots, N_FEATURES), dtype=np.float32)
    candidates[: len(rows)] = rows
    mask = np.zeros(n_slots, dtype=np.float32)
    mask[: len(rows)] = 1.0
    context = np.asarray(decision["context"], dtype=np.float32)
    return {"candidates": candidates, "context": context, "action_mask": mask}


def read_topic(
    bootstrap: str, topic: str, *, timeout_s: float = 30.0, config: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every record currently on ``topic`` (JSON values), read from the start of each partition
    to the high watermark seen at the call. Assigns partitions directly: no consumer group, no
    committed offsets, so collecting never disturbs the services' groups.

    Raises:
        TimeoutError: when the records up to the watermarks cannot be read within ``timeout_s``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "streamrec-collect",
            "enable.auto.commit": False,
            **(config or {}),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        remaining: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                remaining[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(remaining)} not read to the end")
            for message in consumer.consume(500, timeout=1.0):
                if message.error():
                    raise KafkaException(message.error())
                partition, offset = message.partition(), message.offset()
                if partition not in remaining or offset is None:
                    continue
                if offset < remaining[partition]:
                    records.append(json.loads(message.value() or b"null"))
                if offset + 1 >= remaining[partition]:
                    del remaining[partition]
        return records
    finally:
        consumer.close()


def collect_episodes(
    bootstrap: str,
    recommendations_topic: str,
    rewards_topic: str,
    out_dir: str | Path,
    *,
    logged_by: ExportedPolicy | None = None,
    timeout_s: float = 60.0,
    kafka_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read both topics to their current ends, join, write RLlib episodes to ``out_dir``.

    Raises:
        ValueError: when there is no logged decision to learn from, or the decisions do not fit
            ``logged_by`` (a different slot count).
    """
    recommendations = read_topic(
        bootstrap, recommendations_topic, timeout_s=timeout_s, config=kafka_config
    )
    rewards = read_topic(bootstrap, rewards_topic, timeout_s=timeout_s, config=kafka_config)
    steps = steps_from_logs(recommendations, rewards)
    if not steps:
        raise ValueError(
            f"no logged decisions among {len(recommendations)} records on "
            f"{recommendations_topic!r}: serve with ranker=policy and policy_log_decisions=true"
        )
    n_slots = len(steps[0].observation["action_mask"])
    if logged_by is not None and logged_by.n_slots != n_slots:
        raise ValueError(f"decisions have {n_slots} slots, the policy {logged_by.n_slots}")
    observation_space, action_space = policy_spaces(n_slots)
    episodes = to_episodes(steps, observation_space, action_space)
    write_episodes(episodes, out_dir)
    rewarded = sum(1 for step in steps if step.reward > 0)
    return {
        "episodes": str(out_dir),
        "recommendations": len(recommendations),
        "rewards": len(rewards),
        "steps": len(steps),
        "sessions": len(episodes),
        "rewarded_steps": rewarded,
        "n_slots": n_slots,
    }


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
    logged_by: ExportedPolicy | None = None,
) -> list[dict[str, float]]:
    """BC/MARWIL on logged episodes; exports the policy to ``<out_dir>/policy``.

    ``logged_by``: the policy that served the logs (episodes from :func:`steps_from_logs`). Its
    slot count gives the spaces and its item table and page settings go into the export, so the
    new policy computes the features it was trained on. Without it the episodes are simulator
    logs and the simulator of ``settings.env_config`` provides both.
    """
    from agents.policy import export_policy
    from agents.rl_module import scorer_from_weights
    from agents.train import item_table, report_iteration

    init_ray(ray_address)
    spaces = policy_spaces(logged_by.n_slots) if logged_by is not None else None
    algo = offline_config(
        settings, str(Path(input_path).resolve()), algorithm=algorithm, beta=beta, spaces=spaces
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
            report_iteration(algorithm, row)
            logger.info("%s iter %d policy loss %.4f", algorithm, iteration, row["policy_loss"])
        if out_dir is not None:
            if algo.learner_group is None:
                raise RuntimeError("the offline algorithm has no learner group")
            scorer = scorer_from_weights(
                algo.learner_group.get_weights()["default_policy"], settings.hidden
            )
            meta = {"algorithm": algorithm.upper(), "beta": beta, "history": history}
            if logged_by is not None:
                export_policy(
                    Path(out_dir) / "policy",
                    scorer,
                    logged_by.items,
                    n_slots=logged_by.n_slots,
                    slate_size=logged_by.slate_size,
                    horizon=logged_by.horizon,
                    meta={**meta, "logged_by": logged_by.meta.get("version", "")},
                )
            else:
                env = make_env(settings.env_config)
                export_policy(
                    Path(out_dir) / "policy",
                    scorer,
                    item_table(env),
                    n_slots=env.config.n_candidates,
                    slate_size=env.config.slate_size,
                    horizon=env.config.horizon,
                    meta=meta,
                )
    finally:
        algo.stop()
    return history
