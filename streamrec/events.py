"""The event contract: input events, recommendation and reward records, and their validation.

Wire format: UTF-8 JSON objects, one per Kafka record. Events are keyed by ``session_id`` (or
``user_id`` when there is no session) so one session's events stay ordered in one partition.

``schema_version`` is 1. A reader accepts any version it knows; an unknown version is rejected
with reason ``unsupported_version`` rather than guessed at. ``python -m streamrec.events`` (or
``streamrec schema``) writes the JSON Schema published in ``streamrec/schemas/``.

Validation (:func:`decode_event`) raises :class:`~streamrec.errors.InvalidEvent` with one of the
stable reason codes in :data:`REASONS`; consumers route such records to the dead-letter topic.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from streamrec.errors import InvalidEvent

__all__ = [
    "ID_MAX_LENGTH",
    "ID_PATTERN",
    "REASONS",
    "SCHEMA_VERSION",
    "AddToCartEvent",
    "ClickEvent",
    "Event",
    "EventContext",
    "EventType",
    "OutgoingRecommendation",
    "PolicyDecision",
    "PurchaseEvent",
    "RatingEvent",
    "Recommendation",
    "RecommendedItem",
    "Reward",
    "ViewEvent",
    "decode_event",
    "encode",
    "event_key",
    "json_schemas",
    "make_event",
    "parse_event",
]

SCHEMA_VERSION = 1

#: Stable reason codes of rejected records (metric label and dead-letter header).
REASONS = (
    "empty",
    "oversize",
    "not_utf8",
    "malformed_json",
    "not_an_object",
    "unsupported_version",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "unexpected_field",
    "processing_failed",
)

_ID_MAX = 256
#: Longest id (event, user, session, item) the contract accepts.
ID_MAX_LENGTH = _ID_MAX


def _coerce_id(value: Any) -> Any:
    """Ids may arrive as JSON numbers from other clients; store them as strings. White space
    around an id is not part of it (``" u1 "`` is ``u1``), as when a log is loaded."""
    if isinstance(value, bool):  # bool is an int; never an id
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return value


#: Control characters: C0, DEL and C1. Written as ``\uXXXX`` escapes, which Python's ``re``,
#: pydantic-core's Rust regex and JSON Schema's ECMA-262 patterns all read the same way.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
#: What looks blank: Unicode white space (no-break, ideographic, em... spaces; the C0/C1 ones
#: are controls already) and invisible format characters (zero-width space, non-joiner and
#: joiner, direction marks and embeddings, word joiner, invisible operators, BOM).
_BLANK = r"\u0020\u00a0\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff"
#: At least one character that is neither a control character nor blank-looking (a log's
#: loader drops blank ids, and "   " or a zero-width space from a client would be a user no
#: log can name), and no control character anywhere.
_ID_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_BLANK}][^{_CONTROL}]*$"
#: What an id may hold: anything but control characters, and not only blank-looking ones.
ID_PATTERN = _ID_PATTERN
Id = Annotated[
    str,
    BeforeValidator(_coerce_id),
    Field(min_length=1, max_length=_ID_MAX, pattern=_ID_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": _ID_MAX, "pattern": _ID_PATTERN},
                {"type": "integer"},
            ]
        }
    ),
]
Timestamp = Annotated[
    datetime,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "ISO-8601 (UTC if no offset) or epoch seconds "
            "(epoch milliseconds when the number's magnitude is above 2e10)",
        }
    ),
]
#: ``schema_version``: the integer 1 only (strict: not ``true``, which lax mode reads as 1,
#: nor ``1.0``).
SchemaVersion = Annotated[
    int,
    Field(strict=True, ge=SCHEMA_VERSION, le=SCHEMA_VERSION),
    WithJsonSchema({"const": SCHEMA_VERSION, "type": "integer"}),
]


_KINDS: dict[type, str] = {dict: "an object", list: "an array"}


def _not_bool(value: Any) -> Any:
    """A number field refuses true/false: pydantic would read them as 1 and 0 (bool is an
    int), and the schema's "number" excludes them."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {str(value).lower()}")
    return value


def _context_value(value: Any) -> Any:
    """An extra context value: a JSON scalar, kept as given."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    kind = _KINDS.get(type(value), type(value).__name__)
    raise ValueError(f"extra context values must be a string, number, boolean or null, not {kind}")


ContextValue = Annotated[
    str | int | float | bool | None,
    PlainValidator(_context_value),
    WithJsonSchema({"type": ["string", "number", "boolean", "null"]}),
]
#: ``value`` on a type that has none: an explicit null is taken as absent (producers that
#: write every field); anything else is refused as ``unexpected_field`` (see :func:`_reason`).
Unused = Annotated[
    None,
    Field(description="Not used by this type: null is accepted and taken as absent."),
]


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"


class EventContext(BaseModel):
    """Optional context of an event. Keys other than device, page, rec_id and position are
    kept as given when their values are JSON scalars (a string, a finite number, a boolean or
    null); a nested object or array is refused."""

    # Extra keys land in `model_extra`; a null one is left out when the event is encoded
    # again. Nothing downstream reads them (the worker and state use `device` only), so they
    # are carried, not interpreted, and stay flat.
    model_config = ConfigDict(frozen=True, extra="allow")
    __pydantic_extra__: dict[str, ContextValue] = Field(init=False)

    device: str | None = Field(None, max_length=64, description="e.g. mobile, desktop, tv")
    page: str | None = Field(None, max_length=128, description="Where the event happened.")
    rec_id: str | None = Field(
        None, max_length=_ID_MAX, description="Recommendation the user acted on, if known."
    )
    position: int | None = Field(None, ge=0, description="Position of the item in that list.")

    _position_not_bool = field_validator("position", mode="before")(_not_bool)


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: Id = Field(description="Unique id; redelivery of the same id changes nothing.")
    user_id: Id
    session_id: Id | None = None
    item_id: Id
    timestamp: Timestamp = Field(
        description="Event time: ISO-8601 (UTC if naive) or epoch seconds (milliseconds if > 2e10)."
    )
    context: EventContext | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
            raise ValueError(f"{value.isoformat()} is out of range in UTC") from exc

    @property
    def key(self) -> str:
        """Partition key: the session, else the user."""
        return self.session_id or self.user_id

    @property
    def ts(self) -> float:
        """Event time as epoch seconds."""
        return self.timestamp.timestamp()


class ViewEvent(_EventBase):
    type: Literal[EventType.VIEW] = EventType.VIEW
    value: Unused = None


class ClickEvent(_EventBase):
    type: Literal[EventType.CLICK] = EventType.CLICK
    value: Unused = None


class AddToCartEvent(_EventBase):
    type: Literal[EventType.ADD_TO_CART] = EventType.ADD_TO_CART
    value: float | None = Field(None, ge=0, allow_inf_nan=False, description="Quantity or price.")
    _value_not_bool = field_validator("value", mode="before")(_not_bool)


class PurchaseEvent(_EventBase):
    type: Literal[EventType.PURCHASE] = EventType.PURCHASE
    value: float | None = Field(None, ge=0, allow_inf_nan=False, description="Price paid.")
    _value_not_bool = field_validator("value", mode="before")(_not_bool)


class RatingEvent(_EventBase):
    type: Literal[EventType.RATING] = EventType.RATING
    value: float = Field(allow_inf_nan=False, description="The rating given.")
    _value_not_bool = field_validator("value", mode="before")(_not_bool)


Event = Annotated[
    ViewEvent | ClickEvent | AddToCartEvent | PurchaseEvent | RatingEvent,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
_EVENT_CLASSES: dict[str, type[_EventBase]] = {
    "view": ViewEvent,
    "click": ClickEvent,
    "add_to_cart": AddToCartEvent,
    "purchase": PurchaseEvent,
    "rating": RatingEvent,
}


class RecommendedItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float
    position: int = Field(ge=0)
    propensity: float | None = Field(
        None, ge=0, le=1, description="Probability the policy showed this item here."
    )
    explanation: list[str] | None = Field(
        None, description="History items that contributed most to this item's score."
    )


class PolicyDecision(BaseModel):
    """The observation a learned policy acted on and its action (offline RL from the logs)."""

    model_config = ConfigDict(frozen=True)

    candidates: list[list[float]] = Field(
        description="Feature rows of the real candidate slots, in the candidate ranker's order."
    )
    context: list[float] = Field(description="Session context features.")
    n_slots: int = Field(ge=1, description="Slots of the policy's input (the rest are masked).")
    action: int = Field(ge=0, description="Slot (index into candidates) put on top of the page.")
    propensity: float = Field(gt=0, le=1, description="Probability of that action.")


class _RecIds:
    """32 hex characters: a random 64-bit prefix per process, then a counter. Unique like a
    uuid4 for this use (ids never leave one deployment) at a fraction of the cost: the worker
    makes one per recommendation, and ``uuid4`` reads the OS's random source every time."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_rec_ids = _RecIds()


def new_rec_id() -> str:
    """A new recommendation id (see :class:`_RecIds`)."""
    return _rec_ids()


class Recommendation(BaseModel):
    """A ranked list published to the recommendations topic (and returned over HTTP)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    rec_id: str = Field(default_factory=new_rec_id)
    user_id: str | None = None
    session_id: str | None = None
    event_id: str | None = Field(None, description="Event that triggered it (None: pull request).")
    items: list[RecommendedItem]
    model_version: str
    policy: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    event_time: datetime | None = Field(None, description="Time of the triggering event.")
    decision: PolicyDecision | None = Field(
        None, description="The RL policy's observation and action, when it logs them."
    )


@dataclass(frozen=True, slots=True)
class OutgoingRecommendation:
    """A :class:`Recommendation` as the plain values it is built from, on its way out.

    The worker builds one per triggering event and publishes :meth:`to_json`: the wire form
    written directly with orjson, without a pydantic model (validating and dumping one was
    ~14 % of a busy worker's main thread). The HTTP API answers with :meth:`to_model`, those
    same bytes validated. ``tests/unit/test_events.py`` checks that the bytes are what
    :func:`encode` makes of the model built from the same values, and that they match the
    published schema.
    """

    user_id: str | None
    session_id: str | None
    event_id: str | None
    item_ids: Sequence[str]
    scores: Sequence[float]
    model_version: str
    policy: str
    propensities: Sequence[float] | None = None
    explanations: Sequence[Sequence[str]] | None = None
    event_time: float | None = None  # epoch seconds
    decision: dict[str, Any] | None = None
    rec_id: str = field(default_factory=new_rec_id)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, None fields left out (as :func:`encode`)."""
        propensities, explanations = self.propensities, self.explanations
        items = []
        for position, (item, score) in enumerate(zip(self.item_ids, self.scores, strict=True)):
            entry: dict[str, Any] = {"item_id": item, "score": float(score), "position": position}
            if propensities:
                propensity = float(propensities[position])
                if not 0.0 <= propensity <= 1.0:
                    raise ValueError(f"propensity {propensity} of {item!r} is not in [0, 1]")
                entry["propensity"] = propensity
            if explanations:
                entry["explanation"] = list(explanations[position])
            items.append(entry)
        record: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "rec_id": self.rec_id}
        if self.user_id is not None:
            record["user_id"] = self.user_id
        if self.session_id is not None:
            record["session_id"] = self.session_id
        if self.event_id is not None:
            record["event_id"] = self.event_id
        record["items"] = items
        record["model_version"] = self.model_version
        record["policy"] = self.policy
        record["created_at"] = self.created_at
        if self.event_time is not None:
            record["event_time"] = datetime.fromtimestamp(self.event_time, UTC)
        if self.decision is not None:
            record["decision"] = self.decision
        return orjson.dumps(record, option=orjson.OPT_UTC_Z)

    def to_model(self) -> Recommendation:
        """The validated record (the same bytes as :meth:`to_json`, parsed)."""
        return Recommendation.model_validate_json(self.to_json())


class Reward(BaseModel):
    """Feedback: an event on a recommended item within the attribution window."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    rec_id: str
    user_id: str
    session_id: str | None
    item_id: str
    position: int
    event_id: str
    event_type: str
    reward: float
    propensity: float | None = None
    policy: str
    model_version: str
    delay_s: float = Field(description="Seconds from the recommendation to the event.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def _reason(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    kind = first["type"]
    field_name = first["loc"][-1] if first["loc"] else None
    loc = ".".join(str(part) for part in first["loc"])
    detail = f"{loc}: {first['msg']}" if loc else first["msg"]
    if kind in ("union_tag_invalid",):
        return "unknown_type", detail
    if kind == "union_tag_not_found":  # pydantic's words: "Unable to extract tag using ..."
        return "missing_field", f"type: field required (one of {_types()})"
    if kind == "missing":
        return "missing_field", detail
    if kind == "extra_forbidden":
        return "unexpected_field", detail
    if kind == "none_required":  # an `Unused` field: only null may stand for its absence
        return "unexpected_field", f"{loc}: not used by this event type (only null is accepted)"
    if field_name == "schema_version" and len(first["loc"]) == 2:  # as _decode_checked says
        return "unsupported_version", _version_detail(first["input"])
    if kind == "too_long" and isinstance(first["input"], str):  # an id (after coercion)
        limit = first.get("ctx", {}).get("max_length", _ID_MAX)
        return "invalid_field", f"{loc}: {len(first['input'])} characters, at most {limit}"
    if kind == "string_pattern_mismatch":  # only ids have a pattern
        return "invalid_field", f"{loc}: {_id_detail(first['input'])}"
    if field_name == "timestamp" and kind in ("datetime_parsing", "datetime_from_date_parsing"):
        given = first["input"]  # pydantic also reads an epoch number written as a string
        if (isinstance(given, int | float) and not isinstance(given, bool)) or (
            "unix timestamp" in first["msg"]
        ):
            return "invalid_field", f"{loc}: {_epoch_detail(given)}"
    return "invalid_field", detail


def _version_detail(version: Any) -> str:
    return f"schema_version {json.dumps(version, default=repr)[:64]} is not 1"


def _id_detail(value: Any) -> str:
    return (
        "an id needs a character other than white space or zero-width ones, and no control "
        f"character (C0, DEL or C1); got {str(value)[:64]!r}"
    )


def _epoch_detail(given: Any) -> str:
    """Why an epoch number is no time: most often epoch micro- or nanoseconds. (pydantic reads
    a number whose magnitude is above 2e10 as milliseconds.)"""
    try:
        number = float(given)
    except (TypeError, ValueError):
        number = 0.0
    if number != number:  # NaN, from a Python payload (it is not JSON)
        return "epoch number nan is not a number"
    return (
        f"epoch number too {'small' if number < 0 else 'large'}: timestamps are epoch seconds "
        f"(or epoch milliseconds when the magnitude is above 2e10), from year 1 to 9999; "
        f"got {given!r}"
    )


def decode_event(raw: bytes | bytearray | memoryview | None, *, max_bytes: int = 65536) -> Any:
    """Validate one wire record and return the typed event.

    Raises:
        InvalidEvent: with a reason from :data:`REASONS`.
    """
    if raw is None or len(raw) == 0:
        raise InvalidEvent("empty", "record has no value")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"{len(raw)} bytes > limit {max_bytes}")
    # The common case in one pass: pydantic-core parses and validates the bytes. It accepts
    # nothing `_decode_checked` rejects (tests/unit/test_events.py compares the two); when it
    # refuses, `_decode_checked` names the reason.
    try:
        return _EVENT_ADAPTER.validate_json(raw if isinstance(raw, bytes) else bytes(raw))
    except ValidationError:
        return _decode_checked(raw)
    except Exception as exc:  # anything pydantic does not wrap is still this record's fault
        raise _unexpected(exc) from exc


def _decode_checked(raw: bytes | bytearray | memoryview) -> Any:
    """Decode step by step, so a refusal carries the first reason that applies."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", str(exc)) from exc
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent("malformed_json", str(exc)[:200]) from exc
    if not isinstance(payload, dict):
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(payload).__name__}")
    version = payload.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:  # not true, not 1.0
        raise InvalidEvent("unsupported_version", _version_detail(version))
    kind = payload.get("type")
    if kind is not None and kind not in _EVENT_CLASSES:
        raise InvalidEvent("unknown_type", f"type {str(kind)[:64]!r} is not one of {_types()}")
    return parse_event(payload)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def _types() -> str:
    return ", ".join(_EVENT_CLASSES)


def parse_event(payload: Any) -> Any:
    """Validate an already-decoded payload (a dict, or an event instance) into a typed event."""
    if isinstance(payload, _EventBase):
        return payload
    try:
        return _EVENT_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        reason, detail = _reason(exc)
        raise InvalidEvent(reason, detail) from exc
    except Exception as exc:
        raise _unexpected(exc) from exc


def _unexpected(exc: Exception) -> InvalidEvent:
    """A validator raised something other than ValueError (pydantic passes those through)."""
    return InvalidEvent("invalid_field", f"{type(exc).__name__}: {exc}"[:200])


def make_event(type: str, **fields: Any) -> Any:
    """Build (and validate) an event of the given type from Python values."""
    try:
        cls = _EVENT_CLASSES[type]
    except KeyError as exc:
        raise InvalidEvent("unknown_type", f"type {type!r} is not one of {_types()}") from exc
    try:
        return cls(**fields)
    except ValidationError as exc:
        reason, detail = _reason(exc)
        raise InvalidEvent(reason, detail) from exc


def encode(record: BaseModel) -> bytes:
    """Wire encoding of any record (compact JSON, UTF-8)."""
    return record.model_dump_json(exclude_none=True).encode("utf-8")


def event_key(event: Any) -> bytes:
    return str(event.key).encode("utf-8")


def json_schemas() -> dict[str, dict[str, Any]]:
    """The published JSON Schemas, by file name."""
    event_schema = _EVENT_ADAPTER.json_schema()
    event_schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    event_schema["title"] = "streamrec event v1"
    rec_schema = Recommendation.model_json_schema()
    rec_schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    reward_schema = Reward.model_json_schema()
    reward_schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return {
        "event.v1.json": event_schema,
        "recommendation.v1.json": rec_schema,
        "reward.v1.json": reward_schema,
    }


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for written_path in write_schemas(Path(__file__).parent / "schemas"):
        print(written_path)
