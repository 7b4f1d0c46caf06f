"""A real `streamrec agent train` process serves its training progress on /metrics
(STREAMREC_METRICS_PORT + 3): what it scrapes is what the run writes to history.json."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.metrics import PROCESS_PORT_OFFSETS
from tests.helpers import metric_value, metrics_port_block, stop_process, wait_for

pytest.importorskip("ray")

AGENT = PROCESS_PORT_OFFSETS["agent"]


def _train(tmp_path: Path, base: int, iterations: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STREAMREC_HOME": str(tmp_path), "STREAMREC_METRICS_PORT": str(base)}
    args = ["agent", "train", "--synthetic", "--mode", "bandit", "--iterations", str(iterations)]
    return subprocess.Popen(
        [sys.executable, "-m", "streamrec", *args, "--out", str(tmp_path / "ppo")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _scrape(port: int) -> tuple[float, float, float] | None:
    """(iterations, episode return, policy loss), or None before the first iteration."""
    try:
        iterations = metric_value(port, "streamrec_agent_train_iterations_total")
    except OSError:  # not serving yet (Ray starting) or already exited
        return None
    if iterations < 1:
        return None
    return (
        iterations,
        metric_value(port, "streamrec_agent_episode_return_mean"),
        metric_value(port, "streamrec_agent_policy_loss"),
    )


def test_agent_train_serves_each_iteration_on_metrics(tmp_path: Path) -> None:
    base = metrics_port_block()
    proc = _train(tmp_path, base, iterations=2)
    try:
        scraped = wait_for(lambda: _scrape(base + AGENT), timeout=240, interval=0.5)
        output, _ = proc.communicate(timeout=240)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, output.decode()[-3000:]
    history = json.loads((tmp_path / "ppo" / "history.json").read_text())
    iterations, episode_return, policy_loss = scraped
    row = history[int(iterations) - 1]
    assert math.isclose(episode_return, row["episode_return_mean"], rel_tol=1e-6)
    assert math.isclose(policy_loss, row["policy_loss"], rel_tol=1e-6, abs_tol=1e-9)


def test_agent_train_with_its_metrics_port_taken_fails_at_once(tmp_path: Path) -> None:
    base = metrics_port_block()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + AGENT))
        taken.listen()
        proc = _train(tmp_path, base, iterations=1)
        try:
            output, _ = proc.communicate(timeout=60)
        finally:
            stop_process(proc)
    assert proc.returncode == 2
    assert f"metrics port 127.0.0.1:{base + AGENT} is in use" in output.decode()
    assert not (tmp_path / "ppo").exists()
