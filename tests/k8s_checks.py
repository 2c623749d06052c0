"""Checks of a rendered overlay: each returns the problems it found (none when it is wired
the way the job needs). Schemas cannot see how the pieces fit together; these can."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from unittest import mock

from pydantic import ValidationError

from connectors.config import Settings
from tests.k8s_cluster_checks import check_cluster
from tests.k8s_render import (
    API_PORT,
    CHECKED_PREFIXES,
    FLOW,
    KNOWN_ENV,
    S3_CREDENTIALS,
    S3_SECRET,
    SECRET_KEY,
    SECRET_NAME,
    SETTINGS_ENV,
    Doc,
    container,
    container_env,
    is_local,
    literal_env,
    mount_for,
    of_kind,
    pod_spec,
    replicas,
    resolve_port,
    secret_refs,
    statefulset,
    volume_kind,
)


def check_settings(docs: list[Doc]) -> list[str]:
    """Every variable is read by the code, and the values parse as the job will parse them."""
    problems: list[str] = []
    env = container_env(docs)
    for name in env:
        if name.startswith(CHECKED_PREFIXES) and name not in KNOWN_ENV:
            problems.append(f"{name} is set but nothing reads it")
    values = {
        k: v.value
        for k, v in env.items()
        if k in SETTINGS_ENV and v.value is not None  # values from Secrets are not known here
    }
    try:
        with mock.patch.dict(os.environ, values, clear=True):
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
    except ValidationError as exc:
        return [*problems, f"the settings do not parse: {exc}"]
    if not settings.topics:
        problems.append("WAXLAKE_TOPICS is empty")
    if not settings.table_root:
        problems.append("WAXLAKE_TABLE_ROOT is not set")
    bootstrap = values.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not bootstrap or re.search(r"\b(localhost|127\.0\.0\.1)\b", bootstrap):
        problems.append("KAFKA_BOOTSTRAP_SERVERS must name the brokers (not localhost) in a pod")
    count = replicas(docs)
    if settings.recovery_partitions != count:
        problems.append(
            f"WAXLAKE_RECOVERY_PARTITIONS is {settings.recovery_partitions} for {count} replicas"
        )
    if count > 1 and is_local(settings.table_root):
        problems.append(
            f"{count} pods with a local table root {settings.table_root}: each pod would write "
            "its own copy; use an object store"
        )
    literal = literal_env(docs)
    if "BYTEWAX_RECOVERY_DIRECTORY" in literal:
        for name in ("BYTEWAX_SNAPSHOT_INTERVAL", "BYTEWAX_RECOVERY_BACKUP_INTERVAL"):
            if not literal.get(name, "").isdigit():
                problems.append(f"{name} must be whole seconds when recovery is on")
        if literal.get("BYTEWAX_SNAPSHOT_INTERVAL") == "0":
            problems.append("BYTEWAX_SNAPSHOT_INTERVAL must be positive")
    workers = literal.get("BYTEWAX_WORKERS_PER_PROCESS", "1")
    if not workers.isdigit() or int(workers) < 1:
        problems.append("BYTEWAX_WORKERS_PER_PROCESS must be a positive integer")
    return problems


def check_storage(docs: list[Doc]) -> list[str]:
    """Recovery (and a local table root) on the pod's own persistent volume; scratch writable."""
    problems: list[str] = []
    env = literal_env(docs)
    recovery = env.get("BYTEWAX_RECOVERY_DIRECTORY")
    places = {"BYTEWAX_RECOVERY_DIRECTORY": recovery}
    root = env.get("WAXLAKE_TABLE_ROOT", "")
    if is_local(root):
        places["WAXLAKE_TABLE_ROOT"] = root.removeprefix("file://")
    if recovery is None:
        problems.append("BYTEWAX_RECOVERY_DIRECTORY is not set")
    for what, path in places.items():
        if path is None:
            continue
        mount = mount_for(docs, path)
        if mount is None:
            problems.append(f"{what} {path} is on no volume (the root filesystem)")
            continue
        kind = volume_kind(docs, mount["name"])
        if kind != "persistent":
            problems.append(f"{what} {path} is on volume {mount['name']} ({kind}), not persistent")
        if mount.get("readOnly"):
            problems.append(f"{what} {path} is on a read-only mount")

    main = container(docs)
    if main.get("securityContext", {}).get("readOnlyRootFilesystem"):
        cache_dir = env.get("BYTEWAX_DATAFLOW_API_CACHE_PATH") or main.get("workingDir")
        for what, path in (("dataflow.json (the API's cache path)", cache_dir), ("/tmp", "/tmp")):
            mount = mount_for(docs, path) if path else None
            if mount is None or mount.get("readOnly"):
                problems.append(f"{what} is not writable with a read-only root filesystem")
    return problems


def check_probes(docs: list[Doc]) -> list[str]:
    """Probes ask the dataflow API for /metrics, which is only served when the API is on."""
    problems: list[str] = []
    main = container(docs)
    env = container_env(docs)
    if "BYTEWAX_DATAFLOW_API_ENABLED" not in env:
        problems.append("BYTEWAX_DATAFLOW_API_ENABLED is not set: nothing serves /metrics")
    api_port = literal_env(docs).get("BYTEWAX_DATAFLOW_API_PORT", str(API_PORT))
    if api_port != str(API_PORT):
        problems.append(f"BYTEWAX_DATAFLOW_API_PORT is {api_port}, the probes ask {API_PORT}")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = main.get(kind)
        if probe is None:
            if kind != "startupProbe":
                problems.append(f"no {kind}")
            continue
        get = probe.get("httpGet", {})
        if get.get("path") != "/metrics" or resolve_port(docs, get.get("port", 0)) != API_PORT:
            problems.append(f"{kind} must be httpGet /metrics on {API_PORT}, is {probe}")
    liveness = main.get("livenessProbe", {})
    patience = liveness.get("failureThreshold", 3) * liveness.get("periodSeconds", 10)
    if patience < 60:
        problems.append(f"livenessProbe gives up after {patience} s; /metrics needs the GIL")
    if main.get("readinessProbe", {}).get("initialDelaySeconds", 0) > 10:
        problems.append("readinessProbe initialDelaySeconds should be small")
    annotations = statefulset(docs)["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations and annotations["prometheus.io/port"] != str(API_PORT):
        problems.append(f"prometheus.io/port is {annotations['prometheus.io/port']}")
    return problems


def check_security(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    pod = pod_spec(docs)
    main = container(docs)
    pod_sc, sc = pod.get("securityContext", {}), main.get("securityContext", {})
    if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))):
        problems.append("runAsNonRoot is not set")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
        problems.append("runAsUser must be a non-root uid")
    if not sc.get("readOnlyRootFilesystem"):
        problems.append("readOnlyRootFilesystem is not set")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities must drop ALL")
    if sc.get("capabilities", {}).get("add"):
        problems.append("no capabilities are needed (ports 3030 and 9999 are unprivileged)")
    if pod_sc.get("fsGroup") is None:
        problems.append("fsGroup is not set: the volumes would not be writable")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < 60:
        problems.append(f"terminationGracePeriodSeconds {grace} leaves no time for a final commit")
    resources = main.get("resources", {})
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(resources.get(part, {})):
            problems.append(f"resources.{part} must set cpu and memory")
    for field in ("command", "args"):
        if field in main and not re.search(
            r"bytewax\.run.*" + re.escape(FLOW), " ".join(main[field])
        ):
            problems.append(f"the container's {field} does not run bytewax.run {FLOW}")
    image = main.get("image", "")
    if ":" not in image.rpartition("/")[2] or image.endswith(":latest"):
        problems.append(f"image {image} has no fixed tag")
    return problems


def check_object_store(docs: list[Doc]) -> list[str]:
    """Prod: tables on S3, credentials from the Secret, no secret in the render."""
    problems: list[str] = []
    env = container_env(docs)
    root = env.get("WAXLAKE_TABLE_ROOT")
    if root is None or not (root.value or "").startswith("s3://"):
        problems.append(f"WAXLAKE_TABLE_ROOT must be s3://..., is {root}")
    refs = secret_refs(docs)
    for name in S3_CREDENTIALS:
        var = env.get(name)
        from_secret = var is not None and var.source == "secret" and var.ref.startswith(S3_SECRET)
        from_env_from = var is None and S3_SECRET in refs
        if not (from_secret or from_env_from):
            problems.append(f"{name} must come from the Secret {S3_SECRET}, is {var}")
    if S3_SECRET not in refs:
        problems.append(f"the container does not use the Secret {S3_SECRET}")
    for name, var in env.items():
        if var.value is None:
            continue
        if SECRET_NAME.search(name):
            problems.append(f"{name} has a literal value; take it from a Secret")
        if name in ("WAXLAKE_KAFKA_CONFIG", "WAXLAKE_STORAGE_OPTIONS"):
            keys = json.loads(var.value or "{}")
            if any(SECRET_KEY.search(k) or SECRET_NAME.search(k) for k in keys):
                problems.append(f"{name} holds credentials as a literal; take it from a Secret")
    for cm in of_kind(docs, "ConfigMap"):
        for key in cm.get("data", {}):
            if SECRET_NAME.search(key):
                problems.append(f"ConfigMap {cm['metadata']['name']} holds {key}; use a Secret")
    for doc in of_kind(docs, "Secret"):
        problems.append(f"Secret {doc['metadata']['name']} is in the render: keep secrets out")
    return problems


CHECKS: list[Callable[[list[Doc]], list[str]]] = [
    check_cluster,
    check_settings,
    check_storage,
    check_probes,
    check_security,
]
