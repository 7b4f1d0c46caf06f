from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from streamrec.errors import PortInUseError
from streamrec.stack.process import ManagedProcess, free_port, port_is_free


def test_start_stop_by_pid_and_idempotent_stop(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "sleeper.log")
    proc.start([sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"])
    assert proc.running()
    assert proc.stop(timeout=5) is True
    assert not proc.running()
    assert proc.stop() is False


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", tmp_path / "run", tmp_path / "ghost.log")
    (tmp_path / "run").mkdir()
    # A record pointing at a live PID that we did not start (this test process).
    import json
    import os

    (tmp_path / "run" / "ghost.json").write_text(
        json.dumps({"pid": os.getpid(), "start_time": "1"})
    )
    assert not proc.running()
    assert proc.stop() is False  # and this process is still alive to assert it


def test_port_in_use_is_refused_with_the_port_in_the_message(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert not port_is_free(port)
        proc = ManagedProcess("x", tmp_path / "run", tmp_path / "x.log")
        with pytest.raises(PortInUseError, match=str(port)):
            proc.start([sys.executable, "-c", "pass"], ports=[port])
    assert port_is_free(free_port())
