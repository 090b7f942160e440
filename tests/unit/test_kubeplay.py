"""The chart as `podman kube play` runs it (tests/helpers/kubeplay.py): fast, no podman needed,
so a chart change that the podman end-to-end test could not play fails `make test`."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("helm_python", reason="needs the deploy extra: pip install -e .[deploy]")
from helpers import chart, kubeplay

PUBLISH = {("rtvol-gateway", "http"): 18080, ("rtvol-feature", "grpc"): 18081}


def played(**overrides: Any) -> tuple[list[kubeplay.Doc], list[str]]:
    return kubeplay.to_pods(chart.manifests(chart.deep_merge(kubeplay.podman_values(), overrides)), PUBLISH)


def test_cpu_chart_becomes_one_pod_per_service() -> None:
    docs, dropped = played()
    pods = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Pod"}
    assert set(pods) == {"rtvol-feature", "rtvol-gateway", "rtvol-redis"}
    assert {d["kind"] for d in docs} <= {"Pod", "PersistentVolumeClaim", "ConfigMap"}
    assert {k.split("/")[0] for k in dropped} >= {"Service", "NetworkPolicy", "ServiceAccount"}
    # the sidecar shares the gateway's pod, and the Unix socket's emptyDir
    gateway = {c["name"]: c for c in pods["rtvol-gateway"]["containers"]}
    assert set(gateway) == {"gateway", "model"}
    for c in gateway.values():
        assert {"name": "rtvol-gateway-model-socket", "mountPath": "/var/run/rtvol"} in c["volumeMounts"]
    # every pod its own emptyDirs (podman names the volume after them)
    for name, p in pods.items():
        for v in p["volumes"]:
            assert "emptyDir" not in v or v["name"].startswith(f"{name}-"), (name, v)
        mounts = {m["name"] for c in p["containers"] for m in c["volumeMounts"]}
        assert mounts <= {v["name"] for v in p["volumes"]}, name
    claim = next(v for v in pods["rtvol-gateway"]["volumes"] if v["name"] == "model-repository")
    assert claim["persistentVolumeClaim"]["claimName"] == kubeplay.MODELS_VOLUME
    images = {c["image"]: c["imagePullPolicy"] for p in pods.values() for c in p["containers"]}
    assert set(images.values()) == {"Never"} and all(i.startswith("localhost/rtvol-") for i in images)
    # only the asked-for ports, on loopback (podman would publish every containerPort on 0.0.0.0)
    published = [(name, port["name"], port["hostPort"], port["hostIP"]) for name, p in pods.items()
                 for c in p["containers"] for port in c["ports"]]
    assert sorted(published) == [("rtvol-feature", "grpc", 18081, "127.0.0.1"),
                                 ("rtvol-gateway", "http", 18080, "127.0.0.1")]
    assert not [c["name"] for p in pods.values() for c in p["containers"] if set(c) & set(kubeplay.PROBES)]


@pytest.mark.parametrize("overrides, reason", [
    ({"gateway": {"replicas": 2}}, "replicas"),
    ({"redis": {"persistence": {"enabled": True}}}, "volumeClaimTemplates"),
])
def test_refuses_what_podman_cannot_name_or_store(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        played(**overrides)


def test_refuses_to_publish_a_port_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="no such"):
        kubeplay.to_pods(chart.manifests(kubeplay.podman_values()), {("rtvol-gateway", "no-such-port"): 1})
