"""The faust-streaming worker: a thin adapter around :class:`BatchProcessor`.

decode/validate -> dead-letter the invalid -> process the batch -> publish recommendations and
rewards -> (once the broker has them) confirm them in state, and make sure what they showed is
there -> ack the input events to faust, which commits. Both state writes are deferred: the next
batch's apply carries them (one round trip per batch under load), or they are flushed alone.

Input events are acknowledged only after the batch's outputs are acknowledged by the broker,
so a crash redelivers (at-least-once); state is idempotent by event_id, so every valid event
is reflected exactly once in state. Delivery is *pipelined*: batches are taken without
auto-ack (:class:`MicroBatches` over a ``noack()`` stream), and while up to
``max_inflight_batches`` batches wait for their outputs' acknowledgements the next batch is
already processed. Batches also overlap in the worker: the next batch is decoded and its
state call encoded while this one's is in flight, and this one's records are encoded and
produced while the next one's is. Acks still happen in batch order, and state work (apply,
rank, defer what was shown) stays strictly sequential, one batch at a time, so per-session
order holds and a batch's state call carries the pages the batch before it showed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import faust
from faust.types import EventT
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    before_sleep_log,
    retry_if_exception_type,
    wait_exponential,
)

from streamrec import metrics
from streamrec.client import BatchProducer, OutputBatch
from streamrec.config import Settings
from streamrec.deadletter import DeadLetter
from streamrec.errors import ConfigError, InvalidEvent, StateError
from streamrec.events import decode_event, encode
from streamrec.serving.ranker import Ranker
from streamrec.serving.service import Recommender
from streamrec.state.store import StateStore
from streamrec.stream.batching import MicroBatches
from streamrec.stream.processor import BatchProcessor, BatchResult
from streamrec.stream.transport import use_fetch_settings

__all__ = ["build_app", "make_worker", "run_worker"]

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return context


def _faust_datadir(settings: Settings) -> str:
    """Under the streamrec home. faust formats the path (``{conf.name}``), so braces are
    escaped."""
    path = str(settings.home / "faust" / f"{settings.stream.app_id}-data")
    return path.replace("{", "{{").replace("}", "}}")


#: How long a delivered batch's ack waits for the next batch's state call to carry what the
#: batch showed before writing it alone (acks are committed once a second anyway).
CARRY_WAIT_S = 0.05

#: faust's count-based commit, out of reach (see build_app).
_NEVER_BY_COUNT = 2**62


def build_app(settings: Settings, ranker: Ranker) -> faust.App:
    """A faust app with one agent over the events topic. Nothing connects until it runs."""
    stream = settings.stream
    app = faust.App(
        stream.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        # faust's default is ./{app id}-data, wherever the worker was started.
        datadir=_faust_datadir(settings),
        autodiscover=False,
        web_enabled=False,
        topic_replication_factor=settings.topics.replication_factor,
        topic_partitions=settings.topics.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=settings.kafka.producer_linger_ms,
        # Offsets are committed by faust's timer task, once a second. A count-based commit
        # (faust's default, every 10,000 acks) is awaited inside the fetch loop, which then
        # hands the agent nothing until the broker answers; redelivery after a crash is
        # bounded by the interval either way, and replays are idempotent.
        broker_commit_every=_NEVER_BY_COUNT,
        broker_commit_interval=1.0,
        # Stopping (or losing partitions) does not wait for unacked events: they are not
        # committed, so the next owner reads them again, and their state is idempotent. faust
        # waits by default, forever when a batch cannot finish (Redis down, a failed batch).
        stream_wait_empty=False,
    )
    use_fetch_settings(
        app, fetch_min_bytes=stream.fetch_min_bytes, fetch_max_wait_ms=stream.fetch_max_wait_ms
    )
    events_topic = app.topic(
        settings.topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topics.partitions,
    )
    holder: dict[str, Any] = {}
    lag = LagTracker(app, stream.app_id)

    @app.timer(interval=5.0)
    async def _refresh_lag() -> None:
        lag.refresh()

    @app.task
    async def _open_state() -> None:
        state = StateStore.from_settings(settings.redis)
        unreachable = await _check_redis(state)
        if unreachable:
            log.warning(
                "Redis %s does not take the worker's state yet (%s); batches wait for it "
                "(STREAMREC_STREAM__STATE_RETRY_S)",
                state.address,
                unreachable,
            )
            # and its answer, once it comes, is checked too (it may refuse the credentials)
            holder["check"] = asyncio.ensure_future(_check_redis_until_it_answers(state))
        holder["state"] = state
        holder["out"] = BatchProducer(settings)
        recommender = Recommender(state, ranker, popular_refresh_s=stream.popular_refresh_s)
        holder["processor"] = BatchProcessor(state, recommender, stream)
        metrics.MODEL_INFO.info({"ranker": ranker.name, "version": ranker.version})
        tune_gc(stream.gc_thresholds, freeze=stream.gc_freeze)
        log.info("worker %s ready: ranker=%s", stream.app_id, ranker.version)

    @app.agent(events_topic)
    async def process_events(stream_in: faust.StreamT) -> None:
        events = stream_in.noack()  # type: ignore[attr-defined]  # acked in _acknowledge
        batcher = MicroBatches(events.events(), stream.batch_size, stream.batch_max_wait_ms / 1000)
        inflight: deque[asyncio.Future[None]] = deque()
        # Pipelined, an ack may wait for the next batch to carry its batch's writes; waiting
        # for every ack (max_inflight_batches 0), the next batch only comes after it.
        carry_wait_s = CARRY_WAIT_S if stream.max_inflight_batches > 0 else 0.0
        turn: asyncio.Future[None] | None = None  # the last batch's state work is done
        try:
            async with contextlib.aclosing(aiter(batcher)) as batches:
                async for batch in batches:
                    while "processor" not in holder:  # pragma: no cover - start-up race
                        await asyncio.sleep(0.01)
                    processor, out = holder["processor"], holder["out"]
                    mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    handling = asyncio.ensure_future(
                        _handle(lag, batch, processor, settings, out, after=turn, done=mine)
                    )
                    handling.add_done_callback(_stop_on_failure)
                    turn = mine
                    previous = inflight[-1] if inflight else None
                    acked = _acknowledge(
                        events,
                        batch,
                        handling,
                        holder["state"],
                        previous,
                        carry_wait_s,
                        stream.state_retry_s,
                    )
                    inflight.append(asyncio.ensure_future(acked))
                    inflight[-1].add_done_callback(_stop_on_failure)
                    while len(inflight) > stream.max_inflight_batches:
                        # a failed batch (state or delivery) crashes the agent, unacked
                        await inflight.popleft()
        finally:
            for task in inflight:  # stopping: acknowledge what was delivered, no more
                task.cancel()

    return app


#: Exit code of a worker stopped by a batch it could not finish.
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE
#: Exit code of a worker whose Redis refuses its credentials (nothing was read).
EXIT_CONFIG = 78  # EX_CONFIG


async def _check_redis(state: StateStore) -> str | None:
    """:meth:`StateStore.check_access`; a refusal stops the worker (exit 78)."""
    try:
        return await state.check_access()
    except ConfigError as exc:
        _stop(EXIT_CONFIG, "the worker stops (exit %d): %s", EXIT_CONFIG, exc)


async def _check_redis_until_it_answers(state: StateStore, every_s: float = 2.0) -> None:
    while await _check_redis(state) is not None:
        await asyncio.sleep(every_s)
    log.info("Redis %s answers", state.address)


def _stop(code: int, message: str, *args: Any, exc_info: BaseException | None = None) -> NoReturn:
    """Log, flush and leave the process now: faust would otherwise restart the agent, or
    log the error and keep the worker running with nothing to do."""
    log.critical(message, *args, exc_info=exc_info)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _stop_on_failure(future: asyncio.Future[Any]) -> None:
    """A batch that failed (Redis unreachable past ``stream.state_retry_s``, outputs not
    delivered) stops the worker at once, exit code :data:`EXIT_BATCH_FAILED`. Its events are
    unacked, so uncommitted, and a restarted worker reads them again. faust would restart the
    agent instead, which reads on from the consumer's position, past them, and then waits
    for their acks forever when it stops. Stopping hard loses nothing: what was acked was
    delivered, and state is idempotent (``tests/integration/test_worker_crash.py``)."""
    if future.cancelled() or future.exception() is None:
        return
    _stop(
        EXIT_BATCH_FAILED,
        "batch failed; the worker stops (exit %d) and its events are read again on restart",
        EXIT_BATCH_FAILED,
        exc_info=future.exception(),
    )


def tune_gc(thresholds: tuple[int, int, int] | None, *, freeze: bool) -> None:
    """Keep the cyclic garbage collector out of the latency tail: collect less often, and
    (``freeze``) exempt everything alive now -- modules, the app, the ranker -- from future
    full collections. Objects allocated later are collected as usual."""
    if thresholds is not None:
        gc.set_threshold(*thresholds)
    if freeze:
        gc.collect()
        gc.freeze()


@dataclass(frozen=True, slots=True)
class _Handled:
    """A processed batch on its way out."""

    outputs: OutputBatch  # sealed
    event_ids: list[str]  # the valid events (their outputs get confirmed in state)
    append_times: dict[str, float]  # per event with a recommendation (latency metric)
    shown: list[asyncio.Future[None]]  # what the recommendations showed, once in Redis


async def _acknowledge(
    events: faust.StreamT,
    batch: Sequence[EventT],
    handling: asyncio.Future[_Handled],
    state: StateStore,
    previous: asyncio.Future[None] | None,
    carry_wait_s: float,
    retry_s: float,
) -> None:
    """Once this batch is handled and its outputs delivered (and the previous batch acked):
    mark them delivered in state (deferred: written with the next state call), make sure
    what they showed is in Redis (waiting up to ``carry_wait_s`` for the next batch's apply
    to carry it, so a busy worker makes one round trip per batch), then ack the inputs. A
    crash before the mark makes a redelivery emit the outputs again (never lose them); a
    lost mark only risks such a duplicate."""
    handled = await handling
    if previous is not None:
        await previous
    await handled.outputs.delivered()
    state.defer_confirm(handled.event_ids)
    for written in handled.shown:  # usually carried by the next batch's apply by now
        await _settle_with_retry(state, written, carry_wait_s, retry_s)
    for event in batch:
        await events.ack(event)
    now = time.time()
    for produced_at in handled.append_times.values():
        metrics.EVENT_TO_REC_SECONDS.observe(max(0.0, now - produced_at))


async def _handle(
    lag: LagTracker,
    batch: Sequence[EventT],
    processor: BatchProcessor,
    settings: Settings,
    out: BatchProducer,
    *,
    after: asyncio.Future[None] | None,
    done: asyncio.Future[None],
) -> _Handled:
    """Decode, process and produce one batch (outputs sealed, not yet delivered).

    Batches overlap where state allows: a batch is decoded, and its records encoded and
    produced, while another batch's state call is in flight. Its state work -- apply, rank,
    and defer what it showed -- waits for the previous batch's (``after``) and resolves
    ``done`` when finished, so state updates stay strictly in batch order and each apply
    carries the pages the batch before it showed (a click in this batch is attributed)."""
    topics = settings.topics
    try:
        outputs = out.batch()
        valid = []
        append_times = {}
        sources = {}
        consumer_name = settings.stream.app_id
        consumed: Counter[str] = Counter()  # per event type, added to the metric once per batch
        for item in batch:
            message = item.message
            try:
                event = decode_event(message.value, max_bytes=settings.stream.max_event_bytes)
            except InvalidEvent as exc:  # the only error decode_event raises, by contract
                _dead_letter(outputs, settings, exc, message)
                metrics.EVENTS_INVALID.labels(exc.reason, consumer_name).inc()
                continue
            consumed[event.type.value] += 1
            valid.append(event)
            sources[event.event_id] = message
            append_times[event.event_id] = message.timestamp
        for kind, count in consumed.items():
            metrics.EVENTS_CONSUMED.labels(kind, consumer_name).inc(count)
        lag.batch(batch)
        try:
            encoded = processor.encode(valid) if valid else None
        except Exception:  # an event state cannot take: _process finds and dead-letters it
            encoded = None
        if after is not None:
            await after
        result = await _process(processor, valid, sources, outputs, settings, encoded)
    finally:
        # Failed or cancelled too, whatever the step: the next batch is not held up forever.
        if not done.done():
            done.set_result(None)
    # No await from here on: this batch's records are produced before the next batch's.
    for key, record in result.recommendations:
        outputs.produce(topics.recommendations, record.to_json(), key.encode())
    for key, reward in result.rewards:
        outputs.produce(topics.rewards, encode(reward), key.encode())
    triggered = {
        record.event_id: append_times[record.event_id]
        for _, record in result.recommendations
        if record.event_id and append_times.get(record.event_id)
    }
    return _Handled(outputs.seal(), [event.event_id for event in valid], triggered, result.shown)


#: How long a Redis error that is not a lost connection (READONLY, NOPERM, a script error)
#: is retried when ``stream.state_retry_s`` is 0: it may be a failover, or it may never pass.
_REFUSED_RETRY_S = 300.0


def _unreachable(error: BaseException | None) -> bool:
    """Redis could not be reached (connection refused or lost, timed out), as opposed to
    Redis answering with an error."""
    cause = error.__cause__ if error is not None else None
    if isinstance(cause, AuthenticationError):  # a ConnectionError to redis-py, but Redis answered
        return False
    return isinstance(cause, RedisConnectionError | RedisTimeoutError | OSError)


def _state_retry(limit_s: float) -> AsyncRetrying:
    """Transient state errors retried with back-off: for ``limit_s`` seconds
    (``stream.state_retry_s``), or with 0 until Redis is reachable again (an error Redis
    answers with is retried for 5 minutes)."""

    def give_up(state: RetryCallState) -> bool:
        if limit_s:
            return (state.seconds_since_start or 0.0) >= limit_s
        error = state.outcome.exception() if state.outcome else None
        elapsed = state.seconds_since_start or 0.0
        return not _unreachable(error) and elapsed >= _REFUSED_RETRY_S

    return AsyncRetrying(
        retry=retry_if_exception_type(StateError),
        wait=wait_exponential(multiplier=0.1, max=10),
        stop=give_up,
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


async def _process_with_retry(
    processor: BatchProcessor,
    events: list[Any],
    *,
    replay: bool = False,
    encoded: bytes | None = None,
) -> BatchResult:
    """Process, retrying transient state errors; a retry is a replay (the failed call may
    have applied the events: see :meth:`StateStore.apply`)."""
    async for attempt in _state_retry(processor.settings.state_retry_s):
        with attempt:
            again = replay or attempt.retry_state.attempt_number > 1
            return await processor.process(events, replay=again, encoded=encoded)
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


async def _settle_with_retry(
    state: StateStore, written: asyncio.Future[None], within: float, retry_s: float
) -> None:
    async for attempt in _state_retry(retry_s):
        with attempt:
            await state.settle(written, within=within)


async def _process(
    processor: BatchProcessor,
    valid: list[Any],
    sources: dict[str, Any],
    out: OutputBatch,
    settings: Settings,
    encoded: bytes | None = None,
) -> BatchResult:
    """Process a batch (``encoded`` ahead: :meth:`BatchProcessor.encode`); if it fails for a
    non-transient reason, isolate and dead-letter the events that fail on their own, so one
    poison event cannot stall its partition."""
    try:
        return await _process_with_retry(processor, valid, encoded=encoded)
    except StateError:
        raise  # Redis unreachable past stream.state_retry_s: the worker stops, unacked
    except Exception:
        log.exception("batch of %d failed; processing its events one by one", len(valid))
    result = BatchResult()
    for event in valid:
        try:  # a replay: the batch call may have applied the events before it failed
            single = await _process_with_retry(processor, [event], replay=True)
        except StateError:
            raise
        except Exception as exc:
            error = InvalidEvent("processing_failed", f"{type(exc).__name__}: {exc}")
            _dead_letter(out, settings, error, sources[event.event_id])
            continue
        result.recommendations += single.recommendations
        result.rewards += single.rewards
        result.applied += single.applied
        result.duplicates += single.duplicates
        result.reemitted += single.reemitted
        result.shown += single.shown
    return result


def _dead_letter(out: OutputBatch, settings: Settings, error: InvalidEvent, message: Any) -> None:
    """The record as it came, with the reason, to the dead-letter topic (sent with the batch)."""
    letter = DeadLetter.of(
        error,
        value=message.value,
        key=message.key,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        consumer=settings.stream.app_id,
        headers=list(_headers(message.headers)),
    )
    out.produce(settings.topics.dead_letters, letter.value, letter.key, letter.headers())
    metrics.DEAD_LETTERS.labels(error.reason).inc()
    log.warning(
        "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, error
    )


def _headers(headers: Any) -> Any:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), value) for name, value in items]


class LagTracker:
    """Per-partition lag = end of partition - next offset to process, refreshed from each batch
    and by a timer (so a stalled worker's lag keeps growing); partitions that moved to another
    worker are dropped from the gauge."""

    def __init__(self, app: faust.App, consumer: str) -> None:
        self.app = app
        self.consumer = consumer
        self.positions: dict[Any, int] = {}  # tp -> next offset to process

    def batch(self, batch: Sequence[EventT]) -> None:
        for item in batch:
            self.positions[item.message.tp] = item.message.offset + 1
        self.refresh()

    def refresh(self) -> None:
        assigned = set(self.app.consumer.assignment())
        for tp in list(self.positions):
            labels = (tp.topic, str(tp.partition), self.consumer)
            if tp not in assigned:
                del self.positions[tp]
                with contextlib.suppress(KeyError):
                    metrics.CONSUMER_LAG.remove(*labels)
                continue
            highwater = self.app.consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(*labels).set(max(0, highwater - self.positions[tp]))


def run_worker(settings: Settings, ranker: Ranker, *, loglevel: str = "info") -> None:
    """Run the worker until SIGINT/SIGTERM (blocking)."""
    if settings.stream.event_loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")  # the loop policy, before faust creates its loops
    metrics.serve(settings.metrics_port, settings.metrics_host)
    app = build_app(settings, ranker)
    app.conf.datadir.parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    make_worker(app, loglevel).execute_from_commandline()


def make_worker(app: faust.App, loglevel: str) -> Any:
    """faust's Worker without its terminal spinner. At a log level of WARN or above, faust
    sets the *root* logger to DEBUG so the spinner turns on every record, and leaves it there
    after start-up: every debug call in faust, mode and aiokafka then built a record that no
    handler wanted (~7 % of the consumer thread's samples in a profile)."""
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker
