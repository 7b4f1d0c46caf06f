"""What faust alone costs the stream worker: a faust agent configured as the worker's (same
micro-batching, fetch settings, manual acks, commit settings, uvloop) over ML-1M events,
doing none of the worker's own work (no decoding, state or ranking). Two parts:

  throughput  the agent only acknowledges its micro-batches: its events/s is an upper bound
              for any worker built on faust on this machine, beside bench/e2e.py's stage
              ceilings;
  latency     the agent passes every event on to an output topic with the worker's producer
              (streamrec.client.BatchProducer: idempotent, acks=all, the same linger) and acks
              a batch once its outputs are delivered, as the worker does, paced at a fixed rate
              (by default the rate bench/e2e.py measured streamrec's p99 at, from e2e.json).
              Its p99 event -> output latency, beside the raw confluent-kafka pass-through p99
              at the same rate (alternating runs), is the part of e2e's p99 budget that faust
              and the output path use before the worker does anything.

    .venv/bin/python bench/faust_floor.py [--events 60000] [--repeats 3] [--rate EV_PER_S]

Starts its own local stack (as bench/e2e.py) and writes bench/results/faust_floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def agent_process() -> None:
    """The faust side (run in a child process; configuration from the environment)."""
    import asyncio
    from collections import deque

    import faust
    import mode.loop

    from streamrec.config import Settings
    from streamrec.stream.batching import MicroBatches
    from streamrec.stream.transport import use_fetch_settings

    settings = Settings()
    stream = settings.stream
    mode.loop.use(stream.event_loop)
    expected = int(os.environ["FLOOR_EVENTS"])
    passing = os.environ["FLOOR_MODE"] == "pass"
    app = faust.App(
        stream.app_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=settings.kafka.producer_linger_ms,
        broker_commit_every=2**62,
        broker_commit_interval=1.0,
        datadir=os.environ["FLOOR_DATADIR"],
    )
    use_fetch_settings(
        app, fetch_min_bytes=stream.fetch_min_bytes, fetch_max_wait_ms=stream.fetch_max_wait_ms
    )
    topic = app.topic(
        settings.topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def acknowledge(events: Any, batch: Any, outputs: Any, previous: Any) -> None:
        if previous is not None:
            await previous
        await outputs.delivered()
        for event in batch:
            await events.ack(event)

    @app.agent(topic)
    async def take(stream_in: faust.StreamT) -> None:
        events = stream_in.noack()  # type: ignore[attr-defined]
        batches = MicroBatches(events.events(), stream.batch_size, stream.batch_max_wait_ms / 1000)
        if passing:
            from streamrec.client import BatchProducer

            out = BatchProducer(settings)
            inflight: deque[asyncio.Future[None]] = deque()
            print("{}", flush=True)  # ready
            async for batch in batches:
                outputs = out.batch()
                for event in batch:
                    message = event.message
                    created = str(message.timestamp).encode()
                    outputs.produce(
                        settings.topics.recommendations,
                        message.value,
                        message.key,
                        headers=[("src_ts", created)],
                    )
                outputs.seal()
                previous = inflight[-1] if inflight else None
                inflight.append(
                    asyncio.ensure_future(acknowledge(events, batch, outputs, previous))
                )
                while len(inflight) > stream.max_inflight_batches:
                    await inflight.popleft()
            return
        seen, started, cpu_started = 0, 0.0, 0.0
        async for batch in batches:
            if not seen:
                started, cpu_started = time.perf_counter(), time.process_time()
            for event in batch:
                await events.ack(event)
            seen += len(batch)
            if seen >= expected:
                elapsed = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
                print(json.dumps({"events": seen, "eps": seen / elapsed, "cpu_s": cpu}), flush=True)
                os._exit(0)

    from faust.worker import Worker

    worker = Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


def _agent(settings: Any, mode: str, events: int, datadir: Path) -> subprocess.Popen[str]:
    from streamrec.config import to_env

    env = {
        **os.environ,
        **to_env(settings),
        "FLOOR_MODE": mode,
        "FLOOR_EVENTS": str(events),
        "FLOOR_DATADIR": str(datadir),
    }
    # the child holds its own copy of the log's descriptor; ours is closed once it started
    with (datadir.parent / f"{datadir.name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, __file__, "--agent", "worker", "-l", "warn"],
            env=env,
            cwd="/tmp",  # python puts the cwd first on sys.path; the environment picks the code
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def throughput_run(base: Any, events: list[dict[str, Any]], datadir: Path) -> dict[str, Any]:
    import e2e

    settings = e2e.fresh(base, "floor")
    e2e.produce(settings, settings.topics.events, events)
    proc = _agent(settings, "ack", len(events), datadir)
    try:
        stdout, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        log = (datadir.parent / f"{datadir.name}.log").read_text()[-3000:]
        raise RuntimeError(f"the faust agent reported nothing:\n{log}")
    return dict(json.loads(lines[-1]))


def latency_run(
    base: Any, events: list[dict[str, Any]], rate: float, datadir: Path
) -> dict[str, float]:
    import e2e

    settings = e2e.fresh(base, "floorlat")
    proc = _agent(settings, "pass", len(events), datadir)
    try:
        e2e.wait_for_group(settings.stream.app_id, 1, settings)
        agent = [psutil.Process(proc.pid)]
        cpu_before = e2e.cpu_seconds(agent)
        created = e2e.produce(settings, settings.topics.events, events, rate=rate)
        out = e2e.read_all(settings, settings.topics.recommendations, len(events), timeout=300)
        cpu = e2e.cpu_seconds(agent) - cpu_before
    finally:
        proc.kill()
        proc.communicate()
    if len(out) < len(events):
        raise RuntimeError(f"the faust pass-through delivered {len(out)} of {len(events)}")
    sent = [float(dict(m.headers())["src_ts"].decode()) for m in out]
    warm = min(created.values()) + e2e.WARMUP_S
    latency = e2e._percentiles(
        [m.timestamp()[1] / 1000 - s for m, s in zip(out, sent, strict=True) if s >= warm]
    )
    return {**latency, "cpu_s": cpu, "cpu_us_per_event": 1e6 * cpu / len(events)}


def _default_rate() -> float | None:
    try:
        measured = json.loads((ROOT / "bench" / "results" / "e2e.json").read_text())
        return float(measured["latency_rate_eps"])
    except (OSError, KeyError, ValueError):
        return None


def main() -> None:
    import e2e

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60000, help="events per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events/s of the latency part (default: latency_rate_eps of bench/results/e2e.json, "
        "else half the throughput floor)",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faust_floor.json")
    args = parser.parse_args()
    repeats = max(1, args.repeats)
    events = e2e.payloads(args.events)
    runs: list[dict[str, Any]] = []
    passes: list[dict[str, float]] = []
    raws: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="faust-floor-") as tmp,
        e2e.local_stack(Path(tmp)) as base,
    ):
        for index in range(repeats):
            runs.append(throughput_run(base, events, Path(tmp) / f"faust-{index}"))
            print(f"faust consume+ack: {runs[-1]['eps']:.0f} ev/s", flush=True)
        median = statistics.median(run["eps"] for run in runs)
        rate = args.rate or _default_rate() or 0.5 * median
        paced = events[: int(rate * args.latency_seconds)]
        for index in range(repeats):
            passes.append(latency_run(base, paced, rate, Path(tmp) / f"faust-lat-{index}"))
            raws.append(e2e.latency_passthrough(base, paced, rate, base.stream.batch_size))
            print(
                f"at {rate:.0f} ev/s: faust pass-through p99 {passes[-1]['p99_ms']:.0f} ms, "
                f"raw {raws[-1]['p99_ms']:.0f} ms",
                flush=True,
            )
    faust_latency = e2e.median_run(passes, "p99_ms")
    raw_latency = e2e.median_run(raws, "p99_ms")
    results = {
        "commit": e2e.git_commit(),
        "events": args.events,
        "faust_floor_eps": median,
        "faust_floor_us_per_event": 1e6 / median,
        "runs": runs,
        "latency_rate_eps": rate,
        "latency_events": len(paced),
        "faust_passthrough_p50_ms": faust_latency["p50_ms"],
        "faust_passthrough_p99_ms": faust_latency["p99_ms"],
        "raw_rtt_p99_ms": raw_latency["p99_ms"],
        "faust_p99_ratio": faust_latency["p99_ms"] / raw_latency["p99_ms"],
        "latency_runs": passes,
        "raw_latency_runs": raws,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"faust floor (medians of {repeats}): {median:.0f} ev/s = {1e6 / median:.0f} µs per "
        f"event, consume + micro-batch + ack only; at {rate:.0f} ev/s, passing events on: p99 "
        f"{results['faust_passthrough_p99_ms']:.0f} ms = {results['faust_p99_ratio']:.1f}x the "
        f"raw pass-through's {results['raw_rtt_p99_ms']:.0f} ms -> {args.out}"
    )


if __name__ == "__main__":
    if "--agent" in sys.argv:
        sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a != "--agent"]]
        agent_process()
    else:
        main()
