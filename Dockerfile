# waxlake: Kafka topics -> Delta Lake tables, one Bytewax process per container.
#
#   docker build -t waxlake:0.1.0 .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=... -e WAXLAKE_TOPICS=... -e WAXLAKE_TABLE_ROOT=... waxlake:0.1.0
#
# Settings come from the environment (README.md, "Configuration"); Kubernetes manifests are in k8s/.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# tini as PID 1 forwards SIGTERM to the job (which then commits what it buffered and exits 0);
# Python itself as PID 1 would ignore a SIGTERM that arrives before its handler is installed.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 waxlake \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/waxlake \
        --shell /usr/sbin/nologin waxlake

# The project itself, without the dev extra; the sources are not kept in the image.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connectors ./connectors
COPY flows ./flows
RUN pip install . && rm -rf /src

# Bytewax writes dataflow.json into the working directory when its API is enabled, and settings
# may come from a .env file there: it must be writable (Kubernetes mounts an emptyDir at /tmp and
# runs in /tmp, with a read-only root filesystem).
WORKDIR /home/waxlake
USER 10001:10001

# 3030: Bytewax dataflow API (/metrics) with BYTEWAX_DATAFLOW_API_ENABLED=1; 9999: cluster traffic
# between processes (BYTEWAX_ADDRESSES).
EXPOSE 3030 9999

ENTRYPOINT ["tini", "--", "python", "-m", "bytewax.run"]
CMD ["flows.kafka_to_delta:flow"]
