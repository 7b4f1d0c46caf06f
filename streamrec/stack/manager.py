"""`streamrec stack up | down | status | logs`: the local stack as one unit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streamrec.config import Settings
from streamrec.errors import StackError
from streamrec.stack.kafka import KafkaComponent
from streamrec.stack.process import ManagedProcess, tail
from streamrec.stack.prometheus import PrometheusComponent
from streamrec.stack.redis_server import RedisComponent

__all__ = ["ComponentStatus", "Stack"]

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str
    process: ManagedProcess

    @property
    def address(self) -> str: ...

    @property
    def version(self) -> str: ...

    def start(self) -> None: ...

    def wait_ready(self, timeout: float) -> None: ...

    def healthy(self, timeout: float = ...) -> bool: ...


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # running | stopped | unhealthy
    pid: int | None
    address: str
    version: str
    log: str


class Stack:
    """Kafka + Redis (+ optional Prometheus), started in that order and stopped in reverse."""

    def __init__(self, settings: Settings, *, with_prometheus: bool = False) -> None:
        self.settings = settings
        self.kafka = KafkaComponent(settings)
        self.redis = RedisComponent(settings)
        self.prometheus = PrometheusComponent(settings)
        self.with_prometheus = with_prometheus

    def components(self, *, include_idle: bool = True) -> list[Component]:
        comps: list[Component] = [self.kafka, self.redis]
        if self.with_prometheus or (include_idle and self.prometheus.process.record()):
            comps.append(self.prometheus)
        return comps

    def up(self) -> list[ComponentStatus]:
        """Start what is not running, wait until each answers. Idempotent."""
        timeout = self.settings.stack.start_timeout_s
        started: list[Component] = []
        try:
            for comp in self.components(include_idle=False):
                if comp.process.running():
                    log.info("%s already running", comp.name)
                else:
                    comp.start()
                    started.append(comp)
                comp.wait_ready(timeout)
        except BaseException as exc:
            for comp in reversed(started):
                comp.process.stop()
            if isinstance(exc, OSError):
                # A config, data or log file the stack writes: name it instead of a traceback.
                raise StackError(self._unwritable(exc)) from exc
            raise
        return self.status()

    def _unwritable(self, exc: OSError) -> str:
        where = Path(exc.filename) if exc.filename else None
        roots = (self.settings.home, self.settings.cache_path)
        if where is None or not any(where.is_relative_to(root) for root in roots):
            return f"cannot start the local stack: {exc}"  # e.g. a binary that cannot run
        setting, root = "STREAMREC_HOME", self.settings.home
        cache = self.settings.cache_dir  # the jars, when not under the home
        if cache is not None and where.is_relative_to(cache):
            setting, root = "STREAMREC_CACHE_DIR", cache
        return (
            f"cannot write the local stack's files at {where} ({exc.strerror or exc}); "
            f"{setting} ({root}) must be a writable directory"
        )

    def down(self) -> list[str]:
        """Stop every component this stack started (by PID). Returns the names stopped."""
        stopped = []
        for comp in reversed(self.components()):
            if comp.process.stop():
                stopped.append(comp.name)
        return stopped

    def status(self) -> list[ComponentStatus]:
        out = []
        for comp in self.components():
            pid = comp.process.pid()
            state = "stopped" if pid is None else "running" if comp.healthy() else "unhealthy"
            out.append(
                ComponentStatus(
                    comp.name, state, pid, comp.address, comp.version, str(comp.process.log_path)
                )
            )
        return out

    def logs(self, name: str | None = None, lines: int = 40) -> dict[str, str]:
        return {
            comp.name: tail(comp.process.log_path, lines)
            for comp in self.components()
            if name in (None, comp.name)
        }
