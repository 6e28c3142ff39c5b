"""deploy/grafana and deploy/prometheus against what our processes really export.

A real push pod, a real gateway (against the carrier sandbox) and a real `ordertrack ingest`
(fed by the sandbox's FedEx webhook) are driven until every
metric the dashboard, the rules and the README's queries use has samples; their /metrics are
scraped and every metric and label name in every query must be in the scrape (or be a scrape
target label of deploy/prometheus/prometheus.yaml, or a recording rule of alerts.yaml).
promtool checks the rules and runs their unit tests; the unit tests' input series must look
like the scrape too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from tests.pods import connect, recv_event, start_pod, upgrade_headers
from tests.support import REPO, ProcessGroup, free_port, wait_for
from tests.test_poller import NUMBERS, add_orders, gateway_env, order

PROM = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "ws-order-tracking.json"
README = REPO / "deploy" / "README.md"

# --- a tiny PromQL reader: metric names, their matchers' labels, grouping labels -------------
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[[^\]]*\]|\{[^}]*\}|[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*|\S')


def read_promql(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """([(metric, labels its matchers name)], labels named by by/without/on/ignoring/group_*)."""
    tokens = TOKEN.findall(expr)
    selectors, grouping = [], set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in GROUPING:
            if nxt == "(":
                end = tokens.index(")", i)
                grouping |= {t for t in tokens[i + 2:end] if t != ","}
                i = end
            i += 1
            continue
        is_call = nxt == "(" or nxt in GROUPING  # a function, or `sum by (...) (...)`
        if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", tok) and tok not in KEYWORDS and not is_call:
            labels = set()
            if nxt.startswith("{"):
                labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", nxt))
                i += 1
            selectors.append((tok, labels))
        i += 1
    return selectors, grouping


def test_the_reader_finds_names_labels_and_grouping():
    selectors, grouping = read_promql(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{pod=~"x|y", le!="1"}[5m])))'
        ' / on (pod) group_left max(b) or vector(0)')
    assert selectors == [("a_bucket", {"pod", "le"}), ("b", set())]
    assert grouping == {"le", "pod"}


# --- what the processes export -----------------------------------------------------------------
class Scrape(dict):
    """sample name -> the label names its samples carry; `values(name, label)` the values."""

    def __init__(self, text: str):
        super().__init__()
        self.label_values: dict[tuple[str, str], set[str]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.setdefault(sample.name, set()).update(sample.labels)
                for label, value in sample.labels.items():
                    self.label_values.setdefault((sample.name, label), set()).add(value)

    def values(self, name: str, label: str) -> set[str]:
        return self.label_values.get((name, label), set())


def scrape(url: str) -> Scrape:
    return Scrape(httpx.get(url, timeout=5).text)


@pytest.fixture(scope="module")
def pod_metrics(redis_server, keys, tmp_path_factory):
    """A real pod: one watcher gets an update and leaves, one upgrade is refused."""
    group = ProcessGroup()
    metrics_port = free_port()
    pod = start_pod(group, tmp_path_factory.mktemp("pod"), redis_server.url, keys,
                    name="ws-order-tracking-a", metrics_port=metrics_port, region="us-east-1")

    async def drive():
        client = aioredis.Redis.from_url(redis_server.url)
        ws = await connect(pod, keys.token("user_m", "ord_metrics"), "ord_metrics")
        await recv_event(ws, "connection_ack")
        await Publisher(client).publish("ord_metrics", "dhl",
            StoredEvent("ord_metrics", 1, "in_transit", "Newark NJ", "2025-10-03T14:00:00Z", None,
                        raw={}))
        await recv_event(ws, "tracking_update")
        await ws.close()
        await client.aclose()

    try:
        asyncio.run(drive())
        refused = httpx.get(pod.base + "/ws/orders/ord_metrics/track", headers=upgrade_headers())
        assert refused.status_code == 401
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        def settled():
            found = scrape(url)
            return found if {"ordertrack_ws_connection_duration_seconds_bucket",
                             "ordertrack_ws_disconnects_total",
                             "ordertrack_ws_active_connections"} <= set(found) else None

        # the connections gauge is refreshed by the pod's housekeeping, every 5 s
        yield wait_for(settled, 15, what="pod metrics after a disconnect")
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def gateway_metrics(sandbox_url, redis_server, tmp_path_factory):  # noqa: F811 - the fixture
    """A real gateway polling DHL in the sandbox, one poll failing with 503s (errors, retries)."""
    httpx.post(f"{sandbox_url}/_admin/reset").raise_for_status()
    httpx.post(f"{sandbox_url}/_admin/faults", json={
        "carrier": "dhl", "kind": "503", "count": 4, "tracking_number": NUMBERS["dhl"],
    }).raise_for_status()
    tmp = tmp_path_factory.mktemp("gateway")
    db = f"sqlite:///{tmp}/track.db"
    add_orders(db, [order("ord_gw_metrics", "dhl")])
    port = free_port()
    env = gateway_env(sandbox_url, redis_server.url, db, GATEWAY_METRICS_PORT=str(port),
                      FEDEX_API_URL="", UPS_API_URL="")
    group = ProcessGroup()
    group.start("poll", env=env, log=tmp / "poll.log")
    url = f"http://127.0.0.1:{port}/metrics"
    wanted = {"ordertrack_gateway_polls_total", "ordertrack_gateway_events_published_total",
              "ordertrack_gateway_carrier_errors_total", "ordertrack_gateway_carrier_retries_total"}
    try:
        yield wait_for(lambda: (found := scrape(url)) and wanted <= set(found) and found, 20,
                       what="gateway metrics after a failed and a good poll")
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def ingest_metrics(sandbox_url, redis_server, tmp_path_factory):  # noqa: F811 - the fixture
    """A real ingest: the sandbox's FedEx webhook delivers a scan, a duplicate and a forgery."""
    from tests.test_ingest import FEDEX_SECRET, fedex_webhook, push_now, shipment

    tmp = tmp_path_factory.mktemp("ingest")
    db = f"sqlite:///{tmp}/track.db"
    add_orders(db, [order("ord_push_metrics", "fedex", "FXMETRICS1")])
    port = free_port()
    group = ProcessGroup()
    group.start("ingest", env={"REDIS_URL": redis_server.url, "DATABASE_URL": db,
                               "INGEST_HOST": "127.0.0.1", "INGEST_PORT": str(port),
                               "FEDEX_WEBHOOK_SECRET": FEDEX_SECRET}, log=tmp / "ingest.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(base + "/healthz").status_code == 200, 15, what="ingest")
        shipment(sandbox_url, "fedex", "FXMETRICS1", reached=1)
        fedex_webhook(sandbox_url, base)
        outcomes = [d["status"] for fault in (None, "duplicate", "bad_signature")
                    for d in push_now(sandbox_url, "fedex", "FXMETRICS1", events="latest",
                                      **({"fault": fault} if fault else {}))]
        assert outcomes == [200, 200, 200, 401], outcomes
        yield scrape(base + "/metrics")
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def api_metrics(redis_server, keys, tmp_path_factory):
    """A real API: a page view of each variant, and one stay each (a bounce and a long one)."""
    tmp = tmp_path_factory.mktemp("api")
    db = f"sqlite:///{tmp}/track.db"
    add_orders(db, [order("ord_api_metrics", "dhl")])
    port = free_port()
    group = ProcessGroup()
    group.start("api", env={"API_HOST": "127.0.0.1", "API_PORT": str(port), "DATABASE_URL": db,
                            "REDIS_URL": redis_server.url, "JWT_PUBLIC_KEY": str(keys.public_path)},
                log=tmp / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(base + "/healthz").status_code == 200, 15, what="api")
        auth = {"Authorization": "Bearer " + keys.token("user_1", "ord_api_metrics")}
        for variant, seconds in (("realtime", 40), ("polling", 2)):
            view = httpx.post(f"{base}/api/v2/orders/ord_api_metrics/views", headers=auth,
                              json={"variant": variant})
            assert view.status_code == 201, view.text
            stay = httpx.post(f"{base}/api/v2/page-stays",
                              json={"view_id": view.json()["view_id"], "seconds": seconds})
            assert stay.status_code == 204, stay.text
        yield scrape(base + "/metrics")
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def exported(pod_metrics, gateway_metrics, ingest_metrics, api_metrics) -> Scrape:
    both = Scrape("")
    for one in (pod_metrics, gateway_metrics, ingest_metrics, api_metrics):
        both.update(one)
        both.label_values.update(one.label_values)
    return both


@pytest.fixture(scope="module")
def target_labels() -> set[str]:
    """Labels Prometheus adds to every series of a target (prometheus.yaml's relabelings)."""
    config = yaml.safe_load((PROM / "prometheus.yaml").read_text())
    added = {rule["target_label"] for job in config["scrape_configs"]
             for rule in job.get("relabel_configs", []) if "target_label" in rule}
    return {"job", "instance"} | {label for label in added if not label.startswith("__")}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load((PROM / "alerts.yaml").read_text())["groups"]
            for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every panel query with each value of the dashboard's custom variables filled in."""
    board = dashboard()
    custom = {v["name"]: [o["value"] for o in v["options"]]
              for v in board["templating"]["list"] if v["type"] == "custom"}
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):  # a row has none
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h")
            names = [n for n in custom if f"${n}" in expr]
            for values in itertools.product(*(custom[n] for n in names)):
                filled = expr
                for name, value in zip(names, values, strict=True):
                    filled = filled.replace(f"${name}", value)
                out.append(filled)
    return out


def variable_queries() -> list[str]:
    """`label_values(metric, label)` of the dashboard's query variables, as selectors."""
    out = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"]).groups()
            out.append(f"sum by ({label}) ({metric})")
    return out


def readme_queries() -> dict[str, list[str]]:
    """The "Infrastructure Metrics" table of deploy/README.md: row -> query."""
    section = README.read_text().split("### The log's Infrastructure Metrics", 1)[1]
    section = section.split("\n#", 1)[0]
    rows = {}
    for line in (line for line in section.splitlines() if line.startswith("|")):
        # a table cell writes a `|` of PromQL as `\|`
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) >= 2 and cells[1].startswith("`"):
            rows[cells[0]] = [q.replace("\\|", "|") for q in re.findall(r"`([^`]+)`", cells[1])]
    return rows


#: series Prometheus writes itself (its alerts' state), with their labels
PROMETHEUS_SERIES = {"ALERTS": {"alertname", "alertstate", "severity", "team", "service"}}


def check_names(expr: str, exported: Scrape, targets: set[str],
                recorded: set[str]) -> list[str]:
    problems = []
    selectors, grouping = read_promql(expr)
    assert selectors, f"no metric in {expr!r}"
    for name, labels in selectors:
        if name in recorded:
            continue
        if name in PROMETHEUS_SERIES:
            if missing := labels - PROMETHEUS_SERIES[name]:
                problems.append(f"{name} has no label {sorted(missing)} ({expr})")
            continue
        if name not in exported:
            problems.append(f"{name} is not exported ({expr})")
            continue
        if missing := labels - exported[name] - targets:
            problems.append(f"{name} has no label {sorted(missing)} ({expr})")
    for label in grouping - targets:
        if not any(label in exported.get(name, set()) for name, _ in selectors):
            problems.append(f"no metric of {expr!r} carries the grouping label {label}")
    return problems


# --- the tests ---------------------------------------------------------------------------------
def test_every_dashboard_rule_and_readme_query_names_exported_metrics(exported, target_labels):
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    queries = ([rule["expr"] for rule in rules()] + dashboard_queries() + variable_queries()
               + [q for row in readme_queries().values() for q in row])
    problems = [p for q in queries for p in check_names(q, exported, target_labels, recorded)]
    assert problems == []
    used = {name for q in dashboard_queries() for name, _ in read_promql(q)[0]}
    assert used - exported.keys() <= recorded  # recording rules the dashboard reads exist


def test_promtool_checks_the_rules_and_every_dashboard_and_readme_query(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make system-deps` installs it (Debian: prometheus)"
    done = subprocess.run([promtool, "check", "rules", "alerts.yaml"], cwd=PROM,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # promtool parses PromQL only in rules: each query as a recording rule of its own
    queries = dashboard_queries() + [q for row in readme_queries().values() for q in row]
    as_rules = {"groups": [{"name": "queries", "rules": [
        {"record": f"query:{i}", "expr": q} for i, q in enumerate(queries)]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(as_rules))
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass_on_series_shaped_like_our_scrape(exported, target_labels):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make system-deps` installs it (Debian: prometheus)"
    done = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=PROM,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    spec = yaml.safe_load((PROM / "alerts.test.yaml").read_text())
    series = [s["series"] for test in spec["tests"] for s in test["input_series"]]
    assert len(series) >= 20
    for text in series:
        name, labels = re.fullmatch(r"(\w+)\{(.*)\}", text).groups()
        label_values = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name in PROMETHEUS_SERIES:  # the alert rules' own labels, plus the alert's
            assert set(label_values) <= PROMETHEUS_SERIES[name] | {"carrier", "pod"}, text
            continue
        own = exported.get(name)
        assert own is not None, f"{name} is not a metric we export"
        # a label of the metric's own that the target sets too is kept as exported_<label>
        renamed = {f"exported_{label}" for label in own & target_labels}
        assert set(label_values) <= own | target_labels | renamed, text
        assert own <= set(label_values), f"{text} lacks a label the metric has"
        if "le" in label_values:  # bucket bounds spelt as the scrape spells them ("300.0")
            assert label_values["le"] in exported.values(name, "le"), text


def test_alerts_have_the_logs_thresholds_windows_and_severities():
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    expected = {  # name: (threshold in the expr, for, severity)
        "WSTrackingPodOver8000Connections": ("> 8000", None, "P2"),
        "WSTrackingDeliveryLatencyHigh": ("> 0.1", "5m", "P2"),
        "WSTrackingHeartbeatTimeoutsHigh": ("> 0.05", "10m", "P3"),
        "WSTrackingCarrierPollingFailing": ("< 0.95", "15m", "P2"),
        "WSTrackingErrorRateHigh": ("> 0.02", "5m", "P2"),
        "WSTrackingPodNearCapacity": ("> 0.8", None, "P2"),
        "WSTrackingDown": ("== 0", "2m", "P1"),
    }
    assert set(alerts) == set(expected)
    for name, (threshold, duration, severity) in expected.items():
        rule = alerts[name]
        assert threshold in " ".join(rule["expr"].split()), name
        assert rule.get("for") == duration, name
        assert rule["labels"]["severity"] == severity, name
        assert rule["annotations"]["runbook"] == "RB-ORDER-009"
    records = {rule["record"] for rule in rules() if "record" in rule}
    assert {"ordertrack:ws_connection_stability:ratio_rate1h",
            "ordertrack:gateway_poll_success:ratio_rate1h"} <= records


def test_dashboard_has_the_logs_six_panels_and_duration_buckets(pod_metrics):
    board = dashboard()
    assert (board["uid"], board["title"], board["refresh"]) == (
        "ws-order-tracking", "ws-order-tracking-monitoring", "10s")
    # the log's six panels, in its order, then ours for carrier push (issue 13) and GC pauses
    assert [p["title"] for p in board["panels"]] == [
        "Active WebSocket Connections", "Connection Duration Distribution",
        "Tracking Update Delivery Latency", "Heartbeat Timeout Rate",
        "Carrier API Polling Success Rate", "Redis Pub/Sub Message Volume",
        "Carrier Push (webhooks)", "Garbage Collection Pauses",
        "Ramp to 25 %", "WebSocket incidents (7 days)", "Bounce rate by variant",
        "Page views per order by variant", "Connection stability",
        "Carrier polling success (worst carrier)"]
    assert len({p["id"] for p in board["panels"]}) == 14
    by_title = {p["title"]: p for p in board["panels"]}
    latency = [t["expr"] for t in by_title["Tracking Update Delivery Latency"]["targets"]]
    assert [re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in latency] == [
        "0.5", "0.9", "0.99"]
    group_by = next(v for v in board["templating"]["list"] if v["name"] == "group_by")
    assert [o["value"] for o in group_by["options"]] == ["pod", "region", "carrier"]
    # the log's buckets: 1, 5, 15, 30, 60, 120 and 120+ minutes, as the pod really exports them
    assert pod_metrics.values("ordertrack_ws_connection_duration_seconds_bucket", "le") == {
        "60.0", "300.0", "900.0", "1800.0", "3600.0", "7200.0", "+Inf"}
    duration = by_title["Connection Duration Distribution"]["targets"][0]
    assert duration["format"] == "heatmap" and "sum by (le)" in duration["expr"]


def test_the_carrier_push_panel_shows_received_verified_refused_duplicates_and_lag(
        ingest_metrics):
    """Issue 13's panel: each of its series is an ingest metric the process really exports."""
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == "Carrier Push (webhooks)"]
    used = {name for t in panel["targets"] for name, _ in read_promql(t["expr"])[0]}
    assert used == {
        "ordertrack_ingest_deliveries_received_total",
        "ordertrack_ingest_deliveries_verified_total",
        "ordertrack_ingest_deliveries_refused_total",
        "ordertrack_ingest_events_duplicate_total", "ordertrack_ingest_lag_seconds_bucket"}
    assert used <= set(ingest_metrics)
    assert ingest_metrics.values("ordertrack_ingest_deliveries_refused_total", "reason") == {
        "unauthorized"}
    assert panel["gridPos"]["y"] >= 27  # below the log's six


def test_every_process_reports_how_long_garbage_collections_stopped_it(
        pod_metrics, gateway_metrics, ingest_metrics):
    """A full collection stops every client of a pod: operators see each pause, by generation."""
    for scraped in (pod_metrics, gateway_metrics, ingest_metrics):
        assert "0" in scraped.values("ordertrack_gc_pause_seconds_count", "generation")
        assert "0.01" in scraped.values("ordertrack_gc_pause_seconds_bucket", "le")
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == "Garbage Collection Pauses"]
    assert {name for t in panel["targets"] for name, _ in read_promql(t["expr"])[0]} == {
        "ordertrack_gc_pause_seconds_bucket"}


def test_readme_lists_a_query_for_every_infrastructure_metrics_row():
    # the rows of the log's "Infrastructure Metrics: ws-order-tracking Service" table
    expected = {
        "Peak active connections", "Total connections opened", "Total connections closed",
        "Average connection duration", "Heartbeat timeouts", "Client-initiated closes",
        "Server-initiated closes", "Connection limit exceeded events",
        "Redis Pub/Sub messages published", "Redis Pub/Sub messages delivered",
        "Average message delivery latency", "DHL API polling success rate",
        "DHL API polling errors", "Memory usage per pod (peak)", "CPU usage per pod (peak)",
        "Pod restarts",
    }
    assert set(readme_queries()) == expected


def test_the_ramp_row_shows_the_five_criteria_with_their_thresholds(api_metrics):
    """Issue 20: a row "Ramp to 25 %" with one panel per criterion, each reading a recording
    rule, with the log's threshold as its colour step (or said in its description)."""
    board = dashboard()
    titles = [p["title"] for p in board["panels"]]
    row = titles.index("Ramp to 25 %")
    assert board["panels"][row]["type"] == "row"
    panels = {p["title"]: p for p in board["panels"][row + 1:]}
    assert len(panels) == 5
    recorded = {rule["record"] for rule in rules() if "record" in rule}

    def steps(title):
        return [s["value"] for s in panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    for panel in panels.values():
        (target,) = panel["targets"]
        assert {name for name, _ in read_promql(target["expr"])[0]} <= recorded
        assert panel["gridPos"]["y"] > board["panels"][row]["gridPos"]["y"]
    assert steps("WebSocket incidents (7 days)") == [None, 1]
    assert "[7d]" in panels["WebSocket incidents (7 days)"]["targets"][0]["expr"]
    assert steps("Page views per order by variant") == [None, 3]
    assert steps("Connection stability") == [None, 0.95]
    assert steps("Carrier polling success (worst carrier)") == [None, 0.99]
    assert "realtime below polling" in panels["Bounce rate by variant"]["description"]
    # the API exports the series these rules read, for both variants
    for name in ("ordertrack_api_page_views_total", "ordertrack_api_page_stays_total",
                 "ordertrack_api_page_bounces_total", "ordertrack_api_page_orders_viewed"):
        assert api_metrics.values(name, "variant") == {"realtime", "polling"}, name
