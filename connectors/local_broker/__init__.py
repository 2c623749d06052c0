"""Local Kafka-compatible brokers for tests, the demo and the benchmarks (no Docker needed).

* Apache Kafka (real, KRaft, jars resolved by Maven on first use; needs ``java`` 17+ and
  ``mvn``): :func:`start_kafka`, :func:`kafka_consumer_groups`.
* Emulators from PyPI (the ``dev`` extra, no Java): Tansu (:func:`start_tansu`) and
  noida-db (:func:`start_noida`).

Usage::

    with start_broker("kafka") as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap})

or from a shell: ``python -m connectors.local_broker --kind kafka`` (first stdout line: the
bootstrap address; SIGTERM/SIGINT stops it).
"""

from connectors.local_broker.apache_kafka import (
    GroupOffset,
    KafkaBroker,
    kafka_consumer_groups,
    start_kafka,
)
from connectors.local_broker.emulators import (
    noida_executable,
    start_noida,
    start_tansu,
    tansu_binary,
)
from connectors.local_broker.kafka_jars import KafkaJars, resolve_jars
from connectors.local_broker.launcher import KINDS, start_broker
from connectors.local_broker.process import (
    HOST,
    BrokerStartError,
    BrokerUnavailable,
    LocalBroker,
    free_port,
    wait_for_broker,
)
from connectors.local_broker.topics import create_topic

__all__ = [
    "HOST",
    "KINDS",
    "BrokerStartError",
    "BrokerUnavailable",
    "GroupOffset",
    "KafkaBroker",
    "KafkaJars",
    "LocalBroker",
    "create_topic",
    "free_port",
    "kafka_consumer_groups",
    "noida_executable",
    "resolve_jars",
    "start_broker",
    "start_kafka",
    "start_noida",
    "start_tansu",
    "tansu_binary",
    "wait_for_broker",
]
