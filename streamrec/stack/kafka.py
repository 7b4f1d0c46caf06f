"""Apache Kafka in KRaft mode (one JVM: broker + controller), from Maven Central jars.

Jars are resolved by Maven (``mvn dependency:copy-dependencies``) from a generated POM into
``<cache>/kafka/<scala>-<version>/lib`` once per version. Storage is formatted with
``kafka.tools.StorageTool`` using a static ``controller.quorum.voters``; the broker binds and
advertises 127.0.0.1 only. Readiness is a real metadata request, not a sleep.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from pathlib import Path

from streamrec.config import Settings
from streamrec.errors import StackError
from streamrec.stack.process import ManagedProcess, tail

__all__ = ["KafkaComponent", "java_version", "resolve_kafka_jars"]

log = logging.getLogger(__name__)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamrec</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def java_version(java: str = "java") -> int:
    """Major version of the Java runtime on PATH; raises StackError if there is none."""
    path = shutil.which(java)
    if path is None:
        raise StackError(
            "Java is not installed (Kafka needs Java 17+). Install it, e.g. "
            "`apt-get install openjdk-17-jre-headless`, or run `make setup`."
        )
    out = subprocess.run([path, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise StackError(f"cannot read the Java version from: {out.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def resolve_kafka_jars(settings: Settings) -> Path:
    """Download (once) and return the directory of jars for the configured Kafka version."""
    stack = settings.stack
    home = settings.cache_path / "kafka" / f"{stack.scala_version}-{stack.kafka_version}"
    lib = home / "lib"
    marker = home / ".complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is needed once to fetch Kafka's jars from Maven Central. "
            "Install it, e.g. `apt-get install maven`, or run `make setup`."
        )
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(
        _POM.format(scala=stack.scala_version, kafka=stack.kafka_version, log4j=stack.log4j_version)
    )
    shutil.rmtree(lib, ignore_errors=True)
    log.info("resolving Kafka %s jars with Maven into %s", stack.kafka_version, lib)
    proc = subprocess.run(
        [mvn, "-B", "-q", "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not any(lib.glob(f"kafka_{stack.scala_version}-*.jar")):
        raise StackError(
            f"Maven could not resolve org.apache.kafka:kafka_{stack.scala_version}:"
            f"{stack.kafka_version} (exit {proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )
    marker.write_text(time.strftime("%F %T"))
    return lib


class KafkaComponent:
    """The local single-node KRaft broker."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_path / "kafka"
        self.process = ManagedProcess(
            "kafka", settings.state_path / "run", settings.state_path / "logs" / "kafka.log"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.stack.kafka_port}"

    @property
    def version(self) -> str:
        return self.settings.stack.kafka_version

    def _properties(self) -> str:
        stack = self.settings.stack
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{stack.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{stack.kafka_port},"
                f"CONTROLLER://127.0.0.1:{stack.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{stack.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self.dir / 'data'}",
                "num.partitions=1",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.hours=168",
                "",
            ]
        )

    def _format_storage(self, classpath: str, java: str) -> None:
        config = self.dir / "server.properties"
        if (self.dir / "data" / "meta.properties").exists():
            return
        uuid = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=False,
        )
        cluster_id = uuid.stdout.strip().splitlines()[-1] if uuid.returncode == 0 else ""
        if not cluster_id:
            raise StackError(f"kafka StorageTool random-uuid failed: {uuid.stderr[-1000:]}")
        fmt = subprocess.run(
            [
                java,
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(
                f"kafka StorageTool format failed: {(fmt.stdout + fmt.stderr)[-1500:]}"
            )
        log.info("formatted Kafka storage, cluster id %s", cluster_id)

    def start(self) -> None:
        if self.process.running():
            return
        java = shutil.which("java") or "java"
        major = java_version(java)
        if major < 17:
            raise StackError(f"Kafka {self.version} needs Java 17 or newer; found Java {major}.")
        lib = resolve_kafka_jars(self.settings)
        classpath = f"{lib}/*"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "server.properties").write_text(self._properties())
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        self._format_storage(classpath, java)
        heap = self.settings.stack.kafka_heap
        self.process.start(
            [
                java,
                f"-Xms{heap}",
                f"-Xmx{heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.settings.state_path / 'logs'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(self.dir / "server.properties"),
            ],
            ports=(self.settings.stack.kafka_port, self.settings.stack.controller_port),
            extra={"address": self.address, "version": self.version},
        )

    def wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        last_error = "no answer"
        while time.monotonic() < deadline:
            if not self.process.running():
                raise StackError(
                    f"Kafka exited during start-up. Last log lines "
                    f"({self.process.log_path}):\n{tail(self.process.log_path)}"
                )
            try:
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    return
            except Exception as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise StackError(
            f"Kafka at {self.address} not ready after {timeout:.0f}s ({last_error}). "
            f"Log:\n{tail(self.process.log_path)}"
        )

    def healthy(self, timeout: float = 3.0) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            metadata = AdminClient({"bootstrap.servers": self.address}).list_topics(timeout=timeout)
        except Exception:
            return False
        return bool(metadata.brokers)
