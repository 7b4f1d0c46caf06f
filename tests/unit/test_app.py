"""The faust app the worker runs: configuration only (nothing connects here)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from streamrec.config import Settings
from streamrec.serving.popularity import PopularityRanker
from streamrec.stream.app import build_app, make_worker


def test_faust_data_dir_is_under_the_streamrec_home_not_the_working_directory(
    tmp_path: Path,
) -> None:
    home = tmp_path / "odd {name}"  # faust formats the path; braces must survive
    app = build_app(Settings(home=home), PopularityRanker())
    assert Path(app.conf.datadir) == home / "faust" / "streamrec-worker-data"
    assert Path(app.conf.tabledir).is_relative_to(home)


@pytest.mark.parametrize("level", ["warning", "error", "info"])
def test_the_worker_leaves_the_root_log_level_where_it_was_asked(
    tmp_path: Path, level: str
) -> None:
    """faust's spinner would set the root logger to DEBUG at WARN and above, so every debug
    call in faust and aiokafka built a record."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        worker = make_worker(build_app(Settings(home=tmp_path), PopularityRanker()), level)
        worker._setup_logging()
        assert root.level == getattr(logging, level.upper())
        assert not logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_the_worker_consumer_fetches_with_the_configured_batching(tmp_path: Path) -> None:
    """faust fixes fetch_min_bytes=1 and fetch_max_wait_ms=1500 on the consumer it builds."""
    settings = Settings(home=tmp_path, stream={"fetch_min_bytes": 12345, "fetch_max_wait_ms": 7})
    app = build_app(settings, PopularityRanker())

    async def consumer() -> object:  # aiokafka builds its consumer on a running loop
        thread = app.consumer._thread  # type: ignore[attr-defined]
        return thread._create_worker_consumer(app.transport)  # nothing connects until start

    built = asyncio.run(consumer())
    assert built._fetch_min_bytes == 12345  # type: ignore[attr-defined]
    assert built._fetch_max_wait_ms == 7  # type: ignore[attr-defined]
    assert built._group_id == settings.stream.app_id  # type: ignore[attr-defined]


def test_redis_unreachable_is_retried_until_it_is_back_and_an_error_it_answers_for_minutes() -> (
    None
):
    from redis.exceptions import AuthenticationError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from streamrec.errors import StateError
    from streamrec.stream.app import _unreachable

    def wrapped(cause: Exception) -> StateError:
        try:
            raise StateError("apply failed") from cause
        except StateError as error:
            return error

    assert _unreachable(wrapped(RedisConnectionError("refused")))
    assert not _unreachable(wrapped(ResponseError("READONLY You can't write against a replica")))
    # a ConnectionError subclass to redis-py, but Redis answered: it does not come back by waiting
    assert not _unreachable(wrapped(AuthenticationError("WRONGPASS invalid username-password")))
