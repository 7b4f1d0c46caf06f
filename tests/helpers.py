"""Helpers for integration tests: drain a topic, run a real worker process, wait for a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message

from streamrec.config import Settings, to_env


def drain(settings: Settings, topic: str, expected: int, timeout: float = 60) -> list[Message]:
    """Read a topic from the beginning until ``expected`` records (or the timeout)."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"drain-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(500, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return out


def wait_for(condition: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@contextmanager
def worker_process(
    settings: Settings, log_path: Path, *, metrics_port: int = 0, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `streamrec worker` process with these settings; stopped (SIGTERM) on exit."""
    with streamrec_process(
        ["worker", "--loglevel", "warning"], settings, log_path, metrics_port=metrics_port, **env
    ) as proc:
        yield proc


@contextmanager
def streamrec_process(
    args: list[str], settings: Settings, log_path: Path, *, metrics_port: int = 0, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `streamrec <args>` process with these settings, its output appended to
    ``log_path``; stopped (SIGTERM, then SIGKILL after 30 s) on exit if still running."""
    full_env = {
        **os.environ,
        **to_env(settings),
        "STREAMREC_METRICS_PORT": str(metrics_port),
        **env,
    }
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", *args],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        stop_process(proc, timeout=30)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM a process we started (if still running), SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric_value(port: int, name: str) -> float:
    """Sum of every sample of ``name`` on a process's /metrics endpoint."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def redis_snapshot(client: Any, pattern: str, *, skip_prefix: str | None = None) -> dict[Any, Any]:
    """Every key matching ``pattern`` with its value (lists, hashes, sets, zsets, strings),
    leaving out keys starting with ``skip_prefix``: state compared before and after."""
    snap: dict[Any, Any] = {}
    for key in client.scan_iter(pattern, count=1000):
        if skip_prefix is not None and key.startswith(skip_prefix.encode()):
            continue
        kind = client.type(key)
        if kind == b"list":
            snap[key] = client.lrange(key, 0, -1)
        elif kind == b"hash":
            snap[key] = client.hgetall(key)
        elif kind == b"set":
            snap[key] = client.smembers(key)
        elif kind == b"zset":
            snap[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            snap[key] = client.get(key)
    return snap


def metrics_port_block() -> int:
    """A base port with every process's /metrics port (base + offset) free."""
    from streamrec.metrics import PROCESS_PORT_OFFSETS
    from streamrec.stack import free_port, port_is_free

    for _ in range(50):
        base = free_port()
        if base + max(PROCESS_PORT_OFFSETS.values()) < 65536 and all(
            port_is_free(base + offset) for offset in PROCESS_PORT_OFFSETS.values()
        ):
            return base
    raise RuntimeError("no free block of metrics ports")
