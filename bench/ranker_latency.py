"""Latency of :class:`SequenceRanker.rank` (end to end: id lookup, scoring, masking, top-k).

Batch 1 / 64 / 256 at history length 50 and 200, for SASRec and GRU4Rec at ML-1M size
(3,416 items) with the training recipe's architecture (``DEFAULT_MODEL_PARAMS``: what
``streamrec train`` serves, SASRec at hidden 128). Reports p50/p99 per call and ranked
candidates per second (= batch x catalogue size / latency). Writes
``bench/results/ranker_latency.json``::

    .venv/bin/python bench/ranker_latency.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrec.data.sequences import Vocabulary  # noqa: E402
from streamrec.models.base import ModelConfig  # noqa: E402
from streamrec.models.checkpoint import build_model, load_checkpoint  # noqa: E402
from streamrec.models.registry import LoadedModel  # noqa: E402
from streamrec.models.train import DEFAULT_MODEL_PARAMS  # noqa: E402
from streamrec.serving.ranker import History, RankContext  # noqa: E402
from streamrec.serving.sequence_ranker import SequenceRanker  # noqa: E402


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_loaded(kind: str, n_items: int, checkpoint: Path | None) -> LoadedModel:
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)
        return LoadedModel(loaded.model, loaded.vocab, loaded.meta, checkpoint.name)
    torch.manual_seed(0)
    params = DEFAULT_MODEL_PARAMS[kind]
    model = build_model(ModelConfig(kind=kind, n_items=n_items + 1, **params))  # type: ignore[arg-type]
    vocab = Vocabulary(f"item{i}" for i in range(1, n_items + 1))
    return LoadedModel(model.eval(), vocab, {}, "untrained")


def measure(
    ranker: SequenceRanker,
    histories: list[History],
    k: int,
    repeats: int,
) -> list[float]:
    contexts = [RankContext() for _ in histories]
    for _ in range(max(2, repeats // 10)):  # warm-up
        ranker.rank(histories, contexts, k)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        ranker.rank(histories, contexts, k)
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="sasrec,gru4rec")
    parser.add_argument("--items", type=int, default=3416)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="Use this checkpoint (else an untrained model of the same size).",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)  # the machine may be shared: record it
    rng = np.random.default_rng(0)
    repeats = {1: 200, 64: 30, 256: 10}
    rows: list[dict[str, Any]] = []
    for kind in args.models.split(","):
        loaded = make_loaded(kind, args.items, args.checkpoint)
        ranker = SequenceRanker(loaded)
        n_items = loaded.vocab.n_items
        for seq_len in (50, 200):
            for batch in (1, 64, 256):
                histories = [
                    History(
                        items=loaded.vocab.decode(
                            rng.choice(np.arange(1, n_items + 1), seq_len, replace=False).tolist()
                        )
                    )
                    for _ in range(batch)
                ]
                timings = np.array(measure(ranker, histories, args.k, repeats[batch]))
                p50, p99 = np.percentile(timings, 50), np.percentile(timings, 99)
                rows.append(
                    {
                        "model": kind if args.checkpoint is None else ranker.name,
                        "hidden": loaded.model.config.hidden,
                        "n_layers": loaded.model.config.n_layers,
                        "batch": batch,
                        "seq_len": seq_len,
                        "calls": len(timings),
                        "p50_ms": round(p50 * 1e3, 3),
                        "p99_ms": round(p99 * 1e3, 3),
                        "requests_per_s": round(batch / p50, 1),
                        "ranked_candidates_per_s": round(batch * n_items / p50),
                    }
                )
                print(f"  {rows[-1]}", file=sys.stderr)
    results = {
        "commit": git_commit(),
        "torch": torch.__version__,
        "threads": args.threads,
        "catalogue_items": args.items,
        "k": args.k,
        "note": "end-to-end SequenceRanker.rank on CPU, seen items masked, no explanations",
        "load_average_1m_at_start": load_at_start,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranker_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    best = {(r["model"], r["batch"], r["seq_len"]): r for r in rows}
    summary = " ".join(
        f"{model} b{batch}/L{seq_len} p50={row['p50_ms']:.1f}ms p99={row['p99_ms']:.1f}ms"
        for (model, batch, seq_len), row in best.items()
        if batch in (1, 256)
    )
    print(f"ranker latency | {summary}")


if __name__ == "__main__":
    main()
