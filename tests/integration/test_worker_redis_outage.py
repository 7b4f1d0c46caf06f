"""Redis unreachable: the worker waits for it (state_retry_s 0, the default), or past a limit
stops with an error, unacked, so that a restarted worker reads the failed batch again. It never
skips a batch and reads on (faust restarting the agent alone would do that)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from streamrec.client import EventProducer
from streamrec.config import Settings
from streamrec.stack import free_port
from streamrec.stack.redis_server import RedisComponent
from streamrec.state.keys import Keys
from tests.helpers import wait_for, worker_process

pytestmark = pytest.mark.integration


def _events(tag: str, n: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{tag}-{n_}",
            "user_id": "outage-user",
            "session_id": f"outage-{tag}",
            "item_id": f"i{n_ % 13}",
            "type": "view",
            "timestamp": 1_700_000_000 + n_,
        }
        for n_ in range(n)
    ]


def _send(settings: Settings, events: list[dict[str, object]]) -> None:
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)


def _own_redis(stack_settings: Settings, tmp_path: Path) -> tuple[Settings, RedisComponent]:
    port = free_port()
    settings = stack_settings.model_copy(
        update={
            "home": tmp_path / "home",
            "stack": stack_settings.stack.model_copy(update={"redis_port": port}),
            "redis": stack_settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{port}/0"}),
        }
    )
    server = RedisComponent(settings)
    server.start()
    server.wait_ready(30)
    return settings, server


def _applied(client: redis.Redis, keys: Keys) -> int:
    return sum(1 for _ in client.scan_iter(keys.event("*"), count=1000))


def _events_counted(client: redis.Redis, keys: Keys) -> int:
    return int(client.hget(keys.user_counters("outage-user"), "events") or 0)


def test_past_its_retry_limit_the_worker_stops_and_a_new_one_applies_every_event_once(
    stack_settings: Settings, tmp_path: Path
) -> None:
    base, server = _own_redis(stack_settings, tmp_path)
    settings = base.model_copy(
        update={"stream": base.stream.model_copy(update={"state_retry_s": 3.0})}
    )
    keys = Keys(settings.redis.key_prefix)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        with worker_process(settings, tmp_path / "first.log") as proc:
            _send(settings, _events("before", 20))
            wait_for(lambda: _applied(client, keys) == 20, timeout=90)
            server.process.stop()
            _send(settings, _events("during", 20))
            # it retries for 3 s, then stops with an error rather than read on past the batch
            deadline = time.monotonic() + 90
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert proc.poll() is not None, "the worker kept running past its retry limit"
            assert proc.returncode == 70  # EXIT_BATCH_FAILED
        server.start()
        server.wait_ready(30)
        with worker_process(settings, tmp_path / "second.log"):
            wait_for(lambda: _applied(client, keys) == 40, timeout=90)
            _send(settings, _events("after", 5))
            wait_for(lambda: _events_counted(client, keys) == 45, timeout=60)
        assert _applied(client, keys) == 45
    finally:
        server.process.stop()


def test_by_default_the_worker_waits_for_redis_and_loses_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings, server = _own_redis(stack_settings, tmp_path)
    keys = Keys(settings.redis.key_prefix)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        with worker_process(settings, tmp_path / "worker.log") as proc:
            _send(settings, _events("before", 20))
            wait_for(lambda: _applied(client, keys) == 20, timeout=90)
            server.process.stop()
            _send(settings, _events("during", 20))
            time.sleep(8)
            assert proc.poll() is None, "the worker stopped while Redis was away"
            server.start()
            server.wait_ready(30)
            _send(settings, _events("after", 5))
            wait_for(lambda: _events_counted(client, keys) == 45, timeout=90)
            assert _applied(client, keys) == 45
    finally:
        server.process.stop()


def test_a_worker_waiting_for_redis_stops_on_sigterm_and_its_batch_is_read_again(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings, server = _own_redis(stack_settings, tmp_path)
    keys = Keys(settings.redis.key_prefix)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        with worker_process(settings, tmp_path / "first.log") as proc:
            _send(settings, _events("before", 10))
            wait_for(lambda: _applied(client, keys) == 10, timeout=90)
            server.process.stop()
            _send(settings, _events("during", 10))
            time.sleep(3)
            proc.terminate()
            proc.wait(30)  # faust waited forever for the unfinished batch's acks
        server.start()
        server.wait_ready(30)
        with worker_process(settings, tmp_path / "second.log"):
            wait_for(lambda: _events_counted(client, keys) == 20, timeout=90)
        assert _applied(client, keys) == 20
    finally:
        server.process.stop()


def test_a_redis_that_refuses_the_password_stops_the_worker_at_start_naming_redis(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings, server = _own_redis(stack_settings, tmp_path)
    port = settings.stack.redis_port
    client = redis.Redis.from_url(settings.redis.url)
    client.config_set("requirepass", "right-secret")
    try:
        for url in (
            f"redis://:wrong-secret@127.0.0.1:{port}/0",  # WRONGPASS
            f"redis://127.0.0.1:{port}/0",  # NOAUTH
        ):
            wrong = settings.model_copy(
                update={
                    "redis": settings.redis.model_copy(update={"url": url}),
                    # a group of its own: a new member of the last one waits out the stopped one
                    "stream": settings.stream.model_copy(update={"app_id": f"refused-{len(url)}"}),
                }
            )
            log_path = tmp_path / f"refused-{len(url)}.log"
            with worker_process(wrong, log_path) as proc:
                # it stops at once, not after minutes of retries that never name Redis
                proc.wait(60)
                assert proc.returncode == 78  # EXIT_CONFIG
            text = log_path.read_text()
            assert f"Redis 127.0.0.1:{port}/0 refused streamrec" in text, text[-3000:]
            assert "STREAMREC_REDIS__URL" in text
            assert "wrong-secret" not in text
            assert "ready: ranker" not in text
        right = settings.model_copy(
            update={
                "redis": settings.redis.model_copy(
                    update={"url": f"redis://:right-secret@127.0.0.1:{port}/0"}
                )
            }
        )
        authed = redis.Redis.from_url(right.redis.url)
        keys = Keys(settings.redis.key_prefix)
        with worker_process(right, tmp_path / "right.log"):
            _send(right, _events("authed", 5))
            wait_for(lambda: _events_counted(authed, keys) == 5, timeout=90)
    finally:
        server.process.stop()


def _refused_at_start(settings: Settings, url: str, log_path: Path) -> str:
    """Run a worker on ``url`` in a group of its own; it must stop with exit 78. Its log."""
    refused = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(update={"url": url}),
            "stream": settings.stream.model_copy(update={"app_id": log_path.stem}),
        }
    )
    with worker_process(refused, log_path) as proc:
        proc.wait(90)
        assert proc.returncode == 78, log_path.read_text()[-3000:]
    return log_path.read_text()


def test_an_acl_without_evalsha_or_the_keys_stops_the_worker_at_start(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings, server = _own_redis(stack_settings, tmp_path)
    port = settings.stack.redis_port
    admin = redis.Redis.from_url(settings.redis.url)
    prefix = settings.redis.key_prefix
    admin.acl_setuser(
        "noeval", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-evalsha"]
    )
    admin.acl_setuser(
        "otherkeys", enabled=True, passwords=["+pw"], keys=["other:*"], commands=["+@all"]
    )
    admin.acl_setuser(  # reads its keys, writes none
        "readonly", enabled=True, passwords=["+pw"], keys=[f"%R~{prefix}:*"], commands=["+@all"]
    )
    admin.acl_setuser(  # the read commands only
        "reader",
        enabled=True,
        passwords=["+pw"],
        keys=[f"{prefix}:*"],
        commands=["+@read", "+script|load", "+evalsha", "+ping"],
    )
    try:
        for user in ("noeval", "otherkeys", "readonly", "reader"):
            text = _refused_at_start(
                settings, f"redis://{user}:pw@127.0.0.1:{port}/0", tmp_path / f"acl-{user}.log"
            )
            assert f"Redis 127.0.0.1:{port}/0 refused streamrec" in text
            assert "ready: ranker" not in text
    finally:
        server.process.stop()


def test_a_redis_that_comes_up_refusing_the_password_stops_the_worker(
    stack_settings: Settings, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    port = free_port()
    url = f"redis://:wrong@127.0.0.1:{port}/0"
    settings = stack_settings.model_copy(
        update={
            "redis": stack_settings.redis.model_copy(update={"url": url}),
            "stream": stack_settings.stream.model_copy(update={"app_id": "comes-up-refusing"}),
        }
    )
    log_path = tmp_path / "worker.log"
    server = None
    try:
        with worker_process(settings, log_path) as proc:
            wait_for(
                lambda: "does not take the worker's state yet" in log_path.read_text(), timeout=90
            )
            binary = shutil.which(settings.stack.redis_server) or "redis-server"
            server = subprocess.Popen(
                [
                    *(binary, "--port", str(port), "--bind", "127.0.0.1"),
                    *("--requirepass", "right", "--save", "", "--appendonly", "no"),
                    *("--dir", str(tmp_path)),
                ],
                stdout=subprocess.DEVNULL,
            )
            proc.wait(60)  # it checks again once Redis answers: not minutes of retries
            assert proc.returncode == 78
        assert f"Redis 127.0.0.1:{port}/0 refused streamrec" in log_path.read_text()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


async def test_the_start_up_check_passes_an_acl_of_only_what_state_uses(
    stack_settings: Settings, tmp_path: Path
) -> None:
    from streamrec.state.store import StateStore

    settings, server = _own_redis(stack_settings, tmp_path)
    port = settings.stack.redis_port
    prefix = settings.redis.key_prefix
    admin = redis.Redis.from_url(settings.redis.url)
    needed = "ping script|load evalsha get set hget hset hincrby lpush lrange ltrim sadd expire"
    needed += " zadd zscore zrevrange hello client"
    admin.acl_setuser(
        "least",
        enabled=True,
        passwords=["+pw"],
        keys=[f"{prefix}:*"],
        commands=[f"+{command}" for command in needed.split()],
    )
    url = f"redis://least:pw@127.0.0.1:{port}/0"
    store = StateStore.from_settings(settings.redis.model_copy(update={"url": url}))
    try:
        assert await store.check_access() is None
        assert admin.exists(Keys(prefix).probe()) == 0  # the check writes nothing
    finally:
        await store.client.aclose()
        server.process.stop()
