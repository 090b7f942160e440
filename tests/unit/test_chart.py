"""The Helm chart (charts/rtvol), rendered by the real Helm engine (helm-python-sdk embeds Helm v4).

Every values file is rendered, linted and checked: structure (sidecar vs. own Deployment, GPU
scheduling, probes, security contexts, network policies), values.schema.json (good files pass,
bad values are rejected), strict Kubernetes JSON schemas for the oldest and newest supported
Kubernetes versions (kubernetes-validate, offline) and checkov with 0 failed checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="needs the deploy extra: pip install -e .[deploy]")
kv = pytest.importorskip("kubernetes_validate.utils", reason="needs the deploy extra")
from helpers.chart import (  # noqa: E402
    CHART,
    CRD_KINDS,
    NAMESPACE,
    PROFILES,
    RELEASE,
    TLS,
    TLS_PROFILES,
    WORKLOADS,
    Doc,
    container,
    containers,
    env,
    find,
    gpu_limit,
    ingress,
    kinds,
    manifests,
    pod_spec,
    profile_manifests,
    profile_values,
    render,
    supported_versions,
)

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = Path(os.environ.get("RTVOL_CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


@pytest.fixture(scope="module", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(profile: str) -> list[Doc]:
    return profile_manifests(profile)



def test_lint_is_clean_for_every_values_file(profile: str) -> None:
    report = helm.lint(CHART, profile_values(profile), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not report["errors"] and not problems, report


def test_values_files_pass_the_schema(profile: str) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(profile_values(profile))


BAD_VALUES = {
    "unknown top-level key": {"replicas": 3},
    "unknown component key (typo)": {"gateway": {"replica": 2}},
    "model mode not an enum value": {"model": {"mode": "daemonset"}},
    "image tag latest": {"feature": {"image": {"tag": "latest"}}},
    "port out of range": {"gateway": {"ports": {"http": 70000}}},
    "port as a string": {"feature": {"ports": {"grpc": "50052"}}},
    "negative replicas": {"feature": {"replicas": -1}},
    "GPU count zero": {"model": {"gpu": {"enabled": True, "count": 0}}},
    "unknown GPU resource": {"model": {"gpu": {"resourceName": "amd.com/gpu"}}},
    "external Redis without a URL": {"redis": {"enabled": False, "externalUrl": ""}},
    "Redis URL with the wrong scheme": {"redis": {"enabled": False, "externalUrl": "http://x:6379"}},
    "root filesystem made writable": {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
    "running as root allowed": {"podSecurityContext": {"runAsNonRoot": False}},
    "HPA CPU target over 100": {"gateway": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
    "model repository source unknown": {"model": {"repository": {"source": "s3"}}},
    "bad memory quantity": {"gateway": {"resources": {"limits": {"memory": "lots"}}}},
    "PDB with both minAvailable and maxUnavailable": {"feature": {"pdb": {"minAvailable": 1}}},
    "service type unknown": {"gateway": {"service": {"type": "Ingress"}}},
    "feature service under an HPA (replicas own stocks)": {"feature": {"autoscaling": {"enabled": True}}},
    "model server unknown": {"model": {"server": "torchserve"}},
    "tier-1 latency budget of zero": {"gateway": {"modelLatencyBudgetMs": 0}},
    "tier-1 budget judging neither time": {"gateway": {"modelBudgetJudges": "both"}},
    "shadow pause of zero": {"model": {"shadowMaxPauseMs": 0}},
    "sidecar backend misspelt": {"model": {"backend": "cuda-graph"}},
    "Triton image tag latest": {"model": {"tritonserver": {"image": {"tag": "latest"}}}},
    "cert-manager without an issuer": {"tls": {"enabled": True, "certManager": {"enabled": True}}},
    "TLS Secret name not a DNS name": {"tls": {"existingSecret": {"redis": "Redis_TLS"}}},
    "unknown TLS component": {"tls": {"existingSecret": {"client": "x"}}},
    "gateway DNS name with a scheme": {"tls": {"certManager": {"gatewayDnsNames": ["https://vol.example.com"]}}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):  # and an install would fail the same way
        render(values)


def test_schema_accepts_a_valid_override() -> None:
    values = {"redis": {"enabled": False, "externalUrl": "rediss://cache.example:6380/0"},
              "model": {"mode": "deployment", "gpu": {"enabled": True, "count": 2}}}
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)


# ---------------------------------------------------------------- structure


def test_every_container_is_locked_down(docs: list[Doc]) -> None:
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert workloads
    for doc in workloads:
        pod = pod_spec(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in containers(doc):
            sc = c["securityContext"]
            where = f"{doc['metadata']['name']}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"], where
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            # a read-only root filesystem needs a writable /tmp
            assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_probes_grpc_for_grpc_services_http_for_the_gateway(docs: list[Doc]) -> None:
    gateway = find(docs, "Deployment", "gateway")
    g = container(gateway, "gateway")
    assert g["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert g["livenessProbe"]["httpGet"]["path"] == "/livez"
    feature = container(next(d for d in docs if d["kind"] in WORKLOADS
                             and d["metadata"]["name"] == f"{RELEASE}-feature"), "feature")
    own = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-model"]
    model = container(own[0] if own else gateway, "model")
    grpc_probed = [(feature, 50052)]
    if model["image"].startswith("nvcr.io/nvidia/tritonserver:"):  # Triton's HTTP health API
        assert [model[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")] == [
            "/v2/health/ready", "/v2/health/live", "/v2/health/ready"]
    else:
        grpc_probed.append((model, 8001))
    for c, port in grpc_probed:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == port, (c["name"], probe)


def test_default_model_is_a_sidecar_on_a_shared_socket() -> None:
    docs = manifests(profile_values("default"))
    gateway = find(docs, "Deployment", "gateway")
    names = [c["name"] for c in containers(gateway, init=False)]
    assert names == ["gateway", "model"]
    socket_volume = next(v for v in pod_spec(gateway)["volumes"] if v["name"] == "model-socket")
    assert "emptyDir" in socket_volume
    socket_dirs = {c["name"]: next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "model-socket")
                   for c in containers(gateway, init=False)}
    assert socket_dirs["gateway"] == socket_dirs["model"]
    url = env(container(gateway, "gateway"))["RTVOL_MODEL_URL"]
    assert url == f"unix:{socket_dirs['model']}/model.sock"
    assert env(container(gateway, "model"))["RTVOL_UNIX_SOCKET"] == url.removeprefix("unix:")
    # big batches through shared memory in the same memory volume, sized for the workers' regions
    assert socket_volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "160Mi"}
    assert env(container(gateway, "model"))["RTVOL_SHM_DIR"] == socket_dirs["model"]
    assert env(container(gateway, "gateway"))["RTVOL_MODEL_SHM_DIR"] == socket_dirs["gateway"]
    assert env(container(gateway, "gateway"))["RTVOL_MODEL_SHM_BYTES"] == "8388608"
    assert not [d for d in docs if d["metadata"]["name"] == f"{RELEASE}-model"]
    # the default model repository is filled by an init container into an emptyDir
    assert [c["name"] for c in pod_spec(gateway)["initContainers"]] == ["model-repository"]


def test_model_deployment_mode_uses_a_headless_service() -> None:
    docs = manifests(profile_values("default", model={"mode": "deployment", "replicas": 3}))
    model = find(docs, "Deployment", "model")
    assert model["spec"]["replicas"] == 3
    service = find(docs, "Service", "model")
    assert service["spec"]["clusterIP"] == "None"
    gateway = find(docs, "Deployment", "gateway")
    assert [c["name"] for c in containers(gateway, init=False)] == ["gateway"]
    assert "RTVOL_MODEL_SHM_DIR" not in env(container(gateway, "gateway"))  # another pod: no shared memory
    assert "RTVOL_SHM_DIR" not in env(container(model, "model"))
    assert env(container(gateway, "gateway"))["RTVOL_MODEL_URL"] == (
        f"dns:///{service['metadata']['name']}:{service['spec']['ports'][0]['port']}")


def test_gateway_workers_default_to_the_pods_cores_and_can_be_set() -> None:
    default = find(manifests(profile_values("default")), "Deployment", "gateway")
    assert env(container(default, "gateway"))["RTVOL_WORKERS"] == "0"  # 0: the cgroup CPU limit's cores
    two = find(manifests(profile_values("default", gateway={"workers": 2})), "Deployment", "gateway")
    assert env(container(two, "gateway"))["RTVOL_WORKERS"] == "2"

def test_one_feature_replica_is_a_deployment_several_a_statefulset_owning_stocks() -> None:
    single = manifests(profile_values("default"))
    assert find(single, "Deployment", "feature")["spec"]["replicas"] == 1
    assert [d["kind"] for d in single if d["metadata"]["name"] == f"{RELEASE}-feature-replicas"] == []
    docs = manifests(profile_values("default", feature={"replicas": 3}))
    assert not [d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-feature"]
    sts = find(docs, "StatefulSet", "feature")
    assert (sts["spec"]["replicas"], sts["spec"]["podManagementPolicy"]) == (3, "Parallel")
    # each pod finds its ordinal in its own name; every one knows how many replicas there are
    assert env(container(sts, "feature"))["RTVOL_REPLICAS"] == "3"
    assert "RTVOL_REPLICA" not in env(container(sts, "feature"))
    headless = next(d for d in kinds(docs, "Service") if d["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    # the Ingest ports (gRPC, the framed stream) per pod; metrics: scraped once, elsewhere
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc", "stream"]
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert not [d for d in kinds(docs, "HorizontalPodAutoscaler")
                if d["metadata"]["labels"]["app.kubernetes.io/component"] == "feature"]
    cloud = manifests(profile_values("cloud"))
    assert find(cloud, "StatefulSet", "feature")["spec"]["replicas"] == 2


def test_gpu_values_put_the_model_on_a_gpu_node() -> None:
    docs = manifests(profile_values("gpu"))
    gateway = find(docs, "Deployment", "gateway")
    assert gpu_limit(container(gateway, "model")) == 1
    assert gpu_limit(container(gateway, "gateway")) == 0
    pod = pod_spec(gateway)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "runtimeClassName" not in pod  # optional: empty in values-gpu.yaml
    for profile in ("gpu", "cloud"):  # two tick-to-signal batches out where the sidecar has a GPU
        gw = find(manifests(profile_values(profile)), "Deployment", "gateway")
        assert env(container(gw, "gateway"))["RTVOL_PIPELINE_INFLIGHT"] == "2"
    default = find(manifests(profile_values("default")), "Deployment", "gateway")
    assert env(container(default, "gateway"))["RTVOL_PIPELINE_INFLIGHT"] == "1"


def test_tritonserver_replaces_the_sidecar() -> None:
    """model.server=tritonserver: NVIDIA's image on the same repository, reached over loopback
    as a sidecar (no Unix socket) or through the headless Service as a Deployment; the
    gateway's tier-1 budget comes from the values (values-triton.yaml's for Triton)."""
    docs = manifests(profile_values("gpu+triton"))
    gateway = find(docs, "Deployment", "gateway")
    assert [c["name"] for c in containers(gateway, init=False)] == ["gateway", "model"]
    triton = container(gateway, "model")
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert triton["command"] == ["tritonserver"]
    args = dict(a.removeprefix("--").split("=", 1) for a in triton["args"] if "=" in a)
    assert args["model-repository"] == "/models" and args["model-control-mode"] == "poll"
    assert (args["grpc-address"], args["grpc-port"], args["metrics-port"]) == ("127.0.0.1", "8001", "8002")
    assert "--disable-auto-complete-config" in triton["args"]  # config.pbtxt as exported, or no load
    assert {m["name"]: m.get("readOnly", False) for m in triton["volumeMounts"]} == {
        "tmp": False, "model-repository": True}
    assert gpu_limit(triton) == 1 and gpu_limit(container(gateway, "gateway")) == 0
    assert "model-socket" not in {v["name"] for v in pod_spec(gateway)["volumes"]}
    e = env(container(gateway, "gateway"))
    assert e["RTVOL_MODEL_URL"] == "127.0.0.1:8001"
    assert (e["RTVOL_MODEL_LATENCY_BUDGET_MS"], e["RTVOL_MODEL_TIMEOUT_MS"], e["RTVOL_DEADLINE_MS"]) == (
        "15", "30", "50")
    # the budget reaches a real GatewaySettings through the same variables, and holds there
    from rtvol.services.gateway.settings import GatewaySettings
    budget = ("deadline_ms", "model_timeout_ms", "model_latency_budget_ms")
    settings = GatewaySettings(**{k: e[f"RTVOL_{k.upper()}"] for k in budget})
    assert (settings.model_latency_budget_ms, settings.model_timeout_ms) == (15, 30)

    own = manifests(profile_values("gpu+triton", model={"mode": "deployment"}))
    model = container(find(own, "Deployment", "model"), "model")
    assert "--grpc-address=0.0.0.0" in model["args"] and gpu_limit(model) == 1
    service = find(own, "Service", "model")
    assert env(container(find(own, "Deployment", "gateway"), "gateway"))["RTVOL_MODEL_URL"] == (
        f"dns:///{service['metadata']['name']}:8001")
    # Triton's HTTP port (inference too, without keys) is open to no pod: only grpc and metrics
    assert {p for p, _ in ingress(own, "model")} == {8001, 8002}


def test_default_values_keep_rtvols_sidecar_and_budget() -> None:
    e = env(container(find(manifests(profile_values("default")), "Deployment", "gateway"), "gateway"))
    assert (e["RTVOL_MODEL_LATENCY_BUDGET_MS"], e["RTVOL_MODEL_TIMEOUT_MS"], e["RTVOL_DEADLINE_MS"]) == (
        "5", "20", "50")
    assert e["RTVOL_MODEL_LATENCY_BUDGET_PER_WINDOW_US"] == "25"
    assert (e["RTVOL_MODEL_POLL_S"], e["RTVOL_SHADOW_QUEUE"], e["RTVOL_SHADOW_MAX_BATCH"],
            e["RTVOL_SHADOW_TIMEOUT_MS"]) == ("2", "16", "256", "1000")


def test_tier1_and_shadow_knobs_reach_the_gateway_and_sidecar() -> None:
    def envs(rendered: list[Doc]) -> tuple[dict[str, str], dict[str, str]]:
        pod = find(rendered, "Deployment", "gateway")
        return env(container(pod, "gateway")), env(container(pod, "model"))

    gateway, model = envs(manifests(profile_values("default")))
    assert (gateway["RTVOL_MODEL_BUDGET_JUDGES"], gateway["RTVOL_BREAKER_PROBE_WINDOWS"]) == ("sidecar", "8")
    assert gateway["RTVOL_PIPELINE_INFLIGHT"] == "1"
    assert (model["RTVOL_SHADOW_SLICE_ROWS"], model["RTVOL_SHADOW_MAX_PAUSE_MS"]) == ("16", "250")
    gateway, model = envs(manifests(profile_values(
        "default", gateway={"modelBudgetJudges": "wall", "breakerProbeWindows": 0, "pipelineInflight": 2},
        model={"shadowSliceRows": 0, "shadowMaxPauseMs": 50})))
    assert (gateway["RTVOL_MODEL_BUDGET_JUDGES"], gateway["RTVOL_BREAKER_PROBE_WINDOWS"]) == ("wall", "0")
    assert gateway["RTVOL_PIPELINE_INFLIGHT"] == "2"
    assert (model["RTVOL_SHADOW_SLICE_ROWS"], model["RTVOL_SHADOW_MAX_PAUSE_MS"]) == ("0", "50")


def test_the_schema_takes_exactly_the_sidecars_backends() -> None:
    from rtvol.services.model.backends import NAMES

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["model"]["properties"]["backend"]["enum"] == list(NAMES)


def test_cpu_values_ask_for_no_gpu() -> None:
    docs = manifests(profile_values("cpu"))
    assert all(gpu_limit(c) == 0 for d in docs if d["kind"] in WORKLOADS for c in containers(d))
    assert all("nodeSelector" not in pod_spec(d) for d in docs if d["kind"] in WORKLOADS)
    assert not kinds(docs, "HorizontalPodAutoscaler")


def test_cloud_values_run_the_model_on_the_gpu_pool() -> None:
    docs = manifests(profile_values("cloud"))
    model = find(docs, "Deployment", "model")
    pod = pod_spec(model)
    assert gpu_limit(container(model, "model")) == 1
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    repo = next(v for v in pod["volumes"] if v["name"] == "model-repository")
    assert repo["persistentVolumeClaim"]["readOnly"] is True
    assert find(docs, "PersistentVolumeClaim", "models")["spec"]["accessModes"] == ["ReadOnlyMany"]
    gateway_hpa = find(docs, "HorizontalPodAutoscaler", "gateway")
    metric_types = [m["type"] for m in gateway_hpa["spec"]["metrics"]]
    assert metric_types == ["Resource", "Pods"]
    assert "replicas" not in find(docs, "Deployment", "gateway")["spec"]  # the HPA owns it
    assert find(docs, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 2
    assert find(docs, "Service", "gateway")["spec"]["type"] == "LoadBalancer"


def test_external_redis_replaces_the_statefulset() -> None:
    url = "rediss://cache.example:6380/0"
    docs = manifests(profile_values("default", redis={"enabled": False, "externalUrl": url}))
    assert not kinds(docs, "StatefulSet")
    assert env(container(find(docs, "Deployment", "feature"), "feature"))["RTVOL_REDIS_URL"] == url
    assert env(container(find(docs, "Deployment", "gateway"), "gateway"))["RTVOL_REDIS_URL"] == url
    assert "redis" not in {d["metadata"]["labels"]["app.kubernetes.io/component"]
                           for d in kinds(docs, "NetworkPolicy")}



def _component_peer(component: str) -> Doc:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rtvol",
                                            "app.kubernetes.io/instance": RELEASE,
                                            "app.kubernetes.io/component": component}}}


def test_network_policies_fence_the_model_and_redis() -> None:
    docs = manifests(profile_values("default"))
    workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in docs
                 if d["kind"] in WORKLOADS}
    assert workloads == {d["metadata"]["labels"]["app.kubernetes.io/component"]
                         for d in kinds(docs, "NetworkPolicy")}
    # sidecar: its gRPC port 8001 is admitted from nowhere (the gateway uses the Unix socket)
    assert 8001 not in {port for port, _ in ingress(docs, "gateway")}
    assert ingress(docs, "redis") == [(6379, [_component_peer("feature"), _component_peer("gateway")])]

    docs = manifests(profile_values("default", model={"mode": "deployment"}))
    model_grpc = [peers for port, peers in ingress(docs, "model") if port == 8001]
    assert model_grpc == [[_component_peer("gateway")]]


def test_the_framed_ingest_stream_is_open_to_feeders_only() -> None:
    docs = manifests(profile_values("default"))
    feature = container(find(docs, "Deployment", "feature"), "feature")
    assert env(feature)["RTVOL_STREAM_PORT"] == "50053"
    assert {"name": "stream", "containerPort": 50053, "protocol": "TCP"} in feature["ports"]
    service = find(docs, "Service", "feature")
    stream = {"name": "stream", "port": 50053, "targetPort": "stream", "protocol": "TCP"}
    assert stream in service["spec"]["ports"]
    feeders = [{"podSelector": {"matchLabels": {"rtvol.io/role": "feeder"}}}]
    assert [peers for port, peers in ingress(docs, "feature") if port == 50053] == [feeders]
    assert 50053 not in {port for port, _, _ in _egress(docs, "gateway")}  # the gateway calls gRPC only


def _egress(docs: list[Doc], component: str) -> list[tuple[int, str, list[Doc]]]:
    """(port, protocol, peers) for every destination a component's NetworkPolicy lets it reach."""
    policy = find(docs, "NetworkPolicy", component)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    rules = policy["spec"]["egress"]
    return [(p["port"], p["protocol"], rule["to"]) for rule in rules for p in rule["ports"]]


DNS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]


def test_egress_reaches_only_what_each_component_calls(docs: list[Doc], profile: str) -> None:
    sidecar = any(c["name"] == "model" for c in containers(find(docs, "Deployment", "gateway"), init=False))
    dns = [(53, "UDP", DNS), (53, "TCP", DNS)]
    more = profile_values(profile).get("networkPolicy", {}).get("extraEgress", [])  # e.g. the OTLP collector
    extra = [(p["port"], p["protocol"], rule["to"]) for rule in more for p in rule["ports"]]
    redis = [(6379, "TCP", [_component_peer("redis")])]
    model = [] if sidecar else [(8001, "TCP", [_component_peer("model")])]
    assert _egress(docs, "gateway") == [*dns, (50052, "TCP", [_component_peer("feature")]), *model, *redis,
                                        *extra]
    assert _egress(docs, "feature") == [*dns, *redis, *extra]
    assert _egress(docs, "redis") == dns  # Redis calls no one
    if not sidecar:
        assert _egress(docs, "model") == [*dns, *extra]
    # metrics only from Prometheus in the monitoring namespace; the feature service from feeders
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert (9103, monitoring) in ingress(docs, "gateway") and (9102, monitoring) in ingress(docs, "feature")
    feeders = [{"podSelector": {"matchLabels": {"rtvol.io/role": "feeder"}}}]
    assert (50052, feeders) in ingress(docs, "feature")


def test_credentials_come_from_secrets_as_files(docs: list[Doc]) -> None:
    """API keys and Redis passwords: Secret volumes (never env values); reflection and docs off."""
    from rtvol import redis_acl

    secrets = {}
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        for v in pod_spec(doc)["volumes"]:
            if "secret" in v:
                secrets[(doc["metadata"]["labels"]["app.kubernetes.io/component"], v["name"])] = v["secret"]
        for c in containers(doc):
            assert all("valueFrom" not in e for e in c.get("env", [])), c["name"]
            e = env(c)
            if c["name"] in ("gateway", "feature", "model") and "args" in c and "serve" in c["args"]:
                assert e["RTVOL_API_KEYS_FILE"] == "/etc/rtvol/auth/api-keys"
                assert e["RTVOL_GRPC_REFLECTION"] == "false"
    assert secrets[("feature", "auth")]["secretName"] == f"{RELEASE}-auth"
    assert [i["key"] for i in secrets[("feature", "auth")]["items"]] == ["api-keys"]  # not the gateway's key
    assert [i["key"] for i in secrets[("gateway", "auth")]["items"]] == ["api-keys", "gateway-key"]
    for user in ("gateway", "feature"):
        assert secrets[(user, "redis-password")]["items"] == [{"key": f"{user}-password", "path": "password"}]
    gateway = env(container(find(docs, "Deployment", "gateway"), "gateway"))
    assert gateway["RTVOL_API_DOCS"] == "false"
    assert gateway["RTVOL_API_KEY_FILE"] == "/etc/rtvol/auth/gateway-key"
    assert gateway["RTVOL_REDIS_URL"] == f"redis://rtvol-gateway@{RELEASE}-redis:6379/0"
    assert gateway["RTVOL_REDIS_PASSWORD_FILE"] == "/etc/rtvol/redis/password"
    redis = find(docs, "StatefulSet", "redis")
    args = container(redis, "redis")["args"]
    assert args[args.index("--protected-mode") + 1] == "yes" and "--aclfile" in args
    script = pod_spec(redis)["initContainers"][0]["command"][2]
    assert 'echo "user default off"' in script
    for name, rules in redis_acl.USERS.items():  # the chart's rules are the tested ones
        password = f"$(cat /etc/redis-users/{name.removeprefix('rtvol-')}-password)"
        assert f'user {name} reset on >{password} {rules}"' in script


def test_existing_secrets_and_opt_ins() -> None:
    docs = manifests(profile_values("default", auth={"existingSecret": "keys"}, grpcReflection=True,
                                    redis={"auth": {"existingSecret": "redis-users"}},
                                    gateway={"apiDocs": True}))
    gateway = find(docs, "Deployment", "gateway")
    names = {v["name"]: v["secret"]["secretName"] for v in pod_spec(gateway)["volumes"] if "secret" in v}
    assert names == {"auth": "keys", "redis-password": "redis-users"}
    e = env(container(gateway, "gateway"))
    assert e["RTVOL_API_DOCS"] == "true" and e["RTVOL_GRPC_REFLECTION"] == "true"
    no_auth = manifests(profile_values("default", auth={"enabled": False}))
    off = env(container(find(no_auth, "Deployment", "gateway"), "gateway"))
    assert "RTVOL_API_KEYS_FILE" not in off and "RTVOL_API_KEY_FILE" not in off


def test_a_load_balancer_needs_auth() -> None:
    with pytest.raises(Exception, match="LoadBalancer exposes the API beyond the cluster: it needs auth"):
        render(profile_values("cloud", auth={"enabled": False}))
    assert find(manifests(profile_values("cloud")), "Service", "gateway")["spec"]["type"] == "LoadBalancer"


def test_toggles_remove_monitoring_and_policies() -> None:
    docs = manifests(profile_values("default", networkPolicy={"enabled": False}, metrics={
        "serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False},
        "dashboards": {"enabled": False}}))
    present = {d["kind"] for d in docs}
    assert present.isdisjoint({"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ConfigMap"})
    assert {"Deployment", "Service", "StatefulSet"} <= present


# ---------------------------------------------------------------- dashboards and rules


def test_dashboards_come_from_their_only_copies() -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert files, "charts/rtvol/dashboards/ holds at least one dashboard"
    maps = kinds(manifests(profile_values("default")), "ConfigMap")
    assert len(maps) == len(files)
    shipped = {key: json.loads(text) for cm in maps for key, text in cm["data"].items()}
    assert shipped == {f.name: json.loads(f.read_text()) for f in files}
    assert all(cm["metadata"]["labels"]["grafana_dashboard"] == "1" for cm in maps)
    overview = shipped["rtvol-overview.json"]
    exprs = " ".join(t["expr"] for p in overview["panels"] for t in p["targets"])
    for q in ("0.5", "0.99", "0.999"):
        assert f"histogram_quantile({q}," in exprs
    assert "_request_duration_seconds_count" in exprs  # request rate


def test_prometheus_rule_carries_every_rule_group() -> None:
    files = sorted((CHART / "rules").glob("*.yaml"))
    groups = [g for f in files for g in yaml.safe_load(f.read_text())["groups"]]
    (rule,) = kinds(manifests(profile_values("default")), "PrometheusRule")
    assert rule["spec"]["groups"] == groups
    rules = [r for g in groups for r in g["rules"]]
    assert any("record" in r and "histogram_quantile(0.99" in r["expr"] for r in rules)
    assert any("alert" in r for r in rules)
    # every expression names rtvol metrics or rtvol recording rules
    assert all(re.search(r"rtvol[_:]", r["expr"]) for r in rules)


def test_monitoring_resources(docs: list[Doc]) -> None:
    monitors = kinds(docs, "ServiceMonitor")
    services = {d["metadata"]["name"]: d for d in kinds(docs, "Service")}
    assert monitors
    for sm in monitors:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        wanted = {e["port"] for e in sm["spec"]["endpoints"]}
        # every selected Service with a port the monitor scrapes is scraped: exactly one may have one
        selected = [s for s in services.values()
                    if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
                    and wanted & {p["name"] for p in s["spec"]["ports"]}]
        assert len(selected) == 1, sm["metadata"]["name"]
        assert wanted <= {p["name"] for p in selected[0]["spec"]["ports"]}


def test_notes_say_how_to_reach_the_gateway_and_grafana() -> None:
    notes = render(profile_values("default"))["rtvol/templates/NOTES.txt"]
    assert f"port-forward svc/{RELEASE}-gateway 8080:http 50051:grpc" in notes
    assert "grafana" in notes.lower() and "3000" in notes


# ---------------------------------------------------------------- Kubernetes schemas


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_manifests_match_kubernetes_schemas_strictly(docs: list[Doc], which: str) -> None:
    version = supported_versions()[0 if which == "oldest" else 1]
    checked = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kv.validate(doc, version, strict=True)  # raises ValidationError with the field
        checked += 1
    assert checked >= 10


def test_strict_schemas_catch_a_typo() -> None:
    doc = manifests(profile_values("default"))[0]
    bad = json.loads(json.dumps(doc))
    bad["metadata"]["lables"] = {"x": "y"}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, supported_versions()[1], strict=True)


# ---------------------------------------------------------------- checkov


def write_rendered(out: Path) -> None:
    """Every values file, as is and with each TLS variant."""
    for profile in PROFILES:
        for variant, tls in {"plain": {}, **(TLS if profile in TLS_PROFILES else {})}.items():
            docs = manifests(profile_values(profile, **({"tls": tls} if tls else {})))
            name = f"{profile}-{variant.replace(' ', '-')}.yaml"
            (out / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest.mark.slow
def test_checkov_finds_nothing(tmp_path: Path) -> None:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} missing: `make install` creates .venv-checkov")
        pytest.skip(f"{CHECKOV} missing: `make install` creates .venv-checkov")
    write_rendered(tmp_path)
    config = CHART / ".checkov.yaml"
    proc = subprocess.run([str(CHECKOV), "--config-file", str(config), "-d", str(tmp_path),
                           "-o", "json"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["passed"] > 500
    # no check is skipped by an annotation: every skip is in the commented list of .checkov.yaml
    assert summary["skipped"] == 0, report["results"].get("skipped_checks")



def test_the_gateway_follows_every_feature_replica_by_its_pods_name() -> None:
    def feature_url(**overrides: Any) -> str:
        gateway = find(manifests(profile_values("default", **overrides)), "Deployment", "gateway")
        return env(container(gateway, "gateway"))["RTVOL_FEATURE_URL"]

    assert feature_url() == f"{RELEASE}-feature:50052"  # one replica: its Service
    docs = manifests(profile_values("default", feature={"replicas": 3}))
    sts, port = find(docs, "StatefulSet", "feature"), 50052
    # in ordinal order, the form `rtvol feed --target` takes: NAME-i.HEADLESS:PORT
    assert feature_url(feature={"replicas": 3}) == ",".join(
        f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}:{port}" for i in range(3))
