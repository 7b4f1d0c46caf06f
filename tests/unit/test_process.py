from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from streamrec.errors import PortInUseError, StackError
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


def test_a_start_it_cannot_record_stops_the_child_and_says_where(tmp_path: Path) -> None:
    import uuid

    proc = ManagedProcess("unrecorded", tmp_path / "run", tmp_path / "unrecorded.log")
    (tmp_path / "run" / "unrecorded.tmp").mkdir(parents=True)  # the record cannot be written
    token = uuid.uuid4().hex
    with pytest.raises(StackError, match="cannot record the started process") as raised:
        proc.start([sys.executable, "-c", "import time; time.sleep(60)", token])
    assert str(tmp_path / "run") in str(raised.value)
    # nothing is left running that `stack down` could never find
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if token.encode() in cmdline.read_bytes():
                alive.append(cmdline.parent.name)
        except OSError:
            continue
    assert alive == []
    assert not proc.running()


def test_stack_up_on_a_home_it_cannot_write_is_one_line_naming_the_place(tmp_path: Path) -> None:
    import subprocess

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**__import__("os").environ, "STREAMREC_HOME": str(blocker / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "stack", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert f"STREAMREC_HOME ({blocker / 'home'}) must be a writable directory" in " ".join(
        (done.stderr + done.stdout).split()
    )
    # a cache directory of its own is named as such
    env = {**env, "STREAMREC_HOME": str(tmp_path / "home"), "STREAMREC_CACHE_DIR": str(blocker)}
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "stack", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"STREAMREC_CACHE_DIR ({blocker}) must be a writable directory" in " ".join(
        (done.stderr + done.stdout).split()
    )


def test_a_binary_that_cannot_run_is_not_called_an_unwritable_home(tmp_path: Path) -> None:
    import os
    import subprocess

    fake = tmp_path / "bin" / "java"  # Java is checked first, before the jars
    fake.parent.mkdir()
    fake.write_bytes(b"\x7fELF\x00garbage")
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "STREAMREC_HOME": str(tmp_path / "home"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "stack", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = " ".join((done.stderr + done.stdout).split())
    assert done.returncode == 1 and "Traceback" not in out
    assert f"cannot start the local stack: [Errno 8] Exec format error: '{fake}'" in out
    assert "writable" not in out
