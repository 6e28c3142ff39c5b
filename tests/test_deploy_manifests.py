"""deploy/ against the code's contract: every YAML parses, env names are settings the
processes really read (with values they accept), probes hit the pod's real paths, the HPA
scales on the metric the pod exports, and the grace period outlasts the drain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ordertrack import config
from tests.support import REPO

DEPLOY = REPO / "deploy"
# every env var a manifest sets is a Setting of the process it runs
NON_SETTING_ENV: set[str] = set()
LOG_MANIFEST_ENV = {
    "REDIS_URL", "MAX_CONNECTIONS_PER_POD", "HEARTBEAT_INTERVAL_SECONDS",
    "HEARTBEAT_TIMEOUT_SECONDS", "MAX_CONNECTIONS_PER_USER", "REDIS_SUBSCRIBE_TIMEOUT_SECONDS",
    "JWT_PUBLIC_KEY", "DATADOG_AGENT_HOST",
}


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    """Every Kubernetes object kustomization.yaml applies, by (kind, name)."""
    kustomization = load_docs(DEPLOY / "kustomization.yaml")[0]
    found = {}
    for resource in kustomization["resources"]:
        for doc in load_docs(DEPLOY / resource):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


@pytest.fixture(scope="module")
def configmap(objects) -> dict[str, str]:
    return objects[("ConfigMap", "ordertrack-config")]["data"]


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_by_name(deployment: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container(deployment).get("env", [])}


def resolved_env(deployment: dict, configmap: dict[str, str]) -> dict[str, str]:
    """The values a container would see for plain values and ConfigMap references."""
    out = {}
    for name, item in env_by_name(deployment).items():
        if "value" in item:
            out[name] = item["value"]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            out[name] = configmap[item["valueFrom"]["configMapKeyRef"]["key"]]
    return out


def port_number(container_spec: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return {p["name"]: p["containerPort"] for p in container_spec["ports"]}[port]


def test_every_yaml_file_parses_and_every_k8s_object_is_applied():
    files = sorted(DEPLOY.glob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        assert load_docs(path), f"{path.name} is empty"
    applied = set(load_docs(DEPLOY / "kustomization.yaml")[0]["resources"])
    standalone = {"kustomization.yaml", "kong.yaml", "secrets.example.yaml", "db-upgrade-job.yaml"}
    assert applied == {p.name for p in files} - standalone


def test_every_object_has_a_kind_and_a_namespace_from_kustomize(objects):
    kustomization = load_docs(DEPLOY / "kustomization.yaml")[0]
    assert kustomization["namespace"] == "vantage-prod"
    assert ("Namespace", "vantage-prod") in objects
    for (kind, name), doc in objects.items():
        assert doc["apiVersion"] and kind and name


def test_push_pod_runs_serve_with_the_log_manifest_env_and_its_own(objects, configmap):
    from ordertrack.push.settings import SETTINGS

    pod = objects[("Deployment", "ws-order-tracking")]
    spec = container(pod)
    assert spec["command"] == ["ordertrack", "serve"]
    assert {p["containerPort"] for p in spec["ports"]} == {8080, 9090}
    env = env_by_name(pod)
    assert LOG_MANIFEST_ENV | {"POD_NAME", "REGION", "DRAIN_SECONDS"} <= set(env)
    assert set(env) - NON_SETTING_ENV <= {s.env for s in SETTINGS}, "env the pod never reads"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["DATADOG_AGENT_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tracking-redis-credentials"
    assert env["JWT_PUBLIC_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "jwt-signing-keys"

    values = resolved_env(pod, configmap)
    assert values["PORT"] == "8080" and values["METRICS_PORT"] == "9090"
    assert values["MAX_CONNECTIONS_PER_POD"] == "10000"
    # the pod accepts every value it is given (secrets stand in with valid samples)
    environ = {**values, "REDIS_URL": "redis://redis:6379/0", "JWT_PUBLIC_KEY": "/keys/pub.pem"}
    cfg = config.load(SETTINGS, environ=environ)
    assert cfg.port == 8080 and cfg.metrics_port == 9090


def test_push_pod_probes_hit_readyz_and_healthz_on_the_ws_port(objects):
    spec = container(objects[("Deployment", "ws-order-tracking")])
    ready, live = spec["readinessProbe"]["httpGet"], spec["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and port_number(spec, ready["port"]) == 8080
    assert live["path"] == "/healthz" and port_number(spec, live["port"]) == 8080


def test_grace_period_outlasts_pre_stop_plus_drain(objects, configmap):
    pod = objects[("Deployment", "ws-order-tracking")]
    drain = float(resolved_env(pod, configmap)["DRAIN_SECONDS"])
    pre_stop = container(pod)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + float(pre_stop[1])
    assert drain > 0


def test_push_pod_is_sized_and_runs_as_non_root(objects):
    pod = objects[("Deployment", "ws-order-tracking")]
    spec = container(pod)
    resources = spec["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert pod["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    assert "replicas" not in pod["spec"], "the HPA owns the replica count"


def test_push_service_and_pdb_select_the_push_pods(objects):
    labels = objects[("Deployment", "ws-order-tracking")]["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", "ws-order-tracking")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in service["spec"]["ports"]} == {8080, 9090}
    pdb = objects[("PodDisruptionBudget", "ws-order-tracking")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_hpa_scales_on_the_pods_active_connection_gauge_at_7500(objects):
    from ordertrack.push import metrics

    hpa = objects[("HorizontalPodAutoscaler", "ws-order-tracking")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "ws-order-tracking"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 20)
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == metrics.ACTIVE_CONNECTIONS._name
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "7500"}
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 60
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_gateway_polls_with_two_replicas_and_carrier_credentials_from_a_secret(objects, configmap):
    from ordertrack.gateway.settings import SETTINGS

    gateway = objects[("Deployment", "logistics-gateway")]
    assert container(gateway)["command"] == ["ordertrack", "poll"]
    assert gateway["spec"]["replicas"] == 2
    env = env_by_name(gateway)
    assert set(env) - NON_SETTING_ENV <= {s.env for s in SETTINGS}
    for name in ("DHL_API_KEY", "FEDEX_CLIENT_ID", "FEDEX_CLIENT_SECRET", "UPS_CLIENT_ID",
                 "UPS_CLIENT_SECRET", "DATABASE_URL", "REDIS_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from a Secret"
    # the ConfigMap it loads whole gives the gateway values it accepts
    environ = {**configmap, "REDIS_URL": "redis://redis:6379/0",
               "DATABASE_URL": "postgresql://u@db/ordertrack"}
    cfg = config.load(SETTINGS, environ=environ)
    assert cfg.dhl_api_url.startswith("https://")


def test_api_deployment_service_and_cpu_hpa(objects, configmap):
    from ordertrack.api.main import SETTINGS

    api = objects[("Deployment", "order-tracking-api")]
    spec = container(api)
    assert spec["command"] == ["ordertrack", "api"]
    env = env_by_name(api)
    assert set(env) <= {s.env for s in SETTINGS}
    values = resolved_env(api, configmap)
    cfg = config.load(SETTINGS, environ={**values, "REDIS_URL": "redis://redis:6379/0"})
    api_port = cfg.api_port
    assert port_number(spec, spec["readinessProbe"]["httpGet"]["port"]) == api_port
    assert spec["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = objects[("Service", "order-tracking-api")]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    hpa = objects[("HorizontalPodAutoscaler", "order-tracking-api")]["spec"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["scaleTargetRef"]["name"] == "order-tracking-api"


def pod_templates(objects) -> dict[tuple[str, str], dict]:
    """Every applied object that runs a container (Deployments, the db-upgrade Job, ...)."""
    return {key: doc for key, doc in objects.items()
            if "containers" in doc.get("spec", {}).get("template", {}).get("spec", {})}


def test_every_config_and_secret_reference_names_something_declared(objects, configmap):
    secrets = {doc["metadata"]["name"]: doc["stringData"]
               for doc in load_docs(DEPLOY / "secrets.example.yaml")}
    configmaps = {name for kind, name in objects if kind == "ConfigMap"}
    checked = {"configMapKeyRef": 0, "secretKeyRef": 0, "configMapRef": 0, "secretRef": 0}
    for (_kind, name), doc in pod_templates(objects).items():
        for item in container(doc).get("env", []):
            source = item.get("valueFrom", {})
            if "configMapKeyRef" in source:
                assert source["configMapKeyRef"]["key"] in configmap, (name, item["name"])
                checked["configMapKeyRef"] += 1
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert ref["key"] in secrets[ref["name"]], (name, item["name"])
                checked["secretKeyRef"] += 1
        for source in container(doc).get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, name
                checked["configMapRef"] += 1
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, name
                checked["secretRef"] += 1
    # every reference the applied manifests spell out was checked: none skipped, none missed
    applied_text = "\n".join((DEPLOY / resource).read_text() for resource in
                             load_docs(DEPLOY / "kustomization.yaml")[0]["resources"])
    for kind, count in checked.items():
        assert count == len(re.findall(rf"^\s*-?\s*{kind}:", applied_text, re.M)), kind
    assert checked["configMapKeyRef"] and checked["secretKeyRef"] and checked["configMapRef"]


def kong_services() -> dict[str, dict]:
    return {service["name"]: service for service in load_docs(DEPLOY / "kong.yaml")[0]["services"]}


def test_kong_route_matches_the_log():
    service = kong_services()["ws-order-tracking"]
    assert service["url"] == "http://ws-order-tracking.vantage-prod.svc.cluster.local:8080"
    assert service["read_timeout"] == service["write_timeout"] == 86_400_000  # 24 h in ms
    routes = {route["name"]: route for route in service["routes"]}
    native = routes["order-tracking-websocket"]
    assert native["paths"] == ["/ws/orders"] and native["methods"] == ["GET"]
    assert native["strip_path"] is False
    plugins = {plugin["name"]: plugin["config"] for plugin in native["plugins"]}
    assert {"jwt", "rate-limiting", "cors", "request-size-limiting"} <= set(plugins)
    assert plugins["jwt"]["claims_to_verify"] == ["exp"]
    assert plugins["jwt"]["uri_param_names"] == []  # never a token in the query string
    assert (plugins["rate-limiting"]["second"], plugins["rate-limiting"]["minute"]) == (10, 100)
    assert plugins["request-size-limiting"] == {"allowed_payload_size": 4, "size_unit": "kilobytes"}
    assert "https://www.vantage.com" in plugins["cors"]["origins"]
    for route in routes.values():
        assert route["paths"] == ["/ws/orders"]
        assert {p["name"] for p in route["plugins"]} >= {"rate-limiting", "request-size-limiting"}


def test_kong_routes_the_rest_fallback_to_the_api_service_with_its_plugins(objects):
    service = kong_services()["order-tracking-api"]
    api_service = objects[("Service", "order-tracking-api")]
    (api_port,) = api_service["spec"]["ports"]
    assert service["url"] == (f"http://order-tracking-api.vantage-prod.svc.cluster.local:"
                              f"{api_port['port']}")
    assert service["read_timeout"] <= 30_000, "an API call, not a long-lived socket"
    route = next(r for r in service["routes"] if r["name"] == "order-tracking-rest")
    # the path the REST fallback answers on, GET plus the browser's CORS preflight
    assert route["paths"] == ["/api/v2/orders"]
    assert any(path.startswith("/api/v2/orders/") for path in app_paths())
    assert set(route["methods"]) == {"GET", "OPTIONS"}
    assert route["strip_path"] is False
    plugins = {plugin["name"]: plugin["config"] for plugin in route["plugins"]}
    assert set(plugins) == {"jwt", "rate-limiting", "cors", "request-size-limiting"}
    assert plugins["jwt"]["uri_param_names"] == []  # never a token in the query string
    assert plugins["jwt"]["run_on_preflight"] is False  # a preflight carries no token
    assert plugins["rate-limiting"]["limit_by"] == "ip"
    assert plugins["rate-limiting"]["minute"] >= 2 * 60, "a poller every 30 s, many per NAT"
    cors = plugins["cors"]
    assert set(cors["origins"]) == {"https://www.vantage.com", "https://m.vantage.com"}
    assert {"Authorization", "X-Request-ID", "X-Fallback-Reason"} <= set(cors["headers"])
    assert "X-Request-ID" in cors["exposed_headers"]
    assert plugins["request-size-limiting"]["size_unit"] == "kilobytes"


def test_kong_routes_every_post_the_page_makes_with_a_small_body_limit():
    """The page's view and stay reports (the rollout's criteria) reach the API through the
    edge: each POST path the app serves matches a POST route, bodies limited to 1 KB."""
    import re

    routes = kong_services()["order-tracking-api"]["routes"]
    for path, example in (("/api/v2/orders/{order_id}/views", "/api/v2/orders/ord_1a2b/views"),
                          ("/api/v2/page-stays", "/api/v2/page-stays")):
        assert path in app_paths()
        matching = [r for r in routes if "POST" in r["methods"] and any(
            re.fullmatch(p[1:], example) if p.startswith("~") else example.startswith(p)
            for p in r["paths"])]
        assert len(matching) == 1, path
        plugins = {plugin["name"]: plugin["config"] for plugin in matching[0]["plugins"]}
        assert plugins["request-size-limiting"] == {"allowed_payload_size": 1,
                                                    "size_unit": "kilobytes"}
        assert plugins["rate-limiting"]["limit_by"] == "ip"
    views = next(r for r in routes if r["name"] == "order-tracking-page-views")
    assert {p["name"] for p in views["plugins"]} >= {"jwt", "cors"}


def app_paths() -> set[str]:
    """The paths the API's app really serves (its OpenAPI document)."""
    from ordertrack.api.app import create_app
    from ordertrack.api.main import load_settings

    app = create_app(load_settings(environ={"JWT_JWKS_URL": "https://keys.example/jwks.json"}))
    return set(app.openapi()["paths"])


def test_dockerfile_builds_on_python_311_slim_and_runs_as_non_root():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "pip wheel" in text and "pip install" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))


def test_push_pod_listen_queue_fits_a_whole_pods_reconnect_storm(objects, configmap):
    """The kernel caps LISTEN_BACKLOG at the pod's net.core.somaxconn: both must hold every
    connection of a pod (MAX_CONNECTIONS_PER_POD) reconnecting at once (issue 17 item 7)."""
    pod = objects[("Deployment", "ws-order-tracking")]
    values = resolved_env(pod, configmap)
    sysctls = {item["name"]: int(item["value"])
               for item in pod["spec"]["template"]["spec"]["securityContext"]["sysctls"]}
    backlog = int(values["LISTEN_BACKLOG"])
    assert backlog >= int(values["MAX_CONNECTIONS_PER_POD"])
    assert sysctls["net.core.somaxconn"] >= backlog
    assert "allowed-unsafe-sysctls=net.core.somaxconn" in (DEPLOY / "README.md").read_text()
