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

import json
from collections.abc import Callable
from pathlib import PurePosixPath

import pytest
import yaml

from tests.k8s_checks import CHECKS, check_object_store
from tests.k8s_render import (
    API_PORT,
    K8S,
    OVERLAYS,
    S3_CREDENTIALS,
    S3_SECRET,
    Doc,
    container,
    is_local,
    literal_env,
    mount_for,
    named,
    namespace,
    of_kind,
    pod_labels,
    pod_spec,
    render,
    render_text,
    replicas,
    resolve_port,
    statefulset,
    validate,
)

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
