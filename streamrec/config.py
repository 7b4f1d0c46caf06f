"""Settings: one frozen pydantic-settings object for every process.

Values come, highest priority first, from keyword arguments, ``STREAMREC_*`` environment variables
(nested groups use ``__``: ``STREAMREC_KAFKA__BOOTSTRAP_SERVERS``), an optional ``.env``-style file
named by ``STREAMREC_ENV_FILE`` (default ``streamrec.env`` in the working directory, if present),
and the defaults below. Every field is documented in the README's configuration table, which
``tests/test_config.py`` checks against this module.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from streamrec.errors import ConfigError

__all__ = [
    "ApiSettings",
    "InvalidSettings",
    "KafkaSettings",
    "OnlineSettings",
    "RedisSettings",
    "Settings",
    "StackSettings",
    "StreamSettings",
    "TopicSettings",
    "get_settings",
    "to_env",
    "unknown_variable",
]

log = logging.getLogger(__name__)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _check_event_types(names: Iterable[str]) -> None:
    """Refuse names that are not event types (the worker would never see such an event)."""
    from streamrec.events import EventType

    valid = [kind.value for kind in EventType]
    unknown = [name for name in names if name not in valid]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        verb = "is not an event type" if len(unknown) == 1 else "are not event types"
        raise ValueError(f"{listed} {verb}; event types: {', '.join(valid)}")


class KafkaSettings(BaseModel):
    """How every streamrec process reaches Kafka (any Kafka-protocol broker)."""

    model_config = _FROZEN

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated host:port list (default: the local stack's Kafka port).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL / SASL_SSL.")
    client_id: str = Field("streamrec", description="Client id prefix sent to the broker.")
    producer_linger_ms: int = Field(
        1,
        ge=0,
        description="Producer batching delay (the worker's outputs and the producer SDK).",
    )
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Producer compression; the worker reads every codec.",
    )
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties merged into producer/consumer configs.",
    )

    def librdkafka(self) -> dict[str, Any]:
        """Common librdkafka (confluent-kafka) properties."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        conf.update(self.extra)
        return conf

    def aiokafka(self) -> dict[str, Any]:
        """Common aiokafka keyword arguments."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            kwargs["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return kwargs


class TopicSettings(BaseModel):
    """Topic names and how `streamrec topics create` provisions them."""

    model_config = _FROZEN

    events: str = Field("streamrec.events", description="Incoming user events.")
    recommendations: str = Field("streamrec.recommendations", description="Ranked output.")
    rewards: str = Field("streamrec.rewards", description="Attributed rewards (feedback).")
    dead_letters: str = Field("streamrec.dead-letters", description="Rejected input + reason.")
    partitions: int = Field(4, ge=1, description="Partitions of the events topic.")
    output_partitions: int = Field(4, ge=1, description="Partitions of the other topics.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of every topic.")

    def all(self) -> dict[str, int]:
        """Topic name -> partition count."""
        return {
            self.events: self.partitions,
            self.recommendations: self.output_partitions,
            self.rewards: self.output_partitions,
            self.dead_letters: self.output_partitions,
        }


class RedisSettings(BaseModel):
    """Where state lives and how long it stays."""

    model_config = _FROZEN

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL, redis:// or rediss:// (default: the local stack's Redis port).",
    )
    key_prefix: str = Field("sr", description="Prefix of every key streamrec writes.")
    session_ttl_s: int = Field(1800 * 4, ge=60, description="TTL of session keys.")
    user_ttl_s: int = Field(86400 * 90, ge=60, description="TTL of user keys.")
    dedup_ttl_s: int = Field(86400 * 7, ge=60, description="How long an event_id is remembered.")
    session_len: int = Field(50, ge=1, description="Items kept per session.")
    user_history_len: int = Field(200, ge=1, description="Items kept per user.")
    popularity_half_life_s: float = Field(
        3600.0 * 24, gt=0, description="Half-life of the decayed item popularity (event time)."
    )
    popularity_max_future_s: float = Field(
        3600.0,
        ge=0,
        description="Popularity takes an event stamped further ahead of the worker's clock "
        "as if stamped this far ahead: a producer whose clock runs fast cannot pin its items "
        "to the top (each half-life ahead doubles an event's weight). The event itself is "
        "kept as sent.",
    )
    max_connections: int = Field(
        64,
        ge=1,
        description="Redis connections per process (the worker's or the API's pool, opened as "
        "needed): a call beyond them waits up to pool_timeout_s for a free one. The API holds "
        "one per request in flight; the worker a few (its writes take turns).",
    )
    pool_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest a call waits for a free Redis connection of the pool; then it "
        "fails (the API answers 503 'connection pool exhausted', not 'Redis unavailable').",
    )


class StreamSettings(BaseModel):
    """The stream worker's behaviour."""

    model_config = _FROZEN

    app_id: str = Field("streamrec-worker", description="Faust app id = Kafka consumer group.")
    recommend_on: tuple[str, ...] = Field(
        ("view", "click"), description="Event types that trigger a recommendation."
    )
    top_k: int = Field(10, ge=1, le=500, description="Items per recommendation.")
    batch_size: int = Field(256, ge=1, description="Max events ranked in one micro-batch.")
    batch_max_wait_ms: int = Field(
        5, ge=0, description="Max wait for a micro-batch to fill, from its first event."
    )
    max_inflight_batches: int = Field(
        4,
        ge=0,
        description="Batches whose outputs may still be in flight to the broker while the next "
        "one is processed (their inputs are acked only once delivered); 0 = wait every time.",
    )
    fetch_min_bytes: int = Field(
        64 * 1024,
        ge=1,
        description="The worker's consumer asks the broker for at least this much data per "
        "fetch, waiting up to fetch_max_wait_ms for it (Kafka's fetch.min.bytes): fewer, "
        "larger fetches cost the worker less per event at moderate rates. faust fixes 1.",
    )
    fetch_max_wait_ms: int = Field(
        5,
        ge=0,
        description="Longest the broker holds a fetch for fetch_min_bytes (Kafka's "
        "fetch.max.wait.ms): the most it adds to an event's latency. faust fixes 1500.",
    )
    max_event_bytes: int = Field(
        64 * 1024, ge=256, description="Larger payloads are dead-lettered."
    )
    state_retry_s: float = Field(
        0,
        ge=0,
        description="How long a batch's Redis calls are retried (with back-off up to 10 s) "
        "while Redis is unreachable; 0 = until Redis is back (the worker waits, its lag "
        "grows, nothing is skipped). Past a limit the worker exits with an error, unacked, "
        "and a restarted worker reads the batch again.",
    )
    reward_window_s: int = Field(1800, ge=1, description="Attribution window for rewards.")
    reward_values: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 3.0, "purchase": 10.0},
        description="Reward by event type for an attributed event.",
    )
    ranker: str = Field("popularity", description="Ranker name (popularity, model, policy).")
    policy_path: Path | None = Field(
        None, description="Exported RL policy (`streamrec agent export`) for ranker=policy."
    )
    policy_candidates: str = Field(
        "model", description="Ranker whose top candidates the policy re-ranks (model, popularity)."
    )
    policy_temperature: float = Field(
        1.0, ge=0, description="Softmax temperature of the policy's page (0 = greedy)."
    )
    policy_epsilon: float = Field(
        0.0, ge=0, le=1, description="Share of uniform exploration mixed into the policy."
    )
    policy_diversity: float = Field(
        0.0, ge=0, description="Penalty on similarity to items already on the page."
    )
    policy_log_decisions: bool = Field(
        True,
        description="Put the policy's observation and action in each recommendation record "
        "(what `streamrec agent collect` turns into episodes for offline RL).",
    )
    popular_refresh_s: float = Field(
        1.0,
        ge=0,
        description="Max age of the in-process snapshot of popular items. A context's list "
        "shorter than a request needs is read again every batch while the overall list "
        "cannot fill the request alone.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="The worker's event loop: uvloop (libuv; less overhead per callback and "
        "socket read, which faust and the Redis client make many of) or Python's asyncio.",
    )
    gc_freeze: bool = Field(
        True,
        description="Once the worker is up, move every object alive into the garbage "
        "collector's permanent generation (gc.freeze), so full collections scan only what the "
        "stream allocates: they took 50-110 ms (the p99 latency) and take ~1 ms frozen.",
    )
    gc_thresholds: tuple[int, int, int] | None = Field(
        (50_000, 20, 100),
        description="gc.set_threshold for the worker process (Python's default 700, 10, 10 "
        "collects every few events at stream rates); null = leave Python's.",
    )
    new_item_slots: int = Field(
        1,
        ge=0,
        description="ranker=model: last positions of each list reserved for the best-scored "
        "young new items (learned from the stream after the offline training); 0 = off.",
    )
    new_item_max_events: int = Field(
        100, ge=1, description="A new item stops getting a reserved slot at this many events."
    )
    new_item_temperature: float = Field(
        1.0,
        ge=0,
        description="Sampling temperature of the new-item slot over the user's standardised "
        "scores of the young items (0 = always the best-scored one).",
    )

    @field_validator("recommend_on")
    @classmethod
    def _recommend_on_event_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_event_types(value)
        return value

    @field_validator("reward_values")
    @classmethod
    def _reward_values_event_types(cls, value: dict[str, float]) -> dict[str, float]:
        _check_event_types(value)
        return value


class OnlineSettings(BaseModel):
    """The fine-tuner (`streamrec finetune`) and the model the worker serves."""

    model_config = _FROZEN

    registry_dir: Path | None = Field(
        None, description="Model registry (default: data dir/models)."
    )
    group_id: str = Field("streamrec-finetune", description="Consumer group of the fine-tuner.")
    dedup_events: int = Field(
        200_000,
        ge=0,
        description="Event ids the fine-tuner remembers (checkpointed with it) to learn each "
        "event once: a producer's retry or a log replayed again resends the same ids.",
    )
    train_every_events: int = Field(256, ge=1, description="Events between training rounds.")
    train_every_s: float = Field(5.0, gt=0, description="Max seconds between training rounds.")
    steps_per_round: int = Field(4, ge=1, description="Optimisation steps per round.")
    batch_size: int = Field(64, ge=1, description="Examples per optimisation step.")
    lr: float = Field(1e-4, gt=0, description="Fine-tuning learning rate (Adam).")
    train_positions: int = Field(
        50,
        ge=1,
        description="Newest positions of each example trained as targets (1 = the event only).",
    )
    recent_share: float = Field(
        0.75, ge=0, le=1, description="Share of recent examples in a batch."
    )
    replay_recent: int = Field(4096, ge=1, description="Recent examples kept.")
    replay_reservoir: int = Field(16384, ge=0, description="Reservoir sample of older examples.")
    window: int = Field(5000, ge=10, description="Events in the rolling prequential window.")
    promote_every_s: float = Field(30.0, gt=0, description="Seconds between promotion checks.")
    promote_margin: float = Field(
        0.01, ge=0, description="Relative NDCG@10 gain a candidate needs; also the rollback slack."
    )
    promote_min_events: int = Field(500, ge=1, description="Window events needed to decide.")
    checkpoint_every_s: float = Field(
        30.0, gt=0, description="Seconds between fine-tuner checkpoints (and offset commits)."
    )
    new_item_min_events: int = Field(
        3,
        ge=1,
        description="Events a new item needs before it is recommended (first interactions "
        "only, for a model trained with `--repeats first`).",
    )
    context_len: int = Field(
        50, ge=1, description="Newest history items the fine-tuner scores and trains on."
    )


class ApiSettings(BaseModel):
    """HTTP API."""

    model_config = _FROZEN

    host: str = Field("127.0.0.1", description="Bind address of the HTTP API.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP API.")
    max_k: int = Field(100, ge=1, description="Largest k a client may ask for.")


class StackSettings(BaseModel):
    """The local stack (`streamrec stack`): real Kafka (KRaft) and Redis, no Docker."""

    model_config = _FROZEN

    kafka_version: str = Field("4.1.1", description="Apache Kafka version from Maven Central.")
    scala_version: str = Field("2.13", description="Scala suffix of the kafka artifact.")
    log4j_version: str = Field("2.24.3", description="log4j2 version for the broker's logging.")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Kafka client port.")
    controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port.")
    kafka_heap: str = Field("512m", description="Broker JVM heap (-Xmx and -Xms).")
    redis_port: int = Field(6379, ge=1, le=65535, description="Redis port.")
    redis_server: str = Field("redis-server", description="redis-server binary.")
    prometheus_port: int = Field(9090, ge=1, le=65535, description="Prometheus port.")
    prometheus_bin: str = Field("prometheus", description="prometheus binary.")
    start_timeout_s: float = Field(90.0, gt=0, description="Max wait for a component to be ready.")


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _default_home() -> Path:
    return Path(os.environ.get("STREAMREC_HOME", Path.cwd() / ".streamrec"))


class Settings(BaseSettings):
    """Every setting of streamrec. Immutable; build once in an entry point and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_",
        env_nested_delimiter="__",
        env_file=os.environ.get("STREAMREC_ENV_FILE", "streamrec.env"),
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(default_factory=_default_home, description="Root of state, cache, logs.")
    data_dir: Path | None = Field(None, description="Datasets and models (default: home/data).")
    cache_dir: Path | None = Field(None, description="Downloaded jars (default: home/cache).")
    metrics_port: int = Field(
        9108,
        ge=0,
        # each process serves on metrics_port + its offset (worker 0, api 1, finetune 2,
        # agent 3, a second bench worker 4: metrics.PROCESS_PORT_OFFSETS)
        le=65535 - 4,
        description="Prometheus /metrics port of the worker; the API, fine-tuner and agent "
        "serve on the next ports (+1, +2, +3); 0 turns /metrics off.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Bind address of /metrics (0.0.0.0 inside containers)."
    )
    log_level: str = Field("INFO", description="Python log level.")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # type: ignore[arg-type]
    topics: TopicSettings = Field(default_factory=TopicSettings)  # type: ignore[arg-type]
    redis: RedisSettings = Field(default_factory=RedisSettings)  # type: ignore[arg-type]
    stream: StreamSettings = Field(default_factory=StreamSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    online: OnlineSettings = Field(default_factory=OnlineSettings)  # type: ignore[arg-type]
    stack: StackSettings = Field(default_factory=StackSettings)  # type: ignore[arg-type]

    @model_validator(mode="before")
    @classmethod
    def _point_at_local_stack(cls, data: Any) -> Any:
        """Unless given, Kafka and Redis addresses follow the local stack's ports."""
        if not isinstance(data, dict):
            return data
        stack = data.get("stack") or {}
        ports = stack if isinstance(stack, dict) else stack.model_dump()
        kafka = data.get("kafka") or {}
        if isinstance(kafka, dict) and "bootstrap_servers" not in kafka:
            port = ports.get("kafka_port", 9092)
            data = {**data, "kafka": {**kafka, "bootstrap_servers": f"127.0.0.1:{port}"}}
        redis = data.get("redis") or {}
        if isinstance(redis, dict) and "url" not in redis:
            port = ports.get("redis_port", 6379)
            data = {**data, "redis": {**redis, "url": f"redis://127.0.0.1:{port}/0"}}
        return data

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
        if level not in _LOG_LEVELS:  # logging and uvicorn take these names
            raise ValueError(f"should be one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: RedisSettings) -> RedisSettings:
        """The URL redis-py will take (it raises deep in a worker's or the API's start-up)."""
        url = value.url
        problem = None
        if not url.startswith(_REDIS_SCHEMES):
            problem = ""
        elif not url.startswith("unix://"):
            try:
                _ = urlsplit(url).port
            except ValueError as exc:
                problem = f"; {exc}"
        if problem is not None:
            raise PydanticCustomError(
                "redis_url",
                f"url must be a {', '.join(_REDIS_SCHEMES[:-1])} or {_REDIS_SCHEMES[-1]} URL"
                + problem,
                {"field": "url", "value": re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1*****@", url)},
            )
        return value

    @property
    def data_path(self) -> Path:
        return self.data_dir or self.home / "data"

    @property
    def cache_path(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def registry_path(self) -> Path:
        return self.online.registry_dir or self.data_path / "models"

    @property
    def state_path(self) -> Path:
        """Where the local stack keeps broker/Redis data, pids and logs."""
        return self.home / "stack"


class InvalidSettings(ConfigError):
    """Settings that do not validate; ``problems`` holds one line per setting, each naming its
    environment variable: ``STREAMREC_STREAM__BATCH_SIZE: should be ... (got -5)``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with keyword overrides on top.

    Raises:
        InvalidSettings: a value does not validate (the message names the variable).

    ``STREAMREC_*`` variables that match no setting are logged as a warning (once each), with
    the closest setting's name.
    """
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise InvalidSettings(_validation_problems(exc, env_file)) from exc
    except SettingsError as exc:
        raise InvalidSettings(_parsing_problems(exc, env_file)) from exc
    _warn_unknown(env_file)
    return settings


def to_env(settings: Settings) -> dict[str, str]:
    """Environment variables that rebuild ``settings`` in another process (e.g. a worker)."""
    import json

    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub_value is None:
                    continue
                if isinstance(settings_value := getattr(getattr(settings, name), sub), SecretStr):
                    sub_value = settings_value.get_secret_value()
                text = sub_value if isinstance(sub_value, str) else json.dumps(sub_value)
                env[f"STREAMREC_{name.upper()}__{sub.upper()}"] = text
        else:
            env[f"STREAMREC_{name.upper()}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
    return env


# --- what is wrong with the settings, by environment variable --------------------------------

_PREFIX = str(Settings.model_config.get("env_prefix") or "").upper()  # STREAMREC_
_DELIMITER = str(Settings.model_config.get("env_nested_delimiter") or "__")
#: ``STREAMREC_*`` variables of the project's own that are not settings: the settings file's
#: name, and the test suite's ``STREAMREC_TEST_*`` (tests/conftest.py).
_NOT_SETTINGS = (f"{_PREFIX}ENV_FILE",)
_NOT_SETTINGS_PREFIXES = (f"{_PREFIX}TEST_",)
_WARNED: set[tuple[str, str]] = set()
_JSON_TYPES = {
    "list_type": "list",
    "tuple_type": "list",
    "set_type": "list",
    "frozen_set_type": "list",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}


def unknown_variable(name: str) -> bool:
    """Whether ``name`` has the settings' prefix but sets nothing (and is not one of the
    project's variables that are not settings: ``STREAMREC_ENV_FILE``, ``STREAMREC_TEST_*``)."""
    upper = name.upper()
    if not upper.startswith(_PREFIX) or upper in _NOT_SETTINGS:
        return False
    if upper.startswith(_NOT_SETTINGS_PREFIXES):
        return False
    names, open_prefixes = _known_names()
    return upper not in names and not upper.startswith(open_prefixes)


def _group(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _json_kind(field: FieldInfo) -> str | None:
    """The JSON the environment gives this field as: "list", "object" or None (plain)."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    origin = typing.get_origin(annotation) or annotation
    if origin in (list, tuple, set, frozenset):
        return "list"
    return "object" if origin is dict else None


_KNOWN: tuple[dict[str, FieldInfo], tuple[str, ...]] | None = None


def _known_names() -> tuple[dict[str, FieldInfo], tuple[str, ...]]:
    """Every variable name -> its field, and the prefixes under which a dict setting takes its
    keys one variable each (``STREAMREC_KAFKA__EXTRA__<property>``)."""
    global _KNOWN
    if _KNOWN is None:
        names: dict[str, FieldInfo] = {}
        for name, field in Settings.model_fields.items():
            top = f"{_PREFIX}{name.upper()}"
            names[top] = field
            group = _group(field)
            for sub, sub_field in group.model_fields.items() if group else ():
                names[f"{top}{_DELIMITER}{sub.upper()}"] = sub_field
        open_prefixes = tuple(
            f"{name}{_DELIMITER}"
            for name, field in names.items()
            if _json_kind(field) == "object" and _group(field) is None
        )
        _KNOWN = names, open_prefixes
    return _KNOWN


def _closest(name: str) -> str | None:
    names, _ = _known_names()
    bare = [known[len(_PREFIX) :] for known in names]
    match = difflib.get_close_matches(name.upper()[len(_PREFIX) :], bare, n=1, cutoff=0.6)
    return f"{_PREFIX}{match[0]}" if match else None


def _env_files(env_file: Any) -> list[Path]:
    if env_file is None:
        return []
    files = [env_file] if isinstance(env_file, str | os.PathLike) else list(env_file)
    return [Path(file).expanduser() for file in files if Path(file).expanduser().is_file()]


def _variables(env_file: Any) -> Iterator[tuple[str, str, str | None]]:
    """(NAME, value, settings file or None) of every variable with the prefix; the
    environment's first, as it wins over the file."""
    seen: set[str] = set()
    for key, value in os.environ.items():
        if key.upper().startswith(_PREFIX):
            seen.add(key.upper())
            yield key.upper(), value, None
    files = _env_files(env_file)
    if files:
        from dotenv import dotenv_values

        for path in files:
            for key, file_value in dotenv_values(path).items():
                if key.upper().startswith(_PREFIX) and key.upper() not in seen:
                    seen.add(key.upper())
                    yield key.upper(), file_value or "", str(path)


def _warn_unknown(env_file: Any) -> None:
    for name, _value, origin in _variables(env_file):
        if not unknown_variable(name) or (name, origin or "") in _WARNED:
            continue
        _WARNED.add((name, origin or ""))
        where = f"{name} (in {origin})" if origin else name
        closest = _closest(name)
        if closest:
            log.warning("%s matches no setting and is ignored; did you mean %s?", where, closest)
        else:
            log.warning(
                "%s matches no setting and is ignored (see the README's configuration table)",
                where,
            )


def _example(field: FieldInfo | None) -> str:
    """`` such as <the default as JSON>`` for a list or dict setting, else ""."""
    if field is None or _group(field) is not None:
        return ""
    default = field.get_default(call_default_factory=True)
    if not isinstance(default, list | tuple | dict) or not default:
        return ""
    return f" such as {json.dumps(default)}"


def _shown(value: Any) -> str:
    """The offending value for the message: secrets masked, long values cut."""
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")  # SecretStr dumps masked
    if isinstance(value, dict):
        value = {k: "**********" if "password" in str(k) else v for k, v in value.items()}
    if isinstance(value, str):
        text = value if value and value.strip() == value else repr(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


def _validation_problems(exc: ValidationError, env_file: Any) -> list[str]:
    """One line per error: the variable, what is wrong, the value given."""
    from_file = {name: origin for name, _, origin in _variables(env_file) if origin}
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        ctx = error.get("ctx") or {}
        path: list[str] = []
        field: FieldInfo | None = None
        fields: dict[str, FieldInfo] | None = Settings.model_fields
        while loc and isinstance(loc[0], str) and fields is not None and loc[0] in fields:
            key = str(loc.pop(0))
            path.append(key)
            field = fields[key]
            group = _group(field)
            fields = group.model_fields if group else None
        value = error.get("input")
        if error["type"] == "extra_forbidden" and loc:
            path.append(str(loc.pop(0)))
        if "field" in ctx:  # a check of the group on one of its fields (the Redis URL)
            path.append(str(ctx["field"]))
            value = ctx.get("value", value)
        name = f"{_PREFIX}{_DELIMITER.join(path).upper()}" if path else _PREFIX.rstrip("_")
        if error["type"] == "extra_forbidden":
            closest = _closest(name)
            message = "matches no setting" + (f"; did you mean {closest}?" if closest else "")
        elif error["type"] in _JSON_TYPES and isinstance(value, str):
            message = f"expected a JSON {_JSON_TYPES[error['type']]}{_example(field)}"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if "field" in ctx:
                message = message.removeprefix(f"{ctx['field']} ")
            if message.startswith("Input should"):
                message = message.removeprefix("Input ")
        where = " ".join(
            f"item {part}" if isinstance(part, int) else "(key)" if part == "[key]" else repr(part)
            for part in loc
        )
        origin = f" (in {from_file[name]})" if name in from_file else ""
        message = f"{where}: {message}" if where else message
        problems.append(f"{name}{origin}: {message} (got {_shown(value)})")
    return problems


def _parsing_problems(exc: SettingsError, env_file: Any) -> list[str]:
    """pydantic-settings names only the group whose variables did not parse (as JSON): find
    the variables."""
    match = re.search(r'field "([^"]+)"', str(exc))
    top = f"{_PREFIX}{match.group(1).upper()}" if match else _PREFIX
    names, _ = _known_names()
    problems = []
    for name, value, origin in _variables(env_file):
        field = names.get(name)
        if field is None or not value or not (name == top or name.startswith(top + _DELIMITER)):
            continue
        kind = _json_kind(field)
        if kind is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            where = f" (in {origin})" if origin else ""
            problems.append(
                f"{name}{where}: expected a JSON {kind}{_example(field)} (got {_shown(value)})"
            )
    return problems or [f"{top}: {exc} ({exc.__cause__})"]
