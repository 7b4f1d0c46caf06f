"""Online training with RLlib (PPO) and the export of the trained policy for serving.

:func:`train_ppo` builds the algorithm from :func:`agents.config.ppo_config`, trains for a number
of iterations (or a time budget), logs ``episode_return_mean`` per iteration (and reports it,
with the policy loss, as ``streamrec_agent_*`` metrics), saves an RLlib
checkpoint and exports the plain-torch policy (``agents/policy.py``) with the simulator's item
table, so serving needs neither Ray nor the simulator.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import RLSettings, init_ray, ppo_config
from agents.envs import SessionEnv, make_env
from agents.policy import ItemTable, export_policy
from agents.rl_module import scorer_of
from streamrec import metrics

__all__ = ["TrainOutcome", "item_table", "report_iteration", "train_ppo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    history: list[dict[str, float]]
    checkpoint_dir: Path | None
    policy_dir: Path | None
    seconds: float


def item_table(env: SessionEnv) -> ItemTable:
    """The policy's view of the catalogue: ids, candidate-model item vectors, popularity,
    quality (rows aligned with the simulator's vocabulary)."""
    data = env.data
    return ItemTable(
        item_ids=list(data.vocab.ids),
        vectors=np.asarray(env.source.item_vectors(), dtype=np.float32),
        popularity=np.asarray(data.item_popularity, dtype=np.float32),
        quality=np.asarray(data.item_quality, dtype=np.float32),
    )


def report_iteration(algorithm: str, row: dict[str, float]) -> None:
    """One training iteration into the agent's Prometheus metrics (``streamrec_agent_*``);
    a value the iteration did not give (NaN, e.g. no episode finished yet) leaves its gauge."""
    for gauge, name in (
        (metrics.AGENT_EPISODE_RETURN_MEAN, "episode_return_mean"),
        (metrics.AGENT_POLICY_LOSS, "policy_loss"),
    ):
        value = row.get(name, float("nan"))
        if math.isfinite(value):
            gauge.labels(algorithm).set(value)
    metrics.AGENT_TRAIN_ITERATIONS.labels(algorithm).inc()  # last: a scrape seeing n has n's


def _metric(result: dict[str, Any], name: str) -> float:
    value = result.get("env_runners", {}).get(name, float("nan"))
    return float(value) if value is not None else float("nan")


def train_ppo(
    settings: RLSettings,
    *,
    iterations: int = 20,
    time_budget_s: float | None = None,
    out_dir: str | Path | None = None,
    ray_address: str | None = None,
) -> TrainOutcome:
    """Train PPO; write ``<out_dir>/checkpoint`` (RLlib) and ``<out_dir>/policy`` (export)."""
    init_ray(ray_address)
    algo = ppo_config(settings).build_algo()
    history: list[dict[str, float]] = []
    started = time.monotonic()
    try:
        for iteration in range(1, iterations + 1):
            result = algo.train()
            learner = result.get("learners", {}).get("default_policy", {})
            row = {
                "iteration": float(iteration),
                "episode_return_mean": _metric(result, "episode_return_mean"),
                "episode_len_mean": _metric(result, "episode_len_mean"),
                "policy_loss": float(learner.get("policy_loss", float("nan"))),
                "seconds": time.monotonic() - started,
            }
            history.append(row)
            report_iteration("ppo", row)
            logger.info(
                "iter %d return %.3f len %.2f (%.0fs)",
                iteration,
                row["episode_return_mean"],
                row["episode_len_mean"],
                row["seconds"],
            )
            if time_budget_s is not None and row["seconds"] > time_budget_s:
                break
        checkpoint_dir = policy_dir = None
        if out_dir is not None:
            out = Path(out_dir).resolve()
            out.mkdir(parents=True, exist_ok=True)
            checkpoint_dir = Path(algo.save_to_path(str(out / "checkpoint")))
            env = make_env(settings.env_config)
            policy_dir = export_policy(
                out / "policy",
                scorer_of(algo.get_module()),
                item_table(env),
                n_slots=env.config.n_candidates,
                slate_size=env.config.slate_size,
                horizon=env.config.horizon,
                meta={"algorithm": "PPO", "settings": asdict(settings), "history": history},
            )
            (out / "history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
    finally:
        algo.stop()
    return TrainOutcome(history, checkpoint_dir, policy_dir, time.monotonic() - started)
