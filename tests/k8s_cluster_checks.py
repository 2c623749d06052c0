"""Checks that the StatefulSet, its Services and the Bytewax cluster addresses agree."""

from __future__ import annotations

import os
import sys
from pathlib import PurePosixPath
from typing import Any
from unittest import mock

from tests.k8s_render import (
    CLUSTER_PORT,
    FLOW,
    Doc,
    container,
    container_env,
    literal_env,
    mount_for,
    named,
    namespace,
    pod_labels,
    pod_spec,
    replicas,
    resolve_port,
    statefulset,
)


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
