"""Managed child processes: start detached, record by PID, stop only what we started.

Each component keeps ``<state>/run/<name>.json`` holding the PID, the command line and the
process start time as the kernel reports it. ``stop`` signals a PID only if that PID still runs
the same command started at the same time, so a recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import PortInUseError, StackError

__all__ = ["ManagedProcess", "free_port", "port_is_free", "tail"]

log = logging.getLogger(__name__)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """An unused loopback port (as of now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _proc_start_time(pid: int) -> str | None:
    """Kernel start time of a live PID (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: gone for our purposes
        return None
    return fields[19]


@dataclass
class ManagedProcess:
    """One component of the local stack, tracked by a PID file under ``run_dir``."""

    name: str
    run_dir: Path
    log_path: Path

    @property
    def _record_path(self) -> Path:
        return self.run_dir / f"{self.name}.json"

    def record(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self._record_path.read_text()))
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """PID if our process is alive (same PID *and* same start time), else None."""
        record = self.record()
        if not record:
            return None
        pid = int(str(record["pid"]))
        if _proc_start_time(pid) != record.get("start_time"):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        ports: Sequence[int] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        extra: dict[str, object] | None = None,
    ) -> int:
        for port in ports:
            if not port_is_free(port):
                raise PortInUseError(
                    f"{self.name}: port {port} on 127.0.0.1 is taken by another process; "
                    f"stop it or choose another port (see README, STREAMREC_STACK__*_PORT)"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%F %T')} starting {self.name}\n".encode())
            log_file.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **(env or {})},
                    cwd=cwd,
                )
            except OSError as exc:
                raise StackError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
        record = {
            "pid": proc.pid,
            "start_time": _proc_start_time(proc.pid),
            "argv": list(argv),
            "started_at": time.time(),
            **(extra or {}),
        }
        tmp = self._record_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(record, indent=2))
            os.replace(tmp, self._record_path)
        except OSError as exc:
            # Without its record the child could never be stopped by `stack down` (nor found
            # by the next `stack up`): stop it now rather than leave an orphan on the port.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StackError(
                f"{self.name}: cannot record the started process in {self._record_path} "
                f"({exc.strerror or exc}); the process was stopped. Free space or fix the "
                f"permissions of {self.run_dir}"
            ) from exc
        log.info("started %s pid=%d", self.name, proc.pid)
        return proc.pid

    def exited_early(self) -> bool:
        """True if we recorded a start but the process is gone (crashed at start)."""
        return self.record() is not None and not self.running()

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM our process (its whole session), SIGKILL after ``timeout``. True if stopped."""
        pid = self.pid()
        if pid is None:
            self._record_path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            _reap(pid)
            time.sleep(0.1)
        if self.running():
            log.warning("%s did not stop in %.0fs; killing", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while self.running():
                _reap(pid)
                time.sleep(0.05)
        self._record_path.unlink(missing_ok=True)
        log.info("stopped %s pid=%d", self.name, pid)
        return True


def _reap(pid: int) -> None:
    """Collect a zombie child (when we are its parent) so it stops counting as running."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
