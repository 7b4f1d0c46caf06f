"""faust's aiokafka transport with the consumer's fetch batching configurable.

faust builds the worker's ``AIOKafkaConsumer`` itself, with ``fetch_max_wait_ms=1500`` and
aiokafka's ``fetch_min_bytes=1``, and has no setting for either: the broker answers a fetch as
soon as one record is there, so at moderate rates every few records cost a fetch, a hand-over
from faust's consumer thread and a pass through its conductor. :class:`FetchTunedTransport`
sets both from :class:`~streamrec.config.StreamSettings` (``fetch_min_bytes``,
``fetch_max_wait_ms``) on the consumer faust created, before it starts. Install it with
:func:`use_fetch_settings`.
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["FetchTunedTransport", "use_fetch_settings"]

#: The consumer attributes aiokafka hands to its fetcher when the consumer starts.
_FETCH_ATTRIBUTES = ("_fetch_min_bytes", "_fetch_max_wait_ms")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        tuned = cast(FetchTunedTransport, transport)
        missing = [name for name in _FETCH_ATTRIBUTES if not hasattr(consumer, name)]
        if missing:
            raise RuntimeError(
                f"aiokafka {aiokafka.__version__} has no {', '.join(missing)} on its consumer: "
                "streamrec cannot set the worker's fetch batching (pin the aiokafka version "
                "in pyproject.toml)"
            )
        consumer._fetch_min_bytes = tuned.fetch_min_bytes
        consumer._fetch_max_wait_ms = tuned.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FetchTunedTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport; its worker consumers fetch with these settings."""

    Consumer = _Consumer

    def __init__(
        self, url: Any, app: faust.App, *, fetch_min_bytes: int, fetch_max_wait_ms: int
    ) -> None:
        super().__init__(url, app)
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms


def use_fetch_settings(app: faust.App, *, fetch_min_bytes: int, fetch_max_wait_ms: int) -> None:
    """Make ``app`` consume through :class:`FetchTunedTransport` (before it starts)."""
    app.transport = FetchTunedTransport(
        app.conf.broker_consumer,
        app,
        fetch_min_bytes=fetch_min_bytes,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
