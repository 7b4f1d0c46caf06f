"""Producer SDK, recommendation consumer helper, topic provisioning (confluent-kafka).

>>> with EventProducer(settings) as producer:
...     producer.send({"event_id": "e1", "user_id": "u1", "session_id": "s1",
...                    "item_id": "i9", "type": "click", "timestamp": 1700000000})
... # leaving the block flushes and raises DeliveryError if anything was not delivered

The producer is idempotent with ``acks=all``; events are validated before they are sent (an
invalid event raises :class:`~streamrec.errors.InvalidEvent` at the call site, it never reaches
Kafka) and keyed by session (else user) so a session stays ordered in one partition.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.config import Settings
from streamrec.errors import StreamrecError
from streamrec.events import Recommendation, encode, event_key, parse_event

__all__ = [
    "BatchProducer",
    "ConsumedEvent",
    "DeliveryError",
    "DeliveryStats",
    "EventConsumer",
    "EventProducer",
    "OutputBatch",
    "RecommendationConsumer",
    "create_topics",
    "topic_counts",
]

log = logging.getLogger(__name__)


class DeliveryError(StreamrecError):
    """Some records were not acknowledged by the broker."""


@dataclass
class DeliveryStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class EventProducer:
    """Validating, idempotent producer of streamrec events."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.topics.events
        self.stats = DeliveryStats()
        self._on_delivery = on_delivery
        conf = {
            **settings.kafka.librdkafka(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.kafka.producer_linger_ms,
            "compression.type": settings.kafka.producer_compression,
            "batch.num.messages": 10000,
            **(config or {}),
        }
        self._producer = Producer(conf)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            if len(self.stats.errors) < 100:
                self.stats.errors.append(str(err))
        if self._on_delivery is not None:
            self._on_delivery(err, msg)

    def send(self, event: Any, *, headers: Mapping[str, bytes] | None = None) -> None:
        """Validate and enqueue one event (a dict or an event model)."""
        typed = parse_event(event)
        self.send_raw(encode(typed), key=event_key(typed), headers=headers)

    def send_raw(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Enqueue bytes as they are (no validation): for replaying foreign data or tests."""
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=list((headers or {}).items()) or None,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports, then try again.
                self._producer.poll(0.1)
        self.stats.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> DeliveryStats:
        """Wait for every delivery report; raise DeliveryError if any record failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} records not delivered within {timeout}s")
        if self.stats.failed:
            raise DeliveryError(
                f"{self.stats.failed} of {self.stats.sent} records failed: {self.stats.errors[:3]}"
            )
        return self.stats

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._producer.flush(5)


class RecommendationConsumer:
    """Iterate recommendation records from the recommendations topic."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        topic: str | None = None,
        from_beginning: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        conf = {
            **settings.kafka.librdkafka(),
            "group.id": group_id,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": True,
            **(config or {}),
        }
        self._consumer = Consumer(conf)
        self._consumer.subscribe([topic or settings.topics.recommendations])

    def poll(self, timeout: float = 1.0) -> Recommendation | None:
        msg = self._consumer.poll(timeout)
        if msg is None:
            return None
        if msg.error():
            raise KafkaException(msg.error())
        return Recommendation.model_validate_json(msg.value() or b"")

    def __iter__(self) -> Iterator[Recommendation]:
        while True:
            rec = self.poll()
            if rec is not None:
                yield rec

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> RecommendationConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DebugLog(logging.LoggerAdapter[logging.Logger]):
    """librdkafka's log lines at DEBUG: a broker that cannot be reached is reported once, by
    the error raised, not by a FAIL line every 50 ms on stderr."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


_RDKAFKA_LOG = _DebugLog(logging.getLogger(f"{__name__}.librdkafka"), {})
_UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
}


def _admin_conf(settings: Settings, errors: list[KafkaError]) -> dict[str, Any]:
    """librdkafka properties of the topics helpers' clients, collecting the client's errors."""
    return {**settings.kafka.librdkafka(), "error_cb": errors.append, "logger": _RDKAFKA_LOG}


def _kafka_error(
    settings: Settings, exc: KafkaException, errors: list[KafkaError], timeout: float
) -> StreamrecError:
    """One line for a failed metadata request: which Kafka, and why (the client's own errors,
    such as "Connect to ipv4#127.0.0.1:9092 failed: Connection refused", else the request's)."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    reasons: list[str] = []
    for reported in errors:
        if reported.code() != KafkaError._ALL_BROKERS_DOWN:
            reason = re.sub(r"\s*\(after \d+ms in state \w+\)", "", reported.str())
            if reason not in reasons:
                reasons.append(reason)
    reason = "; ".join(reasons[:3]) or (error.str() if error is not None else str(exc))
    servers = settings.kafka.bootstrap_servers
    if error is not None and error.code() in _UNREACHABLE:
        return StreamrecError(f"Kafka at {servers} is unreachable after {timeout:g} s: {reason}")
    return StreamrecError(f"Kafka at {servers}: {reason}")


def create_topics(settings: Settings, *, timeout: float = 30.0) -> dict[str, str]:
    """Create every streamrec topic that does not exist. Returns name -> ``created``,
    ``exists``, or ``exists with N partition(s), not M (...)`` for a topic whose partition count
    differs from the settings' (left as it is, with a warning).

    Raises:
        StreamrecError: Kafka is unreachable, or a topic could not be created.
    """
    errors: list[KafkaError] = []
    try:
        admin = AdminClient(_admin_conf(settings, errors))
    except KafkaException as exc:  # e.g. an unknown property in STREAMREC_KAFKA__EXTRA
        raise StreamrecError(f"invalid Kafka client configuration: {exc}") from exc
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        admin.poll(0)  # serves error_cb
        raise _kafka_error(settings, exc, errors, timeout) from exc
    wanted = settings.topics.all()
    result = {
        name: _existing_state(settings, name, len(existing[name].partitions), parts)
        for name, parts in wanted.items()
        if name in existing
    }
    new = [
        NewTopic(name, num_partitions=parts, replication_factor=settings.topics.replication_factor)
        for name, parts in wanted.items()
        if name not in existing
    ]
    if not new:
        return result
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            result[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise StreamrecError(f"cannot create topic {name}: {exc}") from exc
    return result


def _existing_state(settings: Settings, name: str, actual: int, wanted: int) -> str:
    """``exists``, or, when the topic has another partition count than the settings give it
    (it was created by hand or by an older configuration), which count, with a warning: the
    topic is left as it is (adding partitions moves keys, and so sessions, to others)."""
    if actual == wanted:
        return "exists"
    setting = "PARTITIONS" if name == settings.topics.events else "OUTPUT_PARTITIONS"
    consequence = (
        f"at most {actual} consumer(s) of a group get records from it"
        if actual < wanted
        else "more consumers can share it than the settings plan for"
    )
    log.warning(
        "topic %s exists with %d partition(s), not the %d of STREAMREC_TOPICS__%s; "
        "left as it is: %s",
        name,
        actual,
        wanted,
        setting,
        consequence,
    )
    return f"exists with {actual} partition(s), not {wanted} (STREAMREC_TOPICS__{setting})"


def topic_counts(settings: Settings, topics: list[str], *, timeout: float = 10.0) -> dict[str, int]:
    """Records currently held per topic (sum over partitions of high - low watermark).

    Raises:
        StreamrecError: Kafka is unreachable.
    """
    from confluent_kafka import TopicPartition

    errors: list[KafkaError] = []
    try:
        consumer = Consumer({**_admin_conf(settings, errors), "group.id": "streamrec-counts"})
    except KafkaException as exc:  # e.g. an unknown property in STREAMREC_KAFKA__EXTRA
        raise StreamrecError(f"invalid Kafka client configuration: {exc}") from exc
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            consumer.poll(0)  # serves error_cb
            raise _kafka_error(settings, exc, errors, timeout) from exc
        counts = {}
        for topic in topics:
            if topic not in metadata.topics:
                counts[topic] = 0
                continue
            total = 0
            for partition in metadata.topics[topic].partitions:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout
                    )
                except KafkaException as exc:  # the broker went away since
                    consumer.poll(0)
                    raise _kafka_error(settings, exc, errors, timeout) from exc
                total += high - low
            counts[topic] = total
        return counts
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """A valid event with where it came from."""

    event: Any
    topic: str
    partition: int
    offset: int
    append_time: float  # broker/producer timestamp of the record, epoch seconds


class EventConsumer:
    """A validating consumer of the events topic for processes outside the faust worker.

    Invalid records are written to the dead-letter topic (with reason headers, see
    :mod:`streamrec.deadletter`) and counted; they never reach the caller. Offsets are committed
    only by :meth:`commit`, after the dead letters of the batch are acknowledged, so a crash
    between poll and commit redelivers rather than loses.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        topic: str | None = None,
        from_beginning: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        from streamrec.deadletter import DeadLetter
        from streamrec.events import decode_event

        self._dead_letter = DeadLetter
        self._decode = decode_event
        self.settings = settings
        self.group_id = group_id
        self.dead_lettered = 0
        self._consumer = Consumer(
            {
                **settings.kafka.librdkafka(),
                "group.id": group_id,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
                **(config or {}),
            }
        )
        self._dlq = Producer(
            {**settings.kafka.librdkafka(), "enable.idempotence": True, "acks": "all"}
        )
        self._consumer.subscribe([topic or settings.topics.events])

    def poll_batch(self, max_records: int = 500, timeout: float = 1.0) -> list[ConsumedEvent]:
        from streamrec import metrics
        from streamrec.errors import InvalidEvent

        out: list[ConsumedEvent] = []
        for msg in self._consumer.consume(max_records, timeout):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            value = msg.value()
            try:
                event = self._decode(value, max_bytes=self.settings.stream.max_event_bytes)
            except InvalidEvent as exc:
                self._reject(exc, msg)
                continue
            metrics.EVENTS_CONSUMED.labels(event.type.value, self.group_id).inc()
            out.append(
                ConsumedEvent(
                    event,
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                    msg.timestamp()[1] / 1000,
                )
            )
        return out

    def _reject(self, exc: Any, msg: Message) -> None:
        from streamrec import metrics

        letter = self._dead_letter.of(
            exc,
            value=msg.value(),
            key=msg.key(),
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            consumer=self.group_id,
            headers=_header_pairs(msg.headers()),
        )
        self._dlq.produce(
            self.settings.topics.dead_letters,
            value=letter.value,
            key=letter.key,
            headers=list(letter.headers()),
        )
        self._dlq.poll(0)
        self.dead_lettered += 1
        metrics.EVENTS_INVALID.labels(exc.reason, self.group_id).inc()
        metrics.DEAD_LETTERS.labels(exc.reason).inc()
        log.warning("dead-lettered %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)

    def assigned(self) -> bool:
        """Whether the group has given this consumer any partitions yet."""
        return bool(self._consumer.assignment())

    def commit(self) -> None:
        """Commit what was polled, once its dead letters are safely written."""
        if self._dlq.flush(30):
            raise DeliveryError("dead letters not acknowledged; not committing offsets")
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def close(self) -> None:
        self._dlq.flush(30)
        self._consumer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _header_pairs(headers: Any) -> list[tuple[str, bytes | None]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in items]


class OutputBatch:
    """The outputs of one input batch; :meth:`delivered` returns once the broker has
    acknowledged every one of them (or raises :class:`DeliveryError`).

    Created by :meth:`BatchProducer.batch`; produce with :meth:`produce`, then :meth:`seal`.
    Delivery reports arrive on the producer's poll thread and resolve the batch on the event
    loop, so the worker can process its next batch while this one is in flight.
    """

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()
        self._remaining = 0
        self._sealed = False
        self._errors: list[str] = []
        self.count = 0

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        if self._sealed:
            raise RuntimeError("produce on a sealed output batch")
        with self._lock:
            self._remaining += 1
            self.count += 1
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=self._report,
                )
                return
            except BufferError:  # local queue full: let the poll thread drain reports
                time.sleep(0.005)

    def seal(self) -> OutputBatch:
        """No more records: the batch resolves when the ones produced are acknowledged."""
        with self._lock:
            self._sealed = True
            self._maybe_done()
        return self

    async def delivered(self, timeout: float = 60.0) -> None:
        """Wait for every record of the (sealed) batch.

        Raises:
            DeliveryError: a record was refused, or not acknowledged within ``timeout``.
        """
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            raise DeliveryError(
                f"{self._remaining} of {self.count} records unacknowledged after {timeout}s"
            ) from None
        if self._errors:
            raise DeliveryError(f"{len(self._errors)} records refused: {self._errors[:3]}")

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            self._remaining -= 1
            if err is not None:
                self._errors.append(f"{msg.topic()}: {err}")
            self._maybe_done()

    def _maybe_done(self) -> None:  # holds the lock
        if self._sealed and self._remaining == 0:
            self._loop.call_soon_threadsafe(_resolve, self._done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class BatchProducer:
    """The stream worker's output producer: idempotent, ``acks=all``, batched by librdkafka.

    Each input batch gets an :class:`OutputBatch` (:meth:`batch`); a thread serves delivery
    reports, so batches complete independently and the event loop never blocks on the broker.
    A batch that is not fully acknowledged raises :class:`DeliveryError`, so the caller never
    commits its input.
    """

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(
            {
                **settings.kafka.librdkafka(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": settings.kafka.producer_linger_ms,
                "compression.type": settings.kafka.producer_compression,
            }
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="streamrec-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def batch(self) -> OutputBatch:
        """A new output batch (call from the event loop that will await it)."""
        return OutputBatch(self._producer, asyncio.get_running_loop())

    def close(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._poller.join(timeout=5)
