"""Shared fixtures: the real local stack (Kafka KRaft + Redis) on free loopback ports.

The stack is started once per test session under a temporary STREAMREC home (jars come from the
shared cache, ``STREAMREC_CACHE_DIR`` or ``.streamrec/cache``) and stopped at the end. Set
``STREAMREC_TEST_BOOTSTRAP`` and ``STREAMREC_TEST_REDIS_URL`` to reuse a running stack instead.
Under CI (``CI=true``) a stack that cannot start fails the tests that need it; elsewhere they
are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamrec.config import Settings
from streamrec.errors import StreamrecError

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class LiveStack:
    bootstrap: str
    redis_url: str
    home: Path
    stack: object | None  # streamrec.stack.Stack when we started it

    def settings(self, **overrides: object) -> Settings:
        """Settings pointing at this stack, with per-test topics and Redis key prefix."""
        tag = uuid.uuid4().hex[:10]
        base: dict[str, object] = {
            "home": self.home,
            "cache_dir": _cache_dir(),
            "kafka": {"bootstrap_servers": self.bootstrap},
            "redis": {"url": self.redis_url, "key_prefix": f"t{tag}"},
            "topics": {
                "events": f"t{tag}.events",
                "recommendations": f"t{tag}.recs",
                "rewards": f"t{tag}.rewards",
                "dead_letters": f"t{tag}.dlq",
                "partitions": 4,
                "output_partitions": 2,
            },
            "stream": {"app_id": f"t{tag}-worker"},
            "metrics_port": 0,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}  # type: ignore[dict-item]
            else:
                base[key] = value
        return Settings(**base)  # type: ignore[arg-type]


def _cache_dir() -> Path:
    return Path(os.environ.get("STREAMREC_CACHE_DIR", ROOT / ".streamrec" / "cache"))


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    bootstrap = os.environ.get("STREAMREC_TEST_BOOTSTRAP")
    redis_url = os.environ.get("STREAMREC_TEST_REDIS_URL")
    home = tmp_path_factory.mktemp("streamrec-home")
    if bootstrap and redis_url:
        yield LiveStack(bootstrap, redis_url, home, None)
        return
    from streamrec.stack import Stack, free_port

    settings = Settings(
        home=home,
        cache_dir=_cache_dir(),
        stack={
            "kafka_port": free_port(),
            "controller_port": free_port(),
            "redis_port": free_port(),
            "kafka_heap": "512m",
        },
    )
    stack = Stack(settings)
    try:
        stack.up()
    except (StreamrecError, OSError) as exc:
        stack.down()
        message = f"the local stack (Kafka + Redis) could not start: {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield LiveStack(stack.kafka.address, stack.redis.url, home, stack)
    finally:
        stack.down()


@pytest.fixture
def stack_settings(live_stack: LiveStack) -> Settings:
    """Fresh per-test settings (own topics, own key prefix) with the topics created."""
    from streamrec.client import create_topics

    settings = live_stack.settings()
    create_topics(settings)
    return settings
