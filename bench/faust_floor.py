"""What faust alone costs the stream worker: a faust agent configured as the worker's (same
micro-batching, manual acks, commit settings, uvloop) that takes ML-1M events from a topic and
only acknowledges them -- no decoding, no state, no ranking, no outputs. Its events/s is an
upper bound for any worker built on faust on this machine, beside bench/e2e.py's stage
ceilings.

    .venv/bin/python bench/faust_floor.py [--events 60000] [--repeats 3]

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def agent_process() -> None:
    """The faust side (run in a child process; configuration from the environment)."""
    import faust
    import mode.loop

    from streamrec.stream.batching import MicroBatches

    mode.loop.use("uvloop")
    expected = int(os.environ["FLOOR_EVENTS"])
    app = faust.App(
        f"floor-{os.environ['FLOOR_TOPIC']}",
        broker=f"kafka://{os.environ['FLOOR_BROKER']}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=2**62,
        broker_commit_interval=1.0,
        datadir=os.environ["FLOOR_DATADIR"],
    )
    topic = app.topic(
        os.environ["FLOOR_TOPIC"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(topic)
    async def take(stream_in: faust.StreamT) -> None:
        events = stream_in.noack()  # type: ignore[attr-defined]
        seen, started, cpu_started = 0, 0.0, 0.0
        async for batch in MicroBatches(events.events(), 256, 0.005):
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


def main() -> None:
    import e2e

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=60000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faust_floor.json")
    args = parser.parse_args()
    events = e2e.payloads(args.events)
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="faust-floor-") as tmp,
        e2e.local_stack(Path(tmp)) as base,
    ):
        for index in range(max(1, args.repeats)):
            settings = e2e.fresh(base, "floor")
            e2e.produce(settings, settings.topics.events, events)
            env = {
                **os.environ,
                "FLOOR_TOPIC": settings.topics.events,
                "FLOOR_BROKER": settings.kafka.bootstrap_servers,
                "FLOOR_EVENTS": str(len(events)),
                "FLOOR_DATADIR": str(Path(tmp) / f"faust-{index}"),
            }
            done = subprocess.run(
                [sys.executable, __file__, "--agent", "worker", "-l", "warn"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if not lines:
                raise RuntimeError(f"the faust agent reported nothing:\n{done.stderr[-3000:]}")
            runs.append(json.loads(lines[-1]))
            print(f"faust consume+ack: {runs[-1]['eps']:.0f} ev/s", flush=True)
    median = statistics.median(run["eps"] for run in runs)
    results = {
        "commit": e2e.git_commit(),
        "events": args.events,
        "faust_floor_eps": median,
        "faust_floor_us_per_event": 1e6 / median,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"faust floor (median of {len(runs)}): {median:.0f} ev/s = {1e6 / median:.0f} µs per "
        f"event, consume + micro-batch + ack only -> {args.out}"
    )


if __name__ == "__main__":
    if "--agent" in sys.argv:
        sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a != "--agent"]]
        agent_process()
    else:
        main()
