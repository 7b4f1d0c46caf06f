"""End-to-end benchmark of the stream worker on real Kafka + Redis with real ML-1M events.

One run measures (see the project's "Stream worker" issue):
  (a) stage ceilings at the worker's batch size, each alone:
      kafka  - raw confluent-kafka consume -> produce pass-through, events -> output topic
      redis  - the worker's state round trips for a batch (apply, carrying the previous
               batch's shown pages and delivery marks, + popular lists when due)
      ranker - the ranker alone on the same histories
      ceiling = min of the three
  (b) a naive worker: the same worker one event at a time, end to end (batch size 1: per-event
      Redis calls and ranking; no delivery pipelining: each event's outputs are acknowledged
      by the broker before the next event is read)
  (c) streamrec's worker: events/s; event -> recommendation latency p50/p95/p99 at half of its
      max rate (event produce time -> recommendation append time, LogAppendTime); RSS; CPU s
  (d) 1 vs 2 workers on a 4-partition topic: efficiency = events per worker-CPU-second with 2
      workers / with 1, and the raw speed-up.
Plus the raw Kafka pass-through latency p99 at the same rate (the p99 budget's reference) and a
cProfile of the worker's per-batch hot path.

    .venv/bin/python bench/e2e.py [--events 60000] [--repeats 3] [--out bench/results/e2e.json]

Each ceiling, worker and latency stage runs --repeats times on the same stack and the medians
are reported (all runs are in the JSON under "runs"): on this shared 2-core box one run of the
same code varies by ~20 % in throughput and by several times in p99.

Starts its own local stack (temporary home, free loopback ports) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
#: Latency samples from the first seconds after the consumers start are left out (warm-up:
#: fetch positions, connections, the broker's JIT).
WARMUP_S = 2.0
sys.path.insert(0, str(ROOT))

from streamrec.config import Settings, to_env  # noqa: E402
from streamrec.data import load_movielens_1m  # noqa: E402
from streamrec.data.replay import iter_events  # noqa: E402
from streamrec.events import decode_event, encode, parse_event  # noqa: E402
from streamrec.serving.factory import build_ranker  # noqa: E402
from streamrec.serving.ranker import History, RankContext  # noqa: E402
from streamrec.serving.service import Recommender  # noqa: E402
from streamrec.stack import Stack, free_port  # noqa: E402
from streamrec.state.keys import shown_scope  # noqa: E402
from streamrec.state.store import Page, StateStore  # noqa: E402
from streamrec.stream.processor import BatchProcessor  # noqa: E402


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@contextmanager
def local_stack(home: Path) -> Iterator[Settings]:
    settings = Settings(
        home=home,
        cache_dir=Path(os.environ.get("STREAMREC_CACHE_DIR", ROOT / ".streamrec" / "cache")),
        stack={
            "kafka_port": free_port(),
            "controller_port": free_port(),
            "redis_port": free_port(),
            "kafka_heap": "768m",
        },
        metrics_port=0,
    )
    stack = Stack(settings)
    stack.up()
    try:
        yield settings
    finally:
        stack.down()


def fresh(base: Settings, tag: str) -> Settings:
    """Settings with their own topics (outputs stamped with LogAppendTime) and key prefix, on
    an emptied Redis with no rewrite or snapshot running: every stage starts from the same
    state, not from the copies earlier stages left (with --repeats 3 that was ~600,000 events'
    state by the last latency run, and AOF rewrites of it on the same two cores)."""
    empty_redis(base)
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(
        update={
            "topics": base.topics.model_copy(
                update={
                    "events": f"{run}.events",
                    "recommendations": f"{run}.recs",
                    "rewards": f"{run}.rewards",
                    "dead_letters": f"{run}.dlq",
                    "partitions": 4,
                    "output_partitions": 4,
                }
            ),
            "redis": base.redis.model_copy(update={"key_prefix": run}),
            "stream": base.stream.model_copy(update={"app_id": f"{run}-worker"}),
        }
    )
    admin = AdminClient(settings.kafka.librdkafka())
    append_time = {"message.timestamp.type": "LogAppendTime"}
    topics = [
        NewTopic(settings.topics.events, 4, 1),
        NewTopic(settings.topics.recommendations, 4, 1, config=append_time),
        NewTopic(settings.topics.rewards, 4, 1),
        NewTopic(settings.topics.dead_letters, 4, 1),
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)
    return settings


def empty_redis(settings: Settings, timeout: float = 120.0) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        client.flushdb()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if not (info.get("aof_rewrite_in_progress") or info.get("rdb_bgsave_in_progress")):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Redis still rewriting its AOF / saving after {timeout}s")
    finally:
        client.close()


def payloads(n: int) -> list[dict[str, Any]]:
    frame = load_movielens_1m(limit=n)
    return list(iter_events(frame, source="ml-1m", as_type="click"))


def produce(
    settings: Settings, topic: str, events: list[dict[str, Any]], rate: float | None = None
) -> dict[str, float]:
    """Produce events (optionally paced); returns event_id -> CreateTime (seconds)."""
    created: dict[str, float] = {}

    def delivered(event_id: str, err: Any, msg: Any) -> None:
        if err is None:
            created[event_id] = msg.timestamp()[1] / 1000

    producer = Producer(
        {**settings.kafka.librdkafka(), "linger.ms": 2, "enable.idempotence": True, "acks": "all"}
    )
    # connect, fetch the topic's metadata and the idempotent producer id before the clock
    # starts, so the first events do not carry the producer's own start-up as latency
    producer.list_topics(topic, timeout=30)
    producer.flush(30)
    # encode up front: the load generator shares the box's two cores with what it measures
    records = []
    for payload in events:
        event = parse_event(payload)
        records.append(
            (encode(event), event.key.encode(), functools.partial(delivered, event.event_id))
        )
    start = time.perf_counter()
    for index, (value, key, report) in enumerate(records):
        if rate:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return created


def read_all(settings: Settings, topic: str, expected: int, timeout: float) -> list[Any]:
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(2000, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return out


# --- (a) stage ceilings ----------------------------------------------------------------------


def kafka_passthrough(
    settings: Settings, n: int, batch: int, stop: threading.Event | None = None
) -> float:
    """consume -> produce loop; returns events/s over the n events (or until ``stop``)."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"{settings.stream.app_id}-raw",
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({**settings.kafka.librdkafka(), "linger.ms": 2, "acks": "all"})
    consumer.subscribe([settings.topics.events])
    seen = 0
    first = None
    try:
        while seen < n and not (stop and stop.is_set()):
            messages = consumer.consume(batch, settings.stream.batch_max_wait_ms / 1000)
            for msg in messages:
                if msg.error():
                    continue
                if first is None:
                    first = time.perf_counter()
                created = str(msg.timestamp()[1] / 1000).encode()
                producer.produce(
                    settings.topics.recommendations,
                    msg.value(),
                    key=msg.key(),
                    headers=[("src_ts", created)],
                )
                seen += 1
            producer.poll(0)
        producer.flush(30)
    finally:
        consumer.close()
    return seen / (time.perf_counter() - (first or time.perf_counter()))


async def redis_stage(settings: Settings, events: list[Any], batch: int) -> float:
    state = StateStore.from_settings(settings.redis)
    k = settings.stream.top_k
    # The same reads as the worker: popular lists through the recommender's snapshot.
    recommender = Recommender(state, build_ranker(settings))
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        outcomes = await state.apply(chunk, attribute={"click"})
        longest = max(len(o.user_items) for o in outcomes)
        popular = await recommender.popular_lists(
            [(time.gmtime(e.ts).tm_hour, None) for e in chunk], k + longest
        )
        top = [item for item, _ in popular[(None, None)][:k]]
        # As the worker: what was shown, and (once delivered) the confirmations, are written
        # with the next batch's apply.
        state.defer_shown(
            {
                shown_scope(e.session_id, e.user_id): [
                    Page(f"r{e.event_id}", top, None, "greedy", "v", e.ts)
                ]
                for e in chunk
            }
        )
        state.defer_confirm([e.event_id for e in chunk])
    await state.flush()
    elapsed = time.perf_counter() - started
    await state.close()
    return len(events) / elapsed


def ranker_stage(settings: Settings, events: list[Any], batch: int) -> float:
    ranker = build_ranker(settings)
    popular = [(f"item{i}", -i * 0.01) for i in range(600)]
    histories: dict[str, list[str]] = {}
    requests = []
    for event in events:
        history = histories.setdefault(event.user_id, [])
        history.append(event.item_id)
        requests.append(History(list(history[-200:]), user_id=event.user_id))
    contexts = [RankContext(hour=1, popular=popular)] * batch
    started = time.perf_counter()
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        ranker.rank(chunk, contexts[: len(chunk)], settings.stream.top_k)
    return len(requests) / (time.perf_counter() - started)


def profile_hot_path(settings: Settings, events: list[Any], batch: int) -> list[dict[str, Any]]:
    """cProfile of decode + BatchProcessor.process on batches (what the agent does per batch)."""
    raw = [encode(e) for e in events]

    async def run() -> None:
        state = StateStore.from_settings(settings.redis)
        processor = BatchProcessor(
            state, Recommender(state, build_ranker(settings)), settings.stream
        )
        for start in range(0, len(raw), batch):
            decoded = [decode_event(r) for r in raw[start : start + batch]]
            result = await processor.process(decoded)
            [record.to_json() for _, record in result.recommendations]
        await state.close()

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run())
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_, _, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}:{func}",
                "self_share": tottime / total,
                "cum_share": cumtime / total,
            }
        )
    rows.sort(key=lambda r: r["self_share"], reverse=True)
    return rows[:15]


# --- (b, c, d) worker processes --------------------------------------------------------------


@contextmanager
def workers(
    settings: Settings, count: int, logs: Path, **env: str
) -> Iterator[list[psutil.Process]]:
    procs = []
    for index in range(count):
        log = (logs / f"{settings.stream.app_id}-{index}.log").open("ab")
        full_env = {**os.environ, **to_env(settings), "STREAMREC_METRICS_PORT": "0", **env}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "streamrec", "worker", "--loglevel", "warning"],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        wait_for_group(settings.stream.app_id, count, settings)
        yield [psutil.Process(p.pid) for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_group(group_id: str, count: int, settings: Settings, timeout: float = 120) -> None:
    """Return once ``count`` members of ``group_id`` hold partitions in a stable group."""
    admin = AdminClient(settings.kafka.librdkafka())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group = admin.describe_consumer_groups([group_id])[group_id]
        try:
            description = group.result(10)
        except (KafkaException, TimeoutError):  # coordinator still loading: ask again
            time.sleep(0.5)
            continue
        members = [m for m in description.members if m.assignment.topic_partitions]
        if len(members) == count and str(description.state).endswith("STABLE"):
            time.sleep(1.0)
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} consumers did not join {group_id} within {timeout:.0f} s")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def run_workers(
    base: Settings, tag: str, events: list[dict[str, Any]], count: int, logs: Path, **env: str
) -> dict[str, float]:
    """Max-rate run: produce everything as fast as possible, measure from rec append times."""
    settings = fresh(base, tag)
    with workers(settings, count, logs, **env) as procs:
        cpu_before = cpu_seconds(procs)
        produce(settings, settings.topics.events, events)
        recs = read_all(settings, settings.topics.recommendations, len(events), timeout=900)
        cpu = cpu_seconds(procs) - cpu_before
        rss = max(p.memory_info().rss for p in procs) / 2**20
    stamps = sorted(m.timestamp()[1] / 1000 for m in recs)
    elapsed = stamps[-1] - stamps[0]
    return {
        "events": len(recs),
        "eps": (len(recs) - 1) / elapsed,
        "cpu_s": cpu,
        "eps_per_cpu_s": len(recs) / cpu,
        "rss_mb": rss,
    }


def latency_worker(
    base: Settings, events: list[dict[str, Any]], rate: float, logs: Path
) -> dict[str, float]:
    settings = fresh(base, "lat")
    with workers(settings, 1, logs) as procs:
        cpu_before = cpu_seconds(procs)
        created = produce(settings, settings.topics.events, events, rate=rate)
        recs = read_all(settings, settings.topics.recommendations, len(events), timeout=300)
        cpu = cpu_seconds(procs) - cpu_before
    from streamrec.events import Recommendation

    warm = min(created.values()) + WARMUP_S
    latencies = []
    for msg in recs:
        rec = Recommendation.model_validate_json(msg.value())
        sent = created.get(rec.event_id or "")
        if sent is not None and sent >= warm:
            latencies.append(msg.timestamp()[1] / 1000 - sent)
    return {**_percentiles(latencies), "cpu_s": cpu, "cpu_us_per_event": 1e6 * cpu / len(events)}


def latency_passthrough(
    base: Settings, events: list[dict[str, Any]], rate: float, batch: int
) -> dict[str, float]:
    settings = fresh(base, "rtt")
    stop = threading.Event()
    thread = threading.Thread(
        target=kafka_passthrough, args=(settings, len(events), batch, stop), daemon=True
    )
    thread.start()
    time.sleep(3)  # join the group before producing
    produce(settings, settings.topics.events, events, rate=rate)
    out = read_all(settings, settings.topics.recommendations, len(events), timeout=120)
    stop.set()
    thread.join(30)
    sent = [float(dict(m.headers())["src_ts"].decode()) for m in out]
    warm = min(sent) + WARMUP_S
    latencies = [m.timestamp()[1] / 1000 - s for m, s in zip(out, sent, strict=True) if s >= warm]
    return _percentiles(latencies)


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) * 1000
    return {
        "n": float(len(array)),
        "p50_ms": float(np.percentile(array, 50)),
        "p95_ms": float(np.percentile(array, 95)),
        "p99_ms": float(np.percentile(array, 99)),
        "mean_ms": float(statistics.fmean(array)),
    }


def median_run(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    """The run with the median ``key`` (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run[key])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60000, help="events per max-rate run")
    parser.add_argument("--naive-events", type=int, default=8000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each ceiling, worker and latency stage; the medians are reported "
        "(the naive worker runs once: it is ~50x slower and its ratio far from the target)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e.json")
    args = parser.parse_args()
    repeats = max(1, args.repeats)

    all_events = payloads(args.events)
    typed = [parse_event(p) for p in all_events]
    results: dict[str, Any] = {
        "commit": git_commit(),
        "events": args.events,
        "repeats": repeats,
        "runs": {},
    }
    runs = results["runs"]
    with (
        tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp,
        local_stack(Path(tmp)) as base,
    ):
        logs = Path(tmp) / "logs"
        logs.mkdir()
        batch = base.stream.batch_size
        results["batch_size"] = batch
        results["ranker"] = build_ranker(base).version
        results["event_loop"] = base.stream.event_loop

        ceilings: dict[str, list[float]] = {"kafka": [], "redis": [], "ranker": []}
        for _ in range(repeats):
            settings = fresh(base, "raw")
            produce(settings, settings.topics.events, all_events)
            ceilings["kafka"].append(kafka_passthrough(settings, len(all_events), batch))
            ceilings["redis"].append(asyncio.run(redis_stage(fresh(base, "redis"), typed, batch)))
            ceilings["ranker"].append(ranker_stage(base, typed, batch))
        for stage, values in ceilings.items():
            runs[f"{stage}_ceiling_eps"] = values
            results[f"{stage}_ceiling_eps"] = statistics.median(values)
        results["ceiling_eps"] = min(
            results["kafka_ceiling_eps"],
            results["redis_ceiling_eps"],
            results["ranker_ceiling_eps"],
        )
        print(
            f"ceilings (median of {repeats}): {results['kafka_ceiling_eps']:.0f} kafka, "
            f"{results['redis_ceiling_eps']:.0f} redis, {results['ranker_ceiling_eps']:.0f} ranker"
        )

        naive = run_workers(
            base,
            "naive",
            all_events[: args.naive_events],
            1,
            logs,
            STREAMREC_STREAM__BATCH_SIZE="1",
            STREAMREC_STREAM__MAX_INFLIGHT_BATCHES="0",
        )
        results["naive"] = naive
        results["naive_eps"] = naive["eps"]
        print(f"naive: {naive['eps']:.0f} ev/s")

        # one and two workers alternate, so a slow spell of the shared box hits both
        ones, twos = [], []
        for _ in range(repeats):
            ones.append(run_workers(base, "one", all_events, 1, logs))
            twos.append(run_workers(base, "two", all_events, 2, logs))
            print(f"streamrec: {ones[-1]['eps']:.0f} ev/s, 2 workers {twos[-1]['eps']:.0f}")
        runs["one_worker"], runs["two_workers"] = ones, twos
        one, two = median_run(ones, "eps"), median_run(twos, "eps")
        results["one_worker"] = one
        results["streamrec_eps"] = one["eps"]
        results["worker_rss_mb"] = max(run["rss_mb"] for run in ones)
        results["worker_cpu_s"] = one["cpu_s"]
        results["two_workers"] = two
        results["two_worker_speedup"] = two["eps"] / one["eps"]
        results["scaleout_efficiency"] = statistics.median(
            t["eps_per_cpu_s"] / o["eps_per_cpu_s"] for o, t in zip(ones, twos, strict=True)
        )

        rate = 0.5 * one["eps"]
        n_latency = int(rate * args.latency_seconds)
        # --latency-seconds longer than --events lasts at this rate: read more of the log
        paced = (all_events if n_latency <= len(all_events) else payloads(n_latency))[:n_latency]
        results["latency_rate_eps"] = rate
        results["latency_events"] = len(paced)
        latencies, raws = [], []
        for _ in range(repeats):
            latencies.append(latency_worker(base, paced, rate, logs))
            raws.append(latency_passthrough(base, paced, rate, batch))
            print(f"p99 {latencies[-1]['p99_ms']:.0f} ms, raw {raws[-1]['p99_ms']:.0f} ms")
        runs["latency"], runs["raw_latency"] = latencies, raws
        streamrec_latency = median_run(latencies, "p99_ms")
        raw_latency = median_run(raws, "p99_ms")
        results["latency"] = streamrec_latency
        results["raw_latency"] = raw_latency
        results["p50_ms"] = streamrec_latency["p50_ms"]
        results["p95_ms"] = streamrec_latency["p95_ms"]
        results["p99_ms"] = streamrec_latency["p99_ms"]
        results["ceiling_rtt_p99_ms"] = raw_latency["p99_ms"]
        results["p99_ratio"] = streamrec_latency["p99_ms"] / raw_latency["p99_ms"]

        results["profile"] = profile_hot_path(fresh(base, "prof"), typed[:20000], batch)

    results["ratio_to_ceiling"] = results["streamrec_eps"] / results["ceiling_eps"]
    results["ratio_to_naive"] = results["streamrec_eps"] / results["naive_eps"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"e2e (medians of {repeats}): streamrec {results['streamrec_eps']:.0f} ev/s = "
        f"{results['ratio_to_ceiling']:.2f}x ceiling ({results['ceiling_eps']:.0f}), "
        f"{results['ratio_to_naive']:.1f}x naive; p99 {results['p99_ms']:.1f} ms = "
        f"{results['p99_ratio']:.2f}x raw Kafka p99 at {rate:.0f} ev/s; "
        f"scale-out efficiency {results['scaleout_efficiency']:.2f} "
        f"(speed-up {results['two_worker_speedup']:.2f}x); RSS {results['worker_rss_mb']:.0f} MB "
        f"-> {args.out}"
    )


if __name__ == "__main__":
    main()
