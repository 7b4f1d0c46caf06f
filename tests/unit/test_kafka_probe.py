"""/readyz asks Kafka at most once per second, however many probes come together."""

from __future__ import annotations

import asyncio
import socket
import time

from streamrec.config import Settings
from streamrec.serving.api import KafkaProbe


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probes_that_come_together_share_one_check_of_a_down_broker() -> None:
    settings = Settings(kafka={"bootstrap_servers": f"127.0.0.1:{_closed_port()}"})  # type: ignore[arg-type]
    probe = KafkaProbe(settings, ttl_s=30.0, timeout_s=0.5)

    async def burst() -> list[bool]:
        return await asyncio.gather(*(probe.reachable() for _ in range(20)))

    started = time.monotonic()
    answers = asyncio.run(burst())
    assert answers == [False] * 20
    assert probe.checks == 1
    assert time.monotonic() - started < 5  # one timeout, not twenty queued in the thread pool
