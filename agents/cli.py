"""``streamrec agent``: prepare the simulator, train (PPO online; BC/MARWIL offline), evaluate,
export, log exploration data, off-policy evaluation.

Mounted by the main CLI as ``streamrec agent``; also runs as ``python -m agents.cli``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from streamrec.log_options import ColumnsOption, NamesOption, SepOption, log_format

__all__ = ["app"]

app = typer.Typer(
    help="RL agent: simulator, training, evaluation, export, OPE.", no_args_is_help=True
)

#: Under $STREAMREC_HOME (default ./.streamrec), like the rest of streamrec's state.
DEFAULT_SIM = Path(os.environ.get("STREAMREC_HOME", ".streamrec")) / "agents"
SimDir = Annotated[Path, typer.Option("--sim-dir", help="Simulator directory (see `prepare`).")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )


def _serve_metrics() -> None:
    """/metrics of the agent on metrics_port + its offset; a bad setting or a taken port is a
    one-line error (exit 2) before Ray starts."""
    from streamrec import metrics
    from streamrec.config import get_settings
    from streamrec.errors import ConfigError, PortInUseError

    try:
        settings = get_settings()
        if settings.metrics_port:
            port = settings.metrics_port + metrics.PROCESS_PORT_OFFSETS["agent"]
            metrics.serve(port, settings.metrics_host)
    except (ConfigError, PortInUseError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _env_config(sim_dir: Path, mode: str, synthetic: bool) -> dict[str, object]:
    if synthetic:
        return {"synthetic": True, "mode": mode}
    return {"sim_dir": str(sim_dir.resolve()), "mode": mode}


@app.command()
def prepare(
    sim_dir: SimDir = DEFAULT_SIM,
    dataset: Annotated[
        str, typer.Option(help="ml-1m or a CSV/TSV/Parquet interaction log (user, item, time).")
    ] = "ml-1m",
    limit: Annotated[int | None, typer.Option(help="Only the first N events by time.")] = None,
    columns: ColumnsOption = None,
    sep: SepOption = None,
    names: NamesOption = None,
    candidate_budget: Annotated[float, typer.Option(help="Candidate model training, s.")] = 240.0,
    response_budget: Annotated[float, typer.Option(help="Response model training, s.")] = 420.0,
    force: bool = False,
    verbose: bool = True,
) -> None:
    """Build the simulator from a real log: split, candidate + response models, calibration.

    Ratings (a value column) set the users' tastes and the items' quality; a log without them
    weighs its event types as the worker's rewards do (see docs/rl.md)."""
    from agents.envs import prepare_simulator
    from agents.envs.response import ResponseParams
    from streamrec.errors import StreamrecError

    _logging(verbose)
    try:
        prepare_simulator(
            sim_dir,
            dataset=dataset,
            log_format=log_format(columns, sep, names),
            limit=limit,
            candidate_budget_s=candidate_budget,
            response_budget_s=response_budget,
            force=force,
        )
    except StreamrecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    params = ResponseParams.load(sim_dir / "response.json")
    typer.echo(json.dumps(params.calibration, indent=2))


@app.command()
def train(
    sim_dir: SimDir = DEFAULT_SIM,
    out: Annotated[Path, typer.Option(help="Output dir (checkpoint/, policy/).")] = DEFAULT_SIM
    / "ppo",
    algo: Annotated[str, typer.Option(help="ppo (online) | marwil | bc (offline).")] = "ppo",
    mode: Annotated[str, typer.Option(help="session | bandit")] = "session",
    iterations: int = 300,
    time_budget: Annotated[float, typer.Option(help="Stop after this many seconds.")] = 1200.0,
    input_path: Annotated[
        Path | None, typer.Option("--input", help="Logged episodes (offline algorithms).")
    ] = None,
    beta: Annotated[float, typer.Option(help="MARWIL beta (0 = BC).")] = 1.0,
    logged_by: Annotated[
        Path | None,
        typer.Option(
            help="Exported policy that served the logs in --input (episodes from `collect`): "
            "gives the spaces and the item table of the export; no simulator needed."
        ),
    ] = None,
    lr: float = 1e-3,
    seed: int = 0,
    ray_address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster instead of a local 2-CPU one.")
    ] = None,
    num_env_runners: int = 0,
    synthetic: Annotated[bool, typer.Option(help="Tiny synthetic world (smoke runs).")] = False,
    verbose: bool = True,
) -> None:
    """Train a policy with RLlib and export it for serving.

    Serves ``/metrics`` (``streamrec_agent_*``: iterations, episode return, policy loss) on
    ``STREAMREC_METRICS_PORT`` + 3 while it trains; ``STREAMREC_METRICS_PORT=0`` turns it off.
    """
    from agents.config import RLSettings

    _logging(verbose)
    _serve_metrics()
    settings = RLSettings(
        env_config=_env_config(sim_dir, mode, synthetic),
        lr=lr,
        seed=seed,
        num_env_runners=num_env_runners,
    )
    if algo == "ppo":
        from agents.train import train_ppo

        outcome = train_ppo(
            settings,
            iterations=iterations,
            time_budget_s=time_budget,
            out_dir=out,
            ray_address=ray_address,
        )
        typer.echo(json.dumps({"policy": str(outcome.policy_dir), "last": outcome.history[-1]}))
    elif algo in ("marwil", "bc"):
        from agents.offline import train_offline

        if input_path is None:
            raise typer.BadParameter("offline algorithms need --input (see `log`, `collect`)")
        from agents.policy import load_policy

        history = train_offline(
            settings,
            input_path,
            algorithm=algo,  # type: ignore[arg-type]
            beta=beta,
            iterations=iterations,
            out_dir=out,
            ray_address=ray_address,
            logged_by=load_policy(logged_by) if logged_by is not None else None,
        )
        typer.echo(json.dumps({"policy": str(out / "policy"), "last": history[-1]}))
    else:
        raise typer.BadParameter(f"unknown algorithm {algo!r}")


@app.command()
def log(
    sim_dir: SimDir = DEFAULT_SIM,
    out: Annotated[Path, typer.Option(help="Episodes directory.")] = DEFAULT_SIM / "logs",
    sessions: int = 2000,
    mode: str = "session",
    epsilon: float = 0.2,
    seed: int = 0,
    synthetic: bool = False,
) -> None:
    """Log an exploring policy's decisions (context, action, propensity, reward) as episodes."""
    from agents.envs import make_env
    from agents.evaluate import logging_dist
    from agents.offline import log_sessions, to_episodes, write_episodes

    config = _env_config(sim_dir, mode, synthetic)
    env = make_env(config)
    steps = log_sessions(config, logging_dist(epsilon=epsilon), sessions, seed=seed)
    write_episodes(to_episodes(steps, env.observation_space, env.action_space), out)
    typer.echo(json.dumps({"episodes": str(out), "steps": len(steps)}))


@app.command()
def collect(
    out: Annotated[Path, typer.Option(help="Episodes directory.")] = DEFAULT_SIM / "collected",
    logged_by: Annotated[
        Path | None, typer.Option(help="The served policy: check the logs fit it.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to read each topic.")] = 60.0,
) -> None:
    """Episodes from the live system: the recommendations topic (the policy's logged decisions)
    joined with the rewards topic, for `train --algo marwil|bc --input OUT --logged-by POLICY`."""
    from agents.offline import collect_episodes
    from agents.policy import load_policy
    from streamrec.config import get_settings

    settings = get_settings()
    try:
        summary = collect_episodes(
            settings.kafka.bootstrap_servers,
            settings.topics.recommendations,
            settings.topics.rewards,
            out,
            logged_by=load_policy(logged_by) if logged_by is not None else None,
            timeout_s=timeout,
            kafka_config=settings.kafka.librdkafka(),
        )
    except (ValueError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(summary))


@app.command()
def evaluate(
    policy: Annotated[Path, typer.Option(help="Exported policy dir.")],
    sim_dir: SimDir = DEFAULT_SIM,
    sessions: int = 300,
    seed: int = 0,
    temperature: float = 0.0,
    synthetic: bool = False,
) -> None:
    """Policy vs greedy vs random in the simulator (same seeds)."""
    from agents.envs import make_env
    from agents.evaluate import greedy_dist, random_dist, ratio_ci, run_sessions, softmax_dist
    from agents.policy import load_policy

    config = _env_config(sim_dir, "session", synthetic)
    arms = {
        "rl": softmax_dist(load_policy(policy), temperature),
        "greedy": greedy_dist,
        "random": random_dist,
    }
    runs = {
        name: run_sessions(make_env(config), dist, sessions, seed=seed)
        for name, dist in arms.items()
    }
    ratio = ratio_ci(runs["rl"].returns, runs["greedy"].returns, seed=seed)
    summary = {name: run.summary() for name, run in runs.items()}
    typer.echo(json.dumps({**summary, "ratio_rl_greedy": ratio}, indent=2))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="RLlib algorithm checkpoint dir.")],
    out: Annotated[Path, typer.Option(help="Export dir.")],
    sim_dir: SimDir = DEFAULT_SIM,
    synthetic: bool = False,
) -> None:
    """Export the RLModule of an RLlib checkpoint as a plain-torch policy."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from agents.envs import make_env
    from agents.policy import export_policy
    from agents.rl_module import scorer_of
    from agents.train import item_table

    path = checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy"
    module = RLModule.from_checkpoint(str(path.resolve()))
    env = make_env(_env_config(sim_dir, "session", synthetic))
    export_policy(
        out,
        scorer_of(module),
        item_table(env),
        n_slots=env.config.n_candidates,
        slate_size=env.config.slate_size,
        horizon=env.config.horizon,
        meta={"checkpoint": str(checkpoint)},
    )
    typer.echo(str(out))


@app.command()
def ope(
    obd: Annotated[bool, typer.Option(help="Open Bandit Dataset validation.")] = True,
    policy: Annotated[Path | None, typer.Option(help="Simulator validation target.")] = None,
    sim_dir: SimDir = DEFAULT_SIM,
    rounds: int = 50_000,
    bootstrap: int = 200,
    seed: int = 0,
) -> None:
    """Off-policy evaluation: OBD (BTS from random logs) and/or the simulator validation."""
    result: dict[str, object] = {}
    if obd:
        from agents.ope import obd_validation

        result["obd"] = obd_validation(n_bootstrap=bootstrap, seed=seed)
    if policy is not None:
        from agents.evaluate import simulator_ope, softmax_dist
        from agents.policy import load_policy

        result["sim"] = simulator_ope(
            _env_config(sim_dir, "bandit", False),
            softmax_dist(load_policy(policy), 0.0),
            n_rounds=rounds,
            seed=seed,
            n_bootstrap=bootstrap,
        )
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    app()
