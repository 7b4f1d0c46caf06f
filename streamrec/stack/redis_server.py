"""Redis from the system ``redis-server`` binary, AOF on, bound to 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import time

from streamrec.config import Settings
from streamrec.errors import StackError
from streamrec.stack.process import ManagedProcess, tail

__all__ = ["RedisComponent"]


class RedisComponent:
    """The local Redis server; data (RDB + AOF) under the stack's state directory."""

    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_path / "redis"
        self.process = ManagedProcess(
            "redis", settings.state_path / "run", settings.state_path / "logs" / "redis.log"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.stack.redis_port}"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    def _binary(self) -> str:
        binary = shutil.which(self.settings.stack.redis_server)
        if binary is None:
            raise StackError(
                f"{self.settings.stack.redis_server!r} not found. Install Redis from the OS "
                "packages (`apt-get install redis-server`) or run `make setup`."
            )
        return binary

    @property
    def version(self) -> str:
        try:
            out = subprocess.run(
                [self._binary(), "--version"], capture_output=True, text=True, check=False
            )
        except StackError:
            return "not installed"
        for token in out.stdout.split():
            if token.startswith("v="):
                return token[2:]
        return out.stdout.strip()

    def start(self) -> None:
        if self.process.running():
            return
        binary = self._binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"port {self.settings.stack.redis_port}",
                    f"dir {self.dir}",
                    "appendonly yes",
                    "appendfsync everysec",
                    "save 300 10",
                    "daemonize no",
                    "loglevel notice",
                    "",
                ]
            )
        )
        self.process.start(
            [binary, str(conf)],
            ports=(self.settings.stack.redis_port,),
            extra={"address": self.address},
        )

    def wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while time.monotonic() < deadline:
            if not self.process.running():
                raise StackError(
                    f"redis-server exited during start-up. Log:\n{tail(self.process.log_path)}"
                )
            try:
                if client.ping():
                    info = client.info("persistence")
                    if not info.get("loading", 0):
                        return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise StackError(f"Redis at {self.address} not ready after {timeout:.0f}s")

    def healthy(self, timeout: float = 2.0) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=timeout).ping())
        except redis.RedisError:
            return False
