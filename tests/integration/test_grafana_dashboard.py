"""The Grafana dashboard in deploy/grafana/: a well-formed dashboard whose every query names a
metric that a running server really exports on /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.check_requests import call_check, check_request
from tests.support.keycloak_standin import KeycloakStandIn, active_document
from tests.support.redis_server import RedisServer

JsonObject = dict[str, Any]

DASHBOARD_PATH = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "extauthz-dashboard.json"
)
TEMPLATED_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC_NAME = re.compile(r"\bextauthz_[a-zA-Z0-9_:]*")
SAMPLE_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# The sample names a family of each type renders (prometheus_client, text format 0.0.4).
SAMPLE_SUFFIXES_BY_TYPE: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
REQUIRED_METRICS = frozenset(
    {
        "extauthz_checks_total",
        "extauthz_check_duration_seconds_bucket",
        "extauthz_cache_lookups_total",
        "extauthz_introspections_total",
        "extauthz_redis_up",
        "extauthz_permission_lookups_total",
    }
)
GRPC_OK = 0


def load_dashboard(path: Path = DASHBOARD_PATH) -> JsonObject:
    dashboard: JsonObject = json.loads(path.read_text())
    return dashboard


def all_panels(container: JsonObject) -> Iterator[JsonObject]:
    """Every panel, including those nested in rows (a collapsed row keeps its own panels)."""
    for panel in container.get("panels", []):
        yield panel
        yield from all_panels(panel)


def all_targets(dashboard: JsonObject) -> Iterator[JsonObject]:
    for panel in all_panels(dashboard):
        yield from panel.get("targets", [])


def panel_expressions(dashboard: JsonObject) -> list[str]:
    return [str(target.get("expr", "")) for target in all_targets(dashboard)]


def variable_queries(dashboard: JsonObject) -> list[str]:
    """The PromQL of query variables, which name metrics just as panel targets do."""
    queries: list[str] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def dashboard_queries(dashboard: JsonObject) -> list[str]:
    return panel_expressions(dashboard) + variable_queries(dashboard)


def metric_names(expressions: Iterable[str]) -> set[str]:
    return {name for expression in expressions for name in METRIC_NAME.findall(expression)}


def exported_metric_names(exposition: str) -> set[str]:
    """Names with a sample line, and the sample names a `# TYPE` line promises: a labelled
    counter nobody has bumped yet renders its HELP and TYPE lines but no sample."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, declared, kind = line.split(" ", 3)
            family = declared.removesuffix("_total") if kind == "counter" else declared
            names.update(family + suffix for suffix in SAMPLE_SUFFIXES_BY_TYPE.get(kind, ("",)))
        elif not line.startswith("#") and (match := SAMPLE_NAME.match(line)):
            names.add(match.group())
    return names


def unknown_metrics(expressions: Iterable[str], exposition: str) -> set[str]:
    return metric_names(expressions) - exported_metric_names(exposition)


def without_family(exposition: str, family: str) -> str:
    """The exposition of a server that no longer exports `family`."""
    return "\n".join(
        line for line in exposition.splitlines() if family not in SAMPLE_NAME.findall(line)
    )


async def drive_allowed_and_denied_checks(authz: RunningAuthz, standin: KeycloakStandIn) -> None:
    """An introspected allow, an L1 hit, and denies for a missing role, a missing token and an
    inactive token: enough for the decision, introspection and cache series to have samples."""
    standin.documents["bob"] = active_document("bob", ["manager"])
    for path, token, allowed in [
        ("/api/forms", "bob", True),
        ("/api/forms", "bob", True),
        ("/admin", "bob", False),
        ("/api/forms", None, False),
        ("/api/forms", "not-a-known-token", False),
    ]:
        response = await call_check(authz.channel, check_request(path, token=token))
        assert (response.status.code == GRPC_OK) is allowed, (path, token)
    await authz.redis_settled()


@pytest.fixture
async def exposition(
    start_authz: StartAuthz,
    standin: KeycloakStandIn,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> str:
    """/metrics of a server with Redis configured (only then is `extauthz_redis_up` there),
    after a few Checks."""
    authz = await start_authz(cache={"redis_url": redis_server.url, "redis_timeout_ms": 1000})
    await drive_allowed_and_denied_checks(authz, standin)
    async with session.get(authz.http_base + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def test_dashboard_is_a_grafana_dashboard_with_panels_and_an_expr_in_every_target() -> None:
    dashboard = load_dashboard()
    panels = list(all_panels(dashboard))

    assert (dashboard["uid"], dashboard["title"]) == ("extauthz-server", "extauthz-server")
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert any(panel["type"] != "row" for panel in panels)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {ids}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        for target in panel["targets"]:
            assert str(target.get("expr", "")).strip(), f"a target of {panel['title']!r}"


def test_every_panel_and_target_queries_the_templated_prometheus_datasource() -> None:
    dashboard = load_dashboard()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == TEMPLATED_DATASOURCE, panel["title"]
    for target in all_targets(dashboard):
        assert target["datasource"] == TEMPLATED_DATASOURCE, target["expr"]


def test_metric_names_are_every_extauthz_identifier_of_an_expression() -> None:
    expression = (
        'sum by (le) (rate(extauthz_made_up_seconds_bucket{route="forms"}[$__rate_interval]))'
        " / ignoring (level) group_left extauthz_other_total + node_cpu_seconds_total"
    )

    assert metric_names([expression]) == {
        "extauthz_made_up_seconds_bucket",
        "extauthz_other_total",
    }


def test_dashboard_queries_decisions_latency_cache_provider_redis_and_permissions() -> None:
    queried = metric_names(panel_expressions(load_dashboard()))

    assert sorted(REQUIRED_METRICS - queried) == []


async def test_every_metric_the_dashboard_queries_is_exported_by_a_running_server(
    exposition: str,
) -> None:
    queries = dashboard_queries(load_dashboard())
    unknown = sorted(unknown_metrics(queries, exposition))

    assert metric_names(queries) >= REQUIRED_METRICS
    assert not unknown, f"the dashboard queries metrics the server does not export: {unknown}"


async def test_a_dashboard_query_on_a_misspelled_metric_is_reported(
    exposition: str, tmp_path: Path
) -> None:
    doctored = tmp_path / "dashboard.json"
    doctored.write_text(
        DASHBOARD_PATH.read_text().replace(
            "extauthz_redis_writes_dropped_total", "extauthz_redis_writes_discarded_total"
        )
    )

    queries = dashboard_queries(load_dashboard(doctored))

    assert unknown_metrics(queries, exposition) == {"extauthz_redis_writes_discarded_total"}


async def test_a_suffix_the_metric_type_does_not_render_is_reported(exposition: str) -> None:
    # A gauge has no `_total`, a counter no `_bucket`, even though their families exist.
    expressions = ["extauthz_cache_l1_entries_total", "extauthz_checks_bucket"]

    assert unknown_metrics(expressions, exposition) == set(expressions)


async def test_a_metric_the_server_stops_exporting_is_reported(exposition: str) -> None:
    queries = dashboard_queries(load_dashboard())

    assert unknown_metrics(queries, without_family(exposition, "extauthz_redis_up")) == {
        "extauthz_redis_up"
    }
