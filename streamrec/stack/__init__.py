"""The local stack: real Kafka (KRaft, from Maven Central jars), Redis and Prometheus; no Docker."""

from streamrec.stack.manager import ComponentStatus, Stack
from streamrec.stack.process import free_port, port_is_free

__all__ = ["ComponentStatus", "Stack", "free_port", "port_is_free"]
