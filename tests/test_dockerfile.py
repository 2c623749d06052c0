"""The Dockerfile and its build context: the image runs the flow as a non-root user, with the
package in it and the tests and caches left out."""

from __future__ import annotations

import fnmatch
import posixpath
import re
import tomllib
from pathlib import PurePosixPath

import dockerfile

from tests.k8s_render import (
    API_PORT,
    CLUSTER_PORT,
    FLOW,
    OVERLAYS,
    ROOT,
    container,
    pod_spec,
    render,
)

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
