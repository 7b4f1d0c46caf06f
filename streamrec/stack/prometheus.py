"""Prometheus from the OS package, scraping the local streamrec processes.

Started only with ``streamrec stack up --with-prometheus``. The scrape config is generated from
settings (every streamrec process serves ``/metrics`` on ``metrics_port + offset``, see
:data:`streamrec.metrics.PROCESS_PORT_OFFSETS`; each target carries a ``process`` label, as in
``dashboards/prometheus/prometheus.docker.yml``); recording and alerting rules come from
``dashboards/prometheus/rules.yml`` when that file is present.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from streamrec.config import Settings
from streamrec.errors import StackError
from streamrec.metrics import PROCESS_PORT_OFFSETS
from streamrec.stack.process import ManagedProcess, tail

__all__ = ["PROCESS_PORT_OFFSETS", "PrometheusComponent", "local_scrape_config"]

#: Job name of every streamrec process (the dashboards and rules select ``job="streamrec"``).
JOB = "streamrec"

_RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "rules.yml"


def local_scrape_config(
    settings: Settings, rule_files: list[str], *, interval: str = "5s"
) -> dict[str, object]:
    """Prometheus config scraping every local streamrec process (none if metrics are off).

    Processes that are not running are scraped anyway and show as ``up == 0``.
    """
    static_configs = [
        {
            "targets": [f"127.0.0.1:{settings.metrics_port + offset}"],
            "labels": {"process": name},
        }
        for name, offset in PROCESS_PORT_OFFSETS.items()
        if settings.metrics_port
    ]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": rule_files,
        "scrape_configs": [{"job_name": JOB, "static_configs": static_configs}],
    }


class PrometheusComponent:
    name = "prometheus"

    def __init__(
        self, settings: Settings, rules: Path | None = None, *, interval: str = "5s"
    ) -> None:
        self.settings = settings
        self.dir = settings.state_path / "prometheus"
        self.rules = rules or _RULES
        self.interval = interval
        self.process = ManagedProcess(
            "prometheus",
            settings.state_path / "run",
            settings.state_path / "logs" / "prometheus.log",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.stack.prometheus_port}"

    def _binary(self) -> str:
        binary = shutil.which(self.settings.stack.prometheus_bin)
        if binary is None:
            raise StackError(
                "prometheus not found. Install it from the OS packages "
                "(`apt-get install prometheus`) or run `make setup`."
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
        first = (out.stdout or out.stderr).splitlines()
        return first[0].split("version", 1)[-1].split()[0] if first else "unknown"

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        rule_files = [str(self.rules)] if self.rules.exists() else []
        config = self.dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                local_scrape_config(self.settings, rule_files, interval=self.interval),
                sort_keys=False,
            )
        )
        return config

    def start(self) -> None:
        if self.process.running():
            return
        binary = self._binary()
        config = self.write_config()
        self.process.start(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={self.address}",
                "--storage.tsdb.retention.time=7d",
                "--web.enable-lifecycle",
            ],
            ports=(self.settings.stack.prometheus_port,),
            extra={"address": self.address},
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise StackError(
                    f"prometheus exited during start-up. Log:\n{tail(self.process.log_path)}"
                )
            if self.healthy(1.0):
                return
            time.sleep(0.2)
        raise StackError(f"Prometheus at {self.address} not ready after {timeout:.0f}s")

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=timeout) as rsp:
                return bool(rsp.status == 200)
        except (urllib.error.URLError, OSError):
            return False
