"""The chart with TLS on (charts/rtvol, `tls.enabled`), rendered by the real Helm engine.

Both certificate sources (cert-manager Certificates, existing Secrets) on every values file that
allows TLS: every listener serves its Secret's certificate, mTLS between the services, probes
that work under TLS, Prometheus scraping HTTPS, strict Kubernetes schemas and lint.
"""

from __future__ import annotations

import re

import pytest

helm = pytest.importorskip("helm_python", reason="needs the deploy extra: pip install -e .[deploy]")
kv = pytest.importorskip("kubernetes_validate.utils", reason="needs the deploy extra")
from helpers.chart import (  # noqa: E402
    CHART,
    CRD_KINDS,
    ISSUER,
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
    ingress,
    kinds,
    pod_spec,
    profile_manifests,
    profile_values,
    render,
    supported_versions,
)


@pytest.fixture(params=TLS)
def tls_variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=TLS_PROFILES)
def tls_profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tls_docs(tls_profile: str, tls_variant: str) -> list[Doc]:
    return profile_manifests(tls_profile, tls_variant)


def _secret_mounted_at(doc: Doc, c: Doc, path: str) -> str:
    (name,) = [m["name"] for m in c["volumeMounts"] if m["mountPath"] == path]
    (volume,) = [v for v in pod_spec(doc)["volumes"] if v["name"] == name]
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}
    return str(volume["secret"]["secretName"])


def _host(url: str) -> str:
    return re.sub(r"^(\w+:(///|//)?)?([^@/]*@)?", "", url).rsplit(":", 1)[0]


def test_tls_on_every_listener_and_mtls_between_the_services(tls_docs: list[Doc], tls_variant: str) -> None:
    """Every rtvol container serves and calls with its Secret's certificate; the feature service
    and the sidecar demand a client certificate (the gateway does not: engines use API keys);
    probes work under TLS (HTTPS for the gateway, the plaintext health-only port for gRPC)."""
    served: dict[str, str] = {}  # component -> the Secret its listeners serve
    for doc in (d for d in tls_docs if d["kind"] in WORKLOADS):
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        for c in containers(doc, init=False):
            if c["name"] not in ("gateway", "feature", "model"):
                continue
            e = env(c)
            secret = _secret_mounted_at(doc, c, "/etc/rtvol/tls")
            served.setdefault(component, secret)
            assert secret == served[component], (component, c["name"])  # the sidecar: the pod's
            assert (e["RTVOL_TLS_CERT"], e["RTVOL_TLS_KEY"], e["RTVOL_TLS_CA"]) == (
                "/etc/rtvol/tls/tls.crt", "/etc/rtvol/tls/tls.key", "/etc/rtvol/tls/ca.crt")
            if c["name"] == "gateway":
                assert "RTVOL_TLS_CLIENT_CA" not in e
                assert all(c[p]["httpGet"]["scheme"] == "HTTPS" for p in ("startupProbe", "livenessProbe",
                                                                         "readinessProbe"))
                assert e["RTVOL_REDIS_URL"].startswith("rediss://rtvol-gateway@")
                # its Service, or each replica's pod through the headless Service (checked below)
                assert all(re.fullmatch(rf"{RELEASE}-feature(-\d+\.{RELEASE}-feature-replicas)?", _host(t))
                           for t in e["RTVOL_FEATURE_URL"].split(","))
            else:
                assert e["RTVOL_TLS_CLIENT_CA"] == "/etc/rtvol/tls/ca.crt"
                health = int(e["RTVOL_HEALTH_PORT"])
                assert health not in (int(e["RTVOL_PORT"]), int(e["RTVOL_METRICS_PORT"]))
                assert all(c[p]["grpc"]["port"] == health for p in ("startupProbe", "livenessProbe",
                                                                    "readinessProbe"))
            if c["name"] == "feature":
                assert e["RTVOL_REDIS_URL"].startswith("rediss://rtvol-feature@")
    own_model = [d for d in kinds(tls_docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-model"]
    expected = {"feature", "gateway", "redis", *(["model"] if own_model else [])}
    assert set(served) == expected - {"redis"} and "redis" in {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in tls_docs if d["kind"] in WORKLOADS}
    redis = find(tls_docs, "StatefulSet", "redis")
    r = container(redis, "redis")
    served["redis"] = _secret_mounted_at(redis, r, "/etc/rtvol/tls")
    args = r["args"]
    assert args[args.index("--port") + 1] == "0" and args[args.index("--tls-port") + 1] == "6379"
    assert args[args.index("--tls-auth-clients") + 1] == "yes"
    assert args[args.index("--protected-mode") + 1] == "yes" and "--aclfile" in args
    assert " --tls --cert /etc/rtvol/tls/tls.crt" in r["readinessProbe"]["exec"]["command"][2]
    if tls_variant == "existing secrets":
        assert served == {c: f"{c}-cert" for c in expected}
        assert not kinds(tls_docs, "Certificate")
    else:  # cert-manager issues exactly the Secrets mounted (and one for feeders)
        certificates = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]
                        for d in kinds(tls_docs, "Certificate")}
        assert set(certificates) == expected | {"feeder"}
        assert {c: spec["secretName"] for c, spec in certificates.items() if c != "feeder"} == served
        assert all(spec["issuerRef"] == ISSUER for spec in certificates.values())
        assert certificates["feeder"]["usages"] == ["digital signature", "client auth"]
        assert certificates["gateway"]["dnsNames"][-1] == "vol.example.com"  # as engines dial it
        for component in expected:  # the name clients dial is in the certificate
            names = certificates[component]["dnsNames"]
            assert f"{RELEASE}-{component}" in names and f"{RELEASE}-{component}.{NAMESPACE}.svc" in names
            assert "client auth" in certificates[component]["usages"]
        if any(d["metadata"]["name"] == f"{RELEASE}-feature" for d in kinds(tls_docs, "StatefulSet")):
            assert f"*.{RELEASE}-feature-replicas" in certificates["feature"]["dnsNames"]
            # each replica by the exact name the gateway dials (gRPC's name check refuses `*.` over one label)
            gateway = env(container(find(tls_docs, "Deployment", "gateway"), "gateway"))
            dialled = [t.rsplit(":", 1)[0] for t in gateway["RTVOL_FEATURE_URL"].split(",")]
            assert len(dialled) > 1 and set(dialled) <= set(certificates["feature"]["dnsNames"])
    # the plaintext health port is for the kubelet only: no pod may reach it
    for component in ("feature", *(["model"] if own_model else [])):
        workload = next(d for d in tls_docs if d["kind"] in WORKLOADS and d["metadata"]["name"]
                        == f"{RELEASE}-{component}")
        health = int(env(container(workload, component))["RTVOL_HEALTH_PORT"])
        assert health not in {port for port, _ in ingress(tls_docs, component)}
    # Prometheus scrapes HTTPS, verifying against the CA of the Secret the component serves
    for sm in kinds(tls_docs, "ServiceMonitor"):
        component = sm["metadata"]["labels"]["app.kubernetes.io/component"]
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint["scheme"] == "https"
            assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": served[component], "key": "ca.crt"}
            assert endpoint["tlsConfig"]["serverName"] == f"{RELEASE}-{component}"


def test_tls_refuses_tritonserver() -> None:
    """Triton has no HTTPS for its HTTP and metrics ports: TLS on every listener cannot hold."""
    with pytest.raises(Exception, match=r"tls\.enabled needs model\.server rtvol"):
        render(profile_values("default", tls=TLS["existing secrets"], model={"server": "tritonserver"}))


@pytest.mark.parametrize("profile", PROFILES)
def test_without_tls_nothing_asks_for_certificates(profile: str) -> None:
    docs = profile_manifests(profile)
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        for c in containers(doc):
            assert not {k for k in env(c) if k.startswith("RTVOL_TLS_") or k == "RTVOL_HEALTH_PORT"}
            assert "/etc/rtvol/tls" not in {m["mountPath"] for m in c["volumeMounts"]}
            assert not any(a.startswith("--tls") for a in c.get("args", []))
    assert not kinds(docs, "Certificate")


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_tls_manifests_match_kubernetes_schemas_strictly(tls_docs: list[Doc], which: str) -> None:
    version = supported_versions()[0 if which == "oldest" else 1]
    for doc in tls_docs:
        if doc["kind"] not in CRD_KINDS:
            kv.validate(doc, version, strict=True)


def test_tls_values_pass_lint_and_schema(tls_profile: str, tls_variant: str) -> None:
    values = profile_values(tls_profile, tls=TLS[tls_variant])
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


# ---------------------------------------------------------------- Kubernetes schemas
