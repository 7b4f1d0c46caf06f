"""RL benchmark: greedy vs RL policy vs random in the ML-1M-calibrated simulator, plus both OPE
validations. Writes bench/results/rl.json and rl.png and prints a one-line summary.

    .venv/bin/python -m agents.cli prepare --sim-dir .streamrec/agents
    .venv/bin/python -m agents.cli train --sim-dir .streamrec/agents --out .streamrec/agents/ppo
    .venv/bin/python bench/rl.py --sim-dir .streamrec/agents --policy .streamrec/agents/ppo/policy

Arms share seeds: session ``i`` of every arm meets the same user with the same patience, so the
RL/greedy ratio's CI comes from a paired bootstrap. ``greedy_fresh`` (the sequence model's top
item among those not yet shown in the session) is reported as a stronger, non-RL baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.envs import make_env  # noqa: E402
from agents.evaluate import (  # noqa: E402
    greedy_dist,
    logging_dist,
    random_dist,
    ratio_ci,
    run_sessions,
    simulator_ope,
    softmax_dist,
)
from agents.ope import obd_validation  # noqa: E402
from agents.policy import load_policy  # noqa: E402

logger = logging.getLogger("bench.rl")


def greedy_fresh_dist(observation: dict[str, np.ndarray]) -> np.ndarray:
    """Top sequence-model candidate among those not shown yet in this session."""
    fresh = observation["action_mask"] * (observation["candidates"][:, 4] == 0)
    probs = np.zeros_like(observation["action_mask"], dtype=np.float64)
    probs[int(np.argmax(fresh > 0)) if fresh.sum() else 0] = 1.0
    return probs


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _plot(result: dict[str, Any], arms: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    names = list(arms)
    means = [arms[n]["mean"] for n in names]
    errors = [
        [arms[n]["mean"] - arms[n]["ci_low"] for n in names],
        [arms[n]["ci_high"] - arms[n]["mean"] for n in names],
    ]
    left.bar(names, means, yerr=errors, capsize=6, color=["#888", "#2a7", "#bbb", "#58a"])
    left.set_title("Mean session engagement (95 % CI)")
    middle.bar(names, [arms[n]["coverage"] for n in names], color="#58a")
    middle.set_title("Catalogue coverage")
    sim = result["sim_ope"]
    labels = ["truth", "IPS", "SNIPS", "DR"]
    values = [sim["true_value"]] + [sim[f"estimate_{k}"]["value"] for k in ("ips", "snips", "dr")]
    lows = [0.0] + [
        sim[f"estimate_{k}"]["value"] - sim[f"estimate_{k}"]["ci_low"]
        for k in ("ips", "snips", "dr")
    ]
    highs = [0.0] + [
        sim[f"estimate_{k}"]["ci_high"] - sim[f"estimate_{k}"]["value"]
        for k in ("ips", "snips", "dr")
    ]
    right.bar(labels, values, yerr=[lows, highs], capsize=6, color=["#2a7", "#bbb", "#999", "#58a"])
    right.set_title(f"Simulator OPE of the RL policy ({sim['n_rounds']:,} logged rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-dir", default=str(ROOT / ".streamrec" / "agents"))
    parser.add_argument("--policy", default=str(ROOT / ".streamrec" / "agents" / "ppo" / "policy"))
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--ope-rounds", type=int, default=50_000)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--skip-obd", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(1)
    env_config = {"sim_dir": str(Path(args.sim_dir).resolve()), "mode": "session"}
    policy = load_policy(args.policy)
    rl = softmax_dist(policy, temperature=0.0)
    started = time.monotonic()
    runs = {}
    for name, dist in [
        ("greedy", greedy_dist),
        ("rl", rl),
        ("random", random_dist),
        ("greedy_fresh", greedy_fresh_dist),
    ]:
        runs[name] = run_sessions(make_env(env_config), dist, args.sessions, seed=args.seed)
        logger.info("%s: %s", name, runs[name].summary())
    arms = {name: run.summary() for name, run in runs.items()}
    ratio, ratio_low, ratio_high = ratio_ci(
        runs["rl"].returns, runs["greedy"].returns, seed=args.seed
    )
    fresh_ratio = ratio_ci(runs["rl"].returns, runs["greedy_fresh"].returns, seed=args.seed)
    sim_ope = simulator_ope(
        env_config,
        rl,
        logger_dist=logging_dist(temperature=1.0, epsilon=0.2),
        n_rounds=args.ope_rounds,
        seed=args.seed,
        n_bootstrap=args.bootstrap // 5,
    )
    logger.info("simulator OPE: %s", sim_ope)
    obd = {} if args.skip_obd else obd_validation(n_bootstrap=args.bootstrap, seed=12345)
    result = {
        "commit": _commit(),
        "sim": {
            **{name: arms[name] for name in ("greedy", "rl", "random", "greedy_fresh")},
            "ratio_rl_greedy": ratio,
            "ratio_ci_low": ratio_low,
            "ratio_ci_high": ratio_high,
            "ratio_rl_greedy_fresh": fresh_ratio[0],
            "ratio_rl_greedy_fresh_ci": [fresh_ratio[1], fresh_ratio[2]],
            "ope_rel_error_dr": sim_ope["rel_error_dr"]["value"],
            "ope_rel_error_snips": sim_ope["rel_error_snips"]["value"],
            "ope_rel_error_ips": sim_ope["rel_error_ips"]["value"],
        },
        "sim_ope": sim_ope,
        "obd": obd,
        "settings": {
            "sessions_per_arm": args.sessions,
            "seed": args.seed,
            "policy": str(Path(args.policy)),
            "policy_meta": {k: v for k, v in policy.meta.items() if k != "history"},
            "rl_arm": "exported policy, argmax (temperature 0)",
            "ope_logger": "0.8 softmax(sequence-model score z) + 0.2 uniform, 20 candidates",
            "ope_target": "the RL arm (argmax), bandit mode (one page per episode)",
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rl.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    _plot(result, arms, out / "rl.png")
    obd_part = (
        f"OBD BTS observed {obd['bts_observed_ctr']:.4f} vs DR {obd['bts_estimated_dr']:.4f} "
        f"(rel err {obd['rel_error_dr']:+.1%}, CI {obd['rel_error_dr_ci'][0]:+.0%}.."
        f"{obd['rel_error_dr_ci'][1]:+.0%})"
        if obd
        else "OBD skipped"
    )
    print(
        f"rl/greedy = {ratio:.3f} (95% CI {ratio_low:.3f}-{ratio_high:.3f}); "
        f"rl {arms['rl']['mean']:.3f} greedy {arms['greedy']['mean']:.3f} "
        f"random {arms['random']['mean']:.3f} greedy_fresh {arms['greedy_fresh']['mean']:.3f}; "
        f"sim OPE rel err DR {sim_ope['rel_error_dr']['value']:+.2%} "
        f"SNIPS {sim_ope['rel_error_snips']['value']:+.2%}; {obd_part}"
    )


if __name__ == "__main__":
    main()
