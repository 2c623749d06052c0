"""The Grafana dashboard and the Prometheus alerts only use series the job exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.ops.metrics import METRIC_NAMES

MONITORING = Path(__file__).resolve().parent.parent / "k8s" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yaml"

# Anything that starts like one of ours, so a misspelt name is caught whole, not truncated.
METRIC = re.compile(r"\bwaxlake_[A-Za-z0-9_:]*")
SELECTOR = re.compile(r"\b(waxlake_[A-Za-z0-9_:]*)(\{[^}]*\})?")
DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
EXPECTED_ALERTS = {
    "WaxlakeLagGrowing",
    "WaxlakeNoCommits",
    "WaxlakeDeadLetters",
    "WaxlakeRecordsLost",
    "WaxlakeCommitConflicts",
    "WaxlakeGroupCommitFailures",
}
# Grafana's variables, replaced by something PromQL parses.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    assert isinstance(data, dict)
    assert set(data) == {"groups"}, "a plain Prometheus rule file has only `groups`"
    rules: list[dict[str, Any]] = []
    for group in data["groups"]:
        assert group.get("name"), group
        assert group.get("rules"), group
        rules.extend(group["rules"])
    return rules


def panels() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = load_dashboard()["panels"]
    return result


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target and the query of every query variable."""
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target.get('refId')}", target["expr"]
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable {variable['name']!r}", text


def alert_exprs() -> Iterator[tuple[str, str]]:
    for rule in load_rules():
        yield f"alert {rule.get('alert')!r}", str(rule["expr"])


def all_exprs() -> list[tuple[str, str]]:
    return [*dashboard_exprs(), *alert_exprs()]


def balanced(expr: str) -> bool:
    """Brackets pair up outside string literals, and strings are closed."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for char in expr:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and quote is None


def test_balanced_helper() -> None:
    assert balanced('sum by (topic) (rate(x{topic=~"a(b"}[5m]))')
    assert not balanced("sum(rate(x[5m])")
    assert not balanced("sum(rate(x[5m)))")
    assert not balanced('x{topic="a}')


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_expressions_use_only_exported_metrics(where: str, expr: str) -> None:
    names = set(METRIC.findall(expr))
    assert names, f"{where}: references no waxlake metric: {expr}"
    unknown = names - METRIC_NAMES
    assert not unknown, f"{where}: not exported by the job: {sorted(unknown)}"
    assert balanced(expr), f"{where}: unbalanced brackets or quotes: {expr}"


def test_expressions_parse_as_promql() -> None:
    """A real PromQL parser (PyPI `promql-parser`, a dev dependency)."""
    import promql_parser

    for where, expr in all_exprs():
        if expr.startswith("label_values("):
            continue  # Grafana's variable query syntax, not PromQL
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        try:
            promql_parser.parse(expr)
        except ValueError as exc:
            pytest.fail(f"{where}: {exc}: {expr}")


def test_dashboard_panels() -> None:
    found = panels()
    assert found
    titles = [panel.get("title") for panel in found]
    assert all(titles), "every panel needs a title"
    assert len(titles) == len(set(titles)), f"duplicate panel titles: {titles}"
    ids = [panel.get("id") for panel in found]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in found:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert set(panel["gridPos"]) >= {"h", "w", "x", "y"}, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_panels_follow_topic_variable() -> None:
    """Every series selector in a panel is filtered by the `topic` variable."""
    for panel in panels():
        for target in panel["targets"]:
            for match in SELECTOR.finditer(target["expr"]):
                matchers = match.group(2) or ""
                assert 'topic=~"$topic"' in matchers, f"{panel['title']!r}: {match.group(0)}"


def test_dashboard_variables() -> None:
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    topic = variables["topic"]
    assert topic["type"] == "query"
    assert topic["multi"] is True
    assert topic["includeAll"] is True
    assert topic["definition"] == "label_values(waxlake_records_written_total, topic)"


def test_alert_rules() -> None:
    rules = load_rules()
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), f"duplicate alerts: {names}"
    assert set(names) >= EXPECTED_ALERTS
    for rule in rules:
        name = rule.get("alert")
        assert name, f"rule without `alert` (recording rules do not belong here): {rule}"
        assert str(rule.get("expr", "")).strip(), name
        assert DURATION.match(str(rule.get("for", ""))), f"{name}: `for` must be a duration"
        assert rule.get("labels", {}).get("severity") in {"info", "warning", "critical"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        assert annotations.get("description"), f"{name}: no description"
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
