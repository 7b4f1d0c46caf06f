"""One exception tree for streamrec.

    StreamrecError
    ├── ConfigError            settings that cannot work (bad combination, missing binary)
    ├── StackError             the local stack could not start/stop a component
    │   └── PortInUseError
    ├── InvalidEvent           an input record was rejected (carries a machine-readable reason)
    ├── DataError              a dataset could not be found or parsed
    ├── StateError             Redis state could not be read or written
    ├── ModelError             a model/checkpoint/registry problem
    └── DependencyMissing      an optional dependency is missing (message says how to install it)

Library errors are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyMissing",
    "InvalidEvent",
    "ModelError",
    "PortInUseError",
    "StackError",
    "StateError",
    "StreamrecError",
]


class StreamrecError(Exception):
    """Base of every error streamrec raises on purpose."""


class ConfigError(StreamrecError):
    """The settings cannot work as given."""


class StackError(StreamrecError):
    """A local-stack component could not be started, stopped or reached."""


class PortInUseError(StackError):
    """A port the stack needs is taken by another process."""


class InvalidEvent(StreamrecError):
    """An input record was rejected.

    ``reason`` is a short stable code (used as a metric label and dead-letter header),
    ``detail`` a human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DataError(StreamrecError):
    """A dataset could not be found or parsed."""


class StateError(StreamrecError):
    """Redis state could not be read or written."""


class ModelError(StreamrecError):
    """A model, checkpoint or registry problem."""


class DependencyMissing(StreamrecError):
    """An optional dependency is not installed."""
