"""The simulator: a gymnasium session environment calibrated on the held-out users of a real log.

A *simulator directory* holds everything an environment needs, so RLlib env runners on any node
rebuild the same world from a path::

    <sim_dir>/simdata/      simulator.npz + vocab.json   (agents/envs/data.py)
    <sim_dir>/candidates/   the candidate sequence model checkpoint (streamrec.models format)
    <sim_dir>/response_model/ the response sequence model (all users' full sequences)
    <sim_dir>/response.json calibrated ResponseParams     (agents/envs/calibration.py)
    <sim_dir>/source.json   the log it was built from (a rebuild from another needs force)

:func:`prepare_simulator` builds it from ML-1M or any interaction log; :func:`make_env`
turns an RLlib-style ``env_config`` dict into a :class:`SessionEnv`
(``{"sim_dir": ..., "mode": "session"}``, or ``{"synthetic": True}`` for the tiny test world).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agents.envs.candidates import (
    CandidateSource,
    load_candidate_model,
    response_affinity,
    train_candidate_model,
)
from agents.envs.data import SimulatorData, build_simulator_data, load_simulator_data
from agents.envs.response import ResponseParams
from agents.envs.session_env import SessionEnv, SimConfig, policy_spaces
from streamrec.data.loaders import LogFormat, load_dataset
from streamrec.errors import DataError

__all__ = [
    "ResponseParams",
    "SessionEnv",
    "SimConfig",
    "SimulatorData",
    "load_world",
    "make_env",
    "policy_spaces",
    "prepare_simulator",
]

logger = logging.getLogger(__name__)

_WORLDS: dict[str, tuple[SimulatorData, CandidateSource, ResponseParams]] = {}


def prepare_simulator(
    sim_dir: str | Path,
    *,
    dataset: str = "ml-1m",
    log_format: LogFormat | None = None,
    limit: int | None = None,
    candidate_budget_s: float = 240.0,
    response_budget_s: float = 240.0,
    config: SimConfig | None = None,
    force: bool = False,
) -> Path:
    """Build (or reuse) the simulator directory from ``dataset`` (``ml-1m`` or a log's path,
    read as ``log_format`` says): data, candidate model, calibration.

    A directory built from another log (or format, or limit) is not reused: that raises
    :class:`~streamrec.errors.DataError` unless ``force`` rebuilds it.
    """
    from agents.envs.calibration import calibrate
    from agents.envs.data import save_simulator_data
    from streamrec.models.checkpoint import load_checkpoint

    sim_dir = Path(sim_dir)
    data_dir, model_dir, params_path = _paths(sim_dir)
    source = {
        "dataset": dataset,
        "log_format": (log_format or LogFormat()).to_dict(),
        "limit": limit,
    }
    source_path = sim_dir / "source.json"
    if not force and (data_dir / "simulator.npz").is_file():
        # a directory from before source.json was written was built from ML-1M
        built = (
            json.loads(source_path.read_text())
            if source_path.is_file()
            else {"dataset": "ml-1m", "log_format": {}, "limit": None}
        )
        if built != source:
            raise DataError(
                f"{sim_dir} holds a simulator built from {built}, not {source}; "
                "rebuild it with force (--force) or use another --sim-dir"
            )
    if force or not (data_dir / "simulator.npz").is_file():
        frame = load_dataset(dataset, limit=limit, log_format=log_format)
        data = build_simulator_data(frame)
        save_simulator_data(data, data_dir)
    source_path.write_text(json.dumps(source, indent=2) + "\n")
    data = load_simulator_data(data_dir)
    label = f"{dataset} (simulator training users)"
    if force or not (model_dir / "model.safetensors").is_file():
        train_candidate_model(data, model_dir, time_budget_s=candidate_budget_s, dataset=label)
    candidates = load_candidate_model(model_dir)
    response_dir = sim_dir / "response_model"
    if force or data.user_affinity is None:
        if force or not (response_dir / "model.safetensors").is_file():
            everyone = data.train_sequences + [
                np.concatenate([seen, later])
                for seen, later in zip(data.observed, data.future, strict=True)
            ]
            train_candidate_model(
                dataclasses.replace(data, train_sequences=everyone),
                response_dir,
                time_budget_s=response_budget_s,
                seed=1,
                max_len=50,
                hidden=64,
                dataset=f"{dataset} (all users, response model)",
            )
        affinity = response_affinity(load_checkpoint(response_dir).model, data)
        data = dataclasses.replace(data, user_affinity=affinity)
        save_simulator_data(data, data_dir)
    if force or not params_path.is_file():
        params = calibrate(data, candidates, config=config)
        params.save(params_path)
    return sim_dir


def _paths(sim_dir: Path) -> tuple[Path, Path, Path]:
    return sim_dir / "simdata", sim_dir / "candidates", sim_dir / "response.json"


def load_world(
    sim_dir: str | Path,
) -> tuple[SimulatorData, CandidateSource, ResponseParams]:
    """Data, candidate model and response parameters of a simulator directory (cached)."""
    key = str(Path(sim_dir).resolve())
    if key not in _WORLDS:
        data_dir, model_dir, params_path = _paths(Path(sim_dir))
        _WORLDS[key] = (
            load_simulator_data(data_dir),
            load_candidate_model(model_dir),
            ResponseParams.load(params_path),
        )
    return _WORLDS[key]


def make_env(env_config: Mapping[str, Any] | None = None) -> SessionEnv:
    """An environment from an RLlib ``env_config``.

    Keys: ``sim_dir`` (a prepared simulator directory) or ``synthetic: True`` (tiny random
    world, ``synthetic_seed``, ``synthetic_noise``); ``mode`` (``session``/``bandit``),
    ``n_candidates``, ``slate_size``, ``horizon``, ``users`` (list of user indices),
    ``params`` (overrides of :class:`ResponseParams` fields).
    """
    env_config = dict(env_config or {})
    if env_config.get("synthetic"):
        from agents.envs.synthetic import synthetic_world

        source: CandidateSource
        data, source = synthetic_world(
            seed=int(env_config.get("synthetic_seed", 0)),
            noise=float(env_config.get("synthetic_noise", 0.6)),
        )
        params = ResponseParams(
            click_intercept=-1.0, click_slope=3.0, patience_alpha=2.0, patience_beta=12.0
        )
    else:
        if "sim_dir" not in env_config:
            raise ValueError("env_config needs 'sim_dir' (see prepare_simulator) or 'synthetic'")
        data, source, params = load_world(env_config["sim_dir"])
    if env_config.get("params"):
        params = params.replace(**env_config["params"])
    users = env_config.get("users")
    config = SimConfig(
        n_candidates=int(env_config.get("n_candidates", 20)),
        slate_size=int(env_config.get("slate_size", 3)),
        horizon=int(env_config.get("horizon", 30)),
        mode=env_config.get("mode", "session"),
        users=tuple(int(u) for u in users) if users is not None else None,
    )
    return SessionEnv(data, source, params, config)
