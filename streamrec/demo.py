"""`streamrec demo`: the whole system on real data, end to end, on this machine.

1. start the local stack (Kafka KRaft + Redis) and create the topics,
2. start a stream worker and the HTTP API as real processes,
3. replay the first N MovieLens-1M interactions (every rating published as a ``click``) plus a
   few malformed records from a "foreign client",
4. wait until the worker has caught up, then print per-topic counts, dead letters by reason,
   sample recommendations from the topic, and one pulled over HTTP.

The stack keeps running afterwards (``streamrec stack down`` stops it); the worker and API stop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from streamrec.client import EventProducer, create_topics, topic_counts
from streamrec.config import Settings, to_env
from streamrec.data import load_movielens_1m
from streamrec.data.replay import iter_events, replay
from streamrec.errors import StreamrecError
from streamrec.stack import Stack, port_is_free

__all__ = ["run_demo"]

_FOREIGN = [
    b"{not json",
    b'{"event_id": "x1", "user_id": "u", "item_id": "i", "type": "teleport", "timestamp": 1}',
    b'{"event_id": "x2", "user_id": "u", "type": "click", "timestamp": 1}',
    b"\xff\xfe",
    b"[]",
]


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        proc = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _retriable(exc: BaseException) -> bool:
    """Kafka errors the broker says will pass (e.g. NOT_COORDINATOR while a fresh broker is
    still loading the group coordinator)."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    transient = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
    return bool(error.retriable()) or error.code() in transient


@retry(
    retry=retry_if_exception(_retriable),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(60),
    reraise=True,
)
def _committed_lag(settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": settings.stream.app_id})
    try:
        parts = [
            TopicPartition(settings.topics.events, p)
            for p in consumer.list_topics(settings.topics.events, timeout=10)
            .topics[settings.topics.events]
            .partitions
        ]
        lag = 0
        for tp in consumer.committed(parts, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise StreamrecError(f"{url} did not answer within {timeout:.0f}s")


def run_demo(settings: Settings, *, events: int, console: Console) -> None:
    console.rule("[bold]1. local stack")
    stack = Stack(settings)
    statuses = stack.up()
    for status in statuses:
        console.print(f"{status.name} {status.version} at {status.address}: {status.state}")
    for name, state in create_topics(settings).items():
        console.print(f"topic {name}: {state}")

    console.rule("[bold]2. worker + HTTP API")
    logs = settings.state_path / "logs"
    env = {**os.environ, **to_env(settings)}
    api_port = settings.api.port
    if not port_is_free(api_port):
        raise StreamrecError(f"API port {api_port} is taken; set STREAMREC_API__PORT")
    with ExitStack() as processes:
        worker = processes.enter_context(
            _process([sys.executable, "-m", "streamrec", "worker"], env, logs / "worker.log")
        )
        processes.enter_context(
            _process([sys.executable, "-m", "streamrec", "api"], env, logs / "api.log")
        )
        _wait_http(f"http://{settings.api.host}:{api_port}/healthz")
        console.print(f"worker pid {worker.pid} (log {logs / 'worker.log'})")
        console.print(f"API on http://{settings.api.host}:{api_port}/docs")

        console.rule(f"[bold]3. replay {events:,} real MovieLens-1M events")
        frame = load_movielens_1m(limit=events)
        with EventProducer(settings) as producer:
            sent = replay(
                iter_events(frame, source="ml-1m", as_type="click"),
                producer.send,
                total=len(frame),
            )
            for raw in _FOREIGN:
                producer.send_raw(raw, key=b"foreign-client")
        console.print(f"sent {sent:,} events and {len(_FOREIGN)} malformed records")

        deadline = time.monotonic() + 300
        while (lag := _committed_lag(settings)) > 0 and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise StreamrecError(f"the worker exited; see {logs / 'worker.log'}")
            if console.is_terminal:
                console.print(f"worker lag: {lag:,} events", end="\r")
            time.sleep(1)
        console.print(f"worker lag: {lag:,} events")

        console.rule("[bold]4. what arrived")
        table = Table("topic", "records")
        for name, count in topic_counts(settings, list(settings.topics.all())).items():
            table.add_row(name, f"{count:,}")
        console.print(table)
        _print_dead_letters(settings, console)
        _print_recommendations(settings, console)
        user = frame["user_id"].iloc[-1]
        url = f"http://{settings.api.host}:{api_port}/v1/recommendations?user_id={user}&k=5"
        with urllib.request.urlopen(url, timeout=10) as response:
            pulled = json.loads(response.read())
        console.print(f"GET {url}")
        console.print_json(data=pulled)
    console.print(
        "Replaying the same events again changes nothing in state (event ids are deterministic)."
    )
    console.print("The stack is still running: `streamrec stack down` stops it.")


def _print_dead_letters(settings: Settings, console: Console) -> None:
    from streamrec.deadletter import parse_headers

    reasons = Counter(
        parse_headers(m.headers()).get("reason", "?")
        for m in _read(settings, settings.topics.dead_letters, 10_000)
    )
    console.print(f"dead letters by reason: {dict(reasons)}")


def _print_recommendations(settings: Settings, console: Console) -> None:
    from streamrec.events import Recommendation

    table = Table("user", "after event", "top-5 recommended", "model")
    latest: dict[str, Recommendation] = {}
    for message in _read(settings, settings.topics.recommendations, 2000):
        rec = Recommendation.model_validate_json(message.value())
        latest[rec.user_id or ""] = rec
    for rec in list(latest.values())[-5:]:
        table.add_row(
            rec.user_id or "-",
            rec.event_id or "-",
            ", ".join(item.item_id for item in rec.items[:5]),
            rec.model_version,
        )
    console.print(table)


def _read(settings: Settings, topic: str, limit: int) -> list[Any]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"demo-reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 10
    try:
        while len(out) < limit and time.monotonic() < deadline:
            batch = consumer.consume(min(500, limit - len(out)), 1.0)
            if not batch and out:
                break
            out.extend(m for m in batch if m.error() is None)
    finally:
        consumer.close()
    return out
