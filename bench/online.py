"""Online learning on real ML-1M through real Kafka: frozen vs incrementally fine-tuned.

(a) drift: train SASRec offline on the first 80 % of events by time, stream the remaining 20 %
    through Kafka into `streamrec finetune`'s loop (in-process), and compare prequential
    NDCG@10 / HR@10 over the streamed part of the frozen model and of the fine-tuned one as
    served (the promoted versions, each event ranked by the version serving when it arrived).
    Freshness: seconds from an event's arrival in Kafka to the first promoted version trained
    on it.
(b) new items: train on the first 30 %, stream the rest through Kafka to the fine-tuner AND a
    real stream worker serving the registry's promoted model (ranker=model, hot reload). For
    items that first appear after the cut with >= 5 later events: the share that reach some
    top-10 list the worker published within 10 minutes (wall clock of the replay) after their
    5th event arrived, and their prequential HR@10 once they have >= 5 events.

    .venv/bin/python bench/online.py [--parts drift,new-items] [--offline-budget 600]

Writes bench/results/online.json and bench/results/online.png; prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e import git_commit, local_stack, read_all  # noqa: E402
from streamrec.client import ConsumedEvent, EventProducer, create_topics  # noqa: E402
from streamrec.config import Settings, to_env  # noqa: E402
from streamrec.data import load_movielens_1m  # noqa: E402
from streamrec.data.replay import iter_events, replay  # noqa: E402
from streamrec.data.sequences import build_sequences  # noqa: E402
from streamrec.models.registry import ModelRegistry  # noqa: E402
from streamrec.models.train import TrainConfig, train  # noqa: E402
from streamrec.online.finetuner import FineTuner  # noqa: E402
from streamrec.online.learner import LearnerConfig, Observation, OnlineLearner  # noqa: E402


def offline_model(frame: pd.DataFrame, registry: ModelRegistry, budget: float) -> str:
    data = build_sequences(frame)
    config = TrainConfig(
        model="sasrec", time_budget_s=budget, val_users=1000, progress=False, lr_schedule="linear"
    )
    result = train(config, data=data)
    version = registry.save(
        result.model,
        data.vocab,
        {"dataset": "ml-1m-prefix", "metrics": result.test.metrics, "events": len(frame)},
    )
    registry.promote(version)
    return version


def histories_of(frame: pd.DataFrame, max_len: int = 200) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for user, items in frame.groupby("user_id", sort=False)["item_id"]:
        out[str(user)] = list(items)[-max_len:]
    return out


def frozen_baseline(
    registry: ModelRegistry,
    version: str,
    stream: pd.DataFrame,
    histories: dict[str, list[str]],
    context_len: int | None,
) -> OnlineLearner:
    """The same prequential loop with no training and no promotion: the frozen model, ranking
    from the same newest ``context_len`` items as the fine-tuner (None: its whole window)."""
    served = registry.load(version)
    learner = OnlineLearner(
        served.model,
        served.vocab.__class__.from_json(served.vocab.to_json()),
        LearnerConfig(context_len=context_len),
    )
    learner.seed_histories(histories)
    pairs = list(zip(stream["user_id"], stream["item_id"], strict=True))
    for start in range(0, len(pairs), 512):
        learner.observe(pairs[start : start + 512])
    return learner


def run_part(
    name: str, base: Settings, frame: pd.DataFrame, cut: float, args: argparse.Namespace
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"online-{name}-"))
    split = int(len(frame) * cut)
    offline, stream = frame.iloc[:split], frame.iloc[split:]
    if args.limit:
        stream = stream.iloc[: args.limit]
    registry = ModelRegistry(work / "models")
    started = time.time()
    version = offline_model(offline, registry, args.offline_budget)
    train_seconds = time.time() - started
    print(f"[{name}] offline model {version} in {train_seconds:.0f}s; streaming {len(stream)}")
    histories = histories_of(offline)
    settings = base.model_copy(
        update={
            "home": work,
            "topics": base.topics.model_copy(
                update={
                    "events": f"{name}.events",
                    "recommendations": f"{name}.recs",
                    "rewards": f"{name}.rewards",
                    "dead_letters": f"{name}.dlq",
                }
            ),
            "redis": base.redis.model_copy(update={"key_prefix": name}),
            "stream": base.stream.model_copy(
                update={"app_id": f"{name}-worker", "ranker": "model", "recommend_on": ("rating",)}
            ),
            "online": base.online.model_copy(
                update={
                    "registry_dir": registry.root,
                    "group_id": f"{name}-finetune",
                    "promote_every_s": args.promote_every,
                    "checkpoint_every_s": 60.0,
                    "promote_min_events": 500,
                    "window": 3000,
                }
            ),
        }
    )
    create_topics(settings)
    per_event: list[tuple[str, str, float, int]] = []  # item, user, arrival, serving rank
    curve: list[tuple[int, float]] = []

    def observe(batch: list[ConsumedEvent], observation: Observation) -> None:
        for item, rank in zip(batch, observation.serving_ranks, strict=True):
            per_event.append((item.event.item_id, item.event.user_id, item.append_time, int(rank)))
        curve.append((len(per_event), tuner.learner.serving_metrics.ndcg))

    tuner = FineTuner(settings, histories=histories, observer=observe)
    worker = None
    if name == "new-items":
        log = (work / "worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "worker", "--loglevel", "warning"],
            env={**os.environ, **to_env(settings), "STREAMREC_METRICS_PORT": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    thread = threading.Thread(
        target=tuner.run, kwargs={"idle_timeout_s": 20.0}, name="finetuner", daemon=True
    )
    thread.start()
    time.sleep(5)
    stream_start = time.time()
    with EventProducer(settings) as producer:
        replay(
            iter_events(stream, source=f"ml-1m-{name}"),
            producer.send,
            total=len(stream),
            rate=args.rate,
            progress=False,
        )
    thread.join()
    tuner.close()
    stream_seconds = time.time() - stream_start
    learner = tuner.learner
    print(f"[{name}] fine-tuner done: {learner.examples_seen} examples, {learner.steps} steps")

    frozen = frozen_baseline(registry, version, stream, histories, settings.online.context_len)
    # For reference: the frozen model ranking from its whole window (max_len), as the worker
    # serves it. The comparison above uses the fine-tuner's context for both models.
    full = frozen_baseline(registry, version, stream, histories, None)
    result: dict[str, Any] = {
        "cut": cut,
        "offline_events": len(offline),
        "stream_events": len(stream),
        "offline_train_seconds": train_seconds,
        "stream_seconds": stream_seconds,
        "frozen_ndcg@10": frozen.serving_metrics.ndcg_all,
        "frozen_hr@10": frozen.serving_metrics.hr_all,
        "context_len": settings.online.context_len,
        "frozen_full_context_ndcg@10": full.serving_metrics.ndcg_all,
        "incremental_ndcg@10": learner.serving_metrics.ndcg_all,
        "candidate_ndcg@10": learner.candidate_metrics.ndcg_all,
        "promotions": sum(d.action == "promote" for d in tuner.decisions),
        "rollbacks": sum(d.action == "rollback" for d in tuner.decisions),
        "freshness_s": float(np.median(tuner.freshness.samples))
        if tuner.freshness.samples
        else None,
        "freshness_max_s": max(tuner.freshness.samples) if tuner.freshness.samples else None,
        "curve": curve[:: max(1, len(curve) // 200)],
    }
    # Serving metrics restart at each promotion; the as-served mean comes from every event.
    ranks = np.array([rank for *_, rank in per_event])
    result["incremental_ndcg@10"] = float(
        np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean()
    )
    result["incremental_hr@10"] = float((ranks < 10).mean())
    result["ratio"] = result["incremental_ndcg@10"] / result["frozen_ndcg@10"]
    if worker is not None:
        result.update(new_item_report(settings, offline, stream, per_event))
        worker.terminate()
        worker.wait(30)
    return result


def new_item_report(
    settings: Settings,
    offline: pd.DataFrame,
    stream: pd.DataFrame,
    per_event: list[tuple[str, str, float, int]],
) -> dict[str, Any]:
    known = set(offline["item_id"])
    later = stream[~stream["item_id"].isin(known)]
    counts = later["item_id"].value_counts()
    new_items = set(counts[counts >= 5].index)
    fifth_arrival: dict[str, float] = {}
    seen: dict[str, int] = defaultdict(int)
    hits = []
    for item, _user, arrival, rank in per_event:
        if item not in new_items:
            continue
        if seen[item] >= 5:
            hits.append(rank < 10)
        seen[item] += 1
        if seen[item] == 5:
            fifth_arrival[item] = arrival
    recs = read_all(settings, settings.topics.recommendations, 10**9, timeout=60)
    first_shown: dict[str, float] = {}
    for message in recs:
        payload = json.loads(message.value())
        when = message.timestamp()[1] / 1000
        for entry in payload["items"]:
            item = entry["item_id"]
            if item in new_items and (item not in first_shown or when < first_shown[item]):
                first_shown[item] = when
    # Shown at most 10 minutes after the 5th event (or already before it) counts.
    within = [
        item
        for item, fifth in fifth_arrival.items()
        if item in first_shown and first_shown[item] - fifth <= 600
    ]
    return {
        "new_items": len(new_items),
        "new_items_with_5_events": len(fifth_arrival),
        "new_item_share_10min": len(within) / max(1, len(fifth_arrival)),
        "new_item_hr@10": float(np.mean(hits)) if hits else 0.0,
        "recommendations": len(recs),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for axis, (name, part) in zip(axes[0], results.items(), strict=True):
        xs, ys = zip(*part["curve"], strict=True) if part["curve"] else ((), ())
        axis.plot(xs, ys, label="fine-tuned (as served, rolling)")
        axis.axhline(part["frozen_ndcg@10"], color="grey", linestyle="--", label="frozen (mean)")
        axis.set_title(f"{name}: prequential NDCG@10")
        axis.set_xlabel("streamed events")
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--parts", default="drift,new-items")
    parser.add_argument("--offline-budget", type=float, default=600.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=300.0,
        help="replay rate, events/s (keep it below what the fine-tuner sustains: freshness "
        "counts its backlog)",
    )
    parser.add_argument("--promote-every", type=float, default=15.0)
    parser.add_argument("--limit", type=int, default=None, help="stream at most N events")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "online.json")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the parts of an existing results file that this run does not measure",
    )
    args = parser.parse_args()
    frame = load_movielens_1m()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="streamrec-online-") as tmp,
        local_stack(Path(tmp)) as base,
    ):
        for part in args.parts.split(","):
            cut = 0.8 if part == "drift" else 0.3
            results[part] = {"commit": git_commit(), **run_part(part, base, frame, cut, args)}
    if args.update and args.out.is_file():
        kept = json.loads(args.out.read_text()).get("parts", {})
        results = {**{name: part for name, part in kept.items() if name not in results}, **results}
    drift = results.get("drift", {})
    items = results.get("new-items", {})
    summary = {
        "commit": git_commit(),
        "frozen_ndcg@10": drift.get("frozen_ndcg@10"),
        "incremental_ndcg@10": drift.get("incremental_ndcg@10"),
        "ratio": drift.get("ratio"),
        "freshness_s": drift.get("freshness_s"),
        "new_items": items.get("new_items"),
        "new_item_share_10min": items.get("new_item_share_10min"),
        "new_item_hr@10": items.get("new_item_hr@10"),
        "parts": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(
        f"online: drift NDCG@10 frozen {summary['frozen_ndcg@10']} -> incremental "
        f"{summary['incremental_ndcg@10']} (x{summary['ratio']}), freshness "
        f"{summary['freshness_s']} s; new items {summary['new_items']}: "
        f"{summary['new_item_share_10min']} in a top-10 within 10 min, HR@10 "
        f"{summary['new_item_hr@10']} -> {args.out}"
    )


if __name__ == "__main__":
    main()
