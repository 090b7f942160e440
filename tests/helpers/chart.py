"""Render charts/rtvol with the real Helm engine (helm-python-sdk embeds Helm v4, no binary).

Shared by the chart tests (tests/unit/test_chart*.py) and the podman end-to-end test, so both
see exactly what `helm install -f values-<profile>.yaml` would apply; also the values files, the
TLS variants and small queries over rendered documents the chart tests share.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "rtvol"
RELEASE, NAMESPACE = "rtvol", "rtvol"

Doc = dict[str, Any]

PROFILES = ("default", "cpu", "gpu", "cloud", "gpu+triton")  # values-<a>.yaml, then values-<b>.yaml
WORKLOADS = {"Deployment", "StatefulSet"}
# Custom resources of the Prometheus operator and cert-manager: kubernetes-validate ships only
# the core API schemas, and their CRD schemas are not vendored here, so these kinds are skipped
# in the strict schema checks; the chart tests check their structure instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate"}

ISSUER = {"name": "rtvol-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
TLS = {"cert-manager": {"enabled": True, "certManager": {"enabled": True, "issuerRef": ISSUER,
                                                        "gatewayDnsNames": ["vol.example.com"]}},
       "existing secrets": {"enabled": True, "existingSecret": {
           c: f"{c}-cert" for c in ("feature", "gateway", "model", "redis")}}}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """What `helm -f a.yaml -f b.yaml` does: maps merge, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def profile_values(profile: str, **overrides: Any) -> dict[str, Any]:
    """The values of ``values-<profile>.yaml``; "gpu+triton" layers values-triton.yaml over
    values-gpu.yaml as `helm -f values-gpu.yaml -f values-triton.yaml` does."""
    values: dict[str, Any] = {}
    for layer in profile.split("+"):
        if layer != "default":
            values = deep_merge(values, yaml.safe_load((CHART / f"values-{layer}.yaml").read_text()) or {})
    return deep_merge(values, overrides)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text (the Helm engine also validates values.schema.json)."""
    import helm_python as helm  # the deploy extra: only the tests that render need it

    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(values: dict[str, Any]) -> list[Doc]:
    docs: list[Doc] = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


# tritonserver has no HTTPS for its HTTP and metrics ports: the chart refuses it with TLS
# (test_tls_refuses_tritonserver), so TLS renders cover every other values file
TLS_PROFILES = tuple(p for p in PROFILES
                     if profile_values(p).get("model", {}).get("server") != "tritonserver")

_rendered: dict[tuple[str, str | None], list[Doc]] = {}


def profile_manifests(profile: str, tls_variant: str | None = None) -> list[Doc]:
    """A values file's documents (with one of the TLS variants), rendered once per process:
    many tests read the same renders."""
    key = (profile, tls_variant)
    if key not in _rendered:
        overrides = {"tls": TLS[tls_variant]} if tls_variant else {}
        _rendered[key] = manifests(profile_values(profile, **overrides))
    return _rendered[key]


def find(docs: list[Doc], kind: str, component: str) -> Doc:
    hits = [d for d in docs if d["kind"] == kind
            and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(hits) == 1, f"expected one {kind} for {component}, got {len(hits)}"
    return hits[0]


def kinds(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def containers(doc: Doc, init: bool = True) -> Iterator[Doc]:
    spec = pod_spec(doc)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def container(doc: Doc, name: str) -> Doc:
    return next(c for c in containers(doc) if c["name"] == name)


def env(c: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def gpu_limit(c: Doc) -> int:
    return int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def ingress(docs: list[Doc], component: str) -> list[tuple[int, list[Doc] | None]]:
    """(port, peers) for every port a component's NetworkPolicy admits; None: any peer."""
    policy = find(docs, "NetworkPolicy", component)
    return [(p["port"], rule.get("from")) for rule in policy["spec"]["ingress"] for p in rule["ports"]]


def supported_versions() -> tuple[str, str]:
    """Oldest from Chart.yaml's kubeVersion, newest that kubernetes-validate knows."""
    import kubernetes_validate.utils as kv  # the deploy extra

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    match = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", chart["kubeVersion"])
    assert match, chart["kubeVersion"]
    return match.group(1), str(kv.latest_version())
