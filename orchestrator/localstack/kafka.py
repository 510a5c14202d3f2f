"""A real single-node Apache Kafka broker (KRaft) for development, the demo and the tests.

The jars come from Maven Central through `mvn` and the pom in deploy/local/, cached under the
user's cache directory keyed by the pom's hash, so only the first run downloads anything. The
broker runs on the installed JDK, on 127.0.0.1 with free ports, with its data and logs in a run
directory. Readiness means a topic was really created, not just that a port opened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from orchestrator.errors import LocalStackError
from orchestrator.lifecycle import RunState
from orchestrator.localstack._ports import free_port
from orchestrator.localstack._process import LocalProcess, tail, wait_ready

POM_PATH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "pom.xml"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
auto.create.topics.enable=true
# one node: internal topics cannot have more replicas than that, or groups and transactions stall
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# the default 3 s delay would slow every first consumer-group join
group.initial.rebalance.delay.ms=0
# a restart after SIGKILL otherwise waits out the dead broker's 9 s session
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
log.cleaner.dedupe.buffer.size=1048577
num.network.threads=2
num.io.threads=2
"""

_LOG4J2_PROPERTIES = """\
status = warn
appender.f.type = File
appender.f.name = F
appender.f.fileName = ${sys:kafka.logs.dir}/server.log
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.f.ref = F
logger.k.name = kafka
logger.k.level = warn
logger.ak.name = org.apache.kafka
logger.ak.level = warn
"""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "provisioning-orchestrator"


def kafka_libs_dir(cache_dir: Path | None = None) -> Path:
    """Where the jars for the current pom live; a pom change gets a fresh directory."""
    digest = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()[:12]
    return (cache_dir or default_cache_dir()) / f"kafka-{digest}" / "libs"


def fetch_kafka(cache_dir: Path | None = None) -> Path:
    """Download the broker's jars with mvn unless they are cached; return the libs directory.

    The copy goes to a temporary sibling and is renamed into place, so an interrupted download
    never leaves a half-filled directory that later runs would trust.
    """
    libs = kafka_libs_dir(cache_dir)
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalStackError("mvn not found on PATH: it is needed once to fetch the Kafka jars")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    argv = [
        mvn, "-B", "-q", "-f", str(POM_PATH),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    jars = list(staging.glob("kafka_2.13-*.jar"))
    if result.returncode != 0 or not jars:
        shutil.rmtree(staging, ignore_errors=True)
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise LocalStackError(f"fetching Kafka jars with mvn failed (exit {result.returncode}):\n{output}")
    (staging / ".complete").write_text("ok\n")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(libs)
    staging.rename(libs)
    return libs


class LocalKafka(LocalProcess):
    """One combined broker+controller. `async with LocalKafka(run_dir=...) as kafka:` or start/stop.

    Ports and data survive `stop()`/`start()` and `kill()`/`start()`, which the reliability tests
    use to take the broker away and bring it back with its data.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        libs_dir: Path | None = None,
        partitions: int = 3,
        heap: str = "768m",
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.run_dir = run_dir
        self._libs_dir = libs_dir
        self._partitions = partitions
        self._heap = heap
        self._ready_timeout_s = ready_timeout_s
        super().__init__()
        self.port = 0
        self.controller_port = 0
        self._formatted = False

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    def _java_argv(self, libs: Path, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise LocalStackError("java not found on PATH: Kafka 4.x needs a JDK 17 or newer")
        return [
            java, "-Xms256m", f"-Xmx{self._heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp", f"{libs}/*", main_class, *args,
        ]  # fmt: skip

    async def _prepare(self) -> Path:
        libs = self._libs_dir if self._libs_dir is not None else await asyncio.to_thread(fetch_kafka)
        if self.port == 0:
            self.port, self.controller_port = free_port(), free_port()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "server.properties").write_text(
            _SERVER_PROPERTIES.format(
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.run_dir / "data",
                partitions=self._partitions,
            )
        )
        (self.run_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        if not self._formatted:
            cluster_id = "-"
            while cluster_id.startswith("-"):  # the storage tool would read a leading "-" as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            argv = self._java_argv(
                libs, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                "-c", str(self.run_dir / "server.properties"), "--ignore-formatted",
            )  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise LocalStackError(f"Kafka storage format failed: {out.decode(errors='replace')[-2000:]}")
            self._formatted = True
        return libs

    async def start(self) -> None:
        if self._state is RunState.RUNNING:
            raise LocalStackError("LocalKafka is already running")
        libs = await self._prepare()
        argv = self._java_argv(libs, "kafka.Kafka", str(self.run_dir / "server.properties"))
        await self._launch(argv, log_path=self.log_dir / "stdout.log", parent_death_signal=signal.SIGKILL)

    async def _wait_ready(self) -> None:
        async def probe() -> None:
            # an open port first keeps aiokafka from logging a connect error every half second
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.close()
            await self._create_probe_topic()

        assert self._proc is not None
        await wait_ready(
            self._proc,
            probe,
            name="Kafka",
            timeout_s=self._ready_timeout_s,
            interval_s=0.5,
            retry_on=(TimeoutError, KafkaError, OSError),
            logs=lambda: (
                f"logs in {self.log_dir}:\n{tail(self.log_dir / 'server.log')}\n"
                f"{tail(self.log_dir / 'stdout.log')}"
            ),
        )

    async def _create_probe_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic("__orchestrator_ready", 1, 1)])
        finally:
            await admin.close()

    async def create_topics(self, names: list[str], *, partitions: int | None = None) -> None:
        """Create topics up front (auto-creation would race the first consumer's subscription)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            await admin.start()
            for name in names:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(name, partitions or self._partitions, 1)])
        finally:
            await admin.close()

    async def stop(self) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL after 30 s. Idempotent."""
        await self._end(polite=signal.SIGTERM, grace_s=30.0)

    async def kill(self) -> None:
        """Die like a crashed machine: SIGKILL, no controlled shutdown."""
        await self._end(polite=signal.SIGKILL, grace_s=10.0)
