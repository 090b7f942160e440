"""The chart as `podman kube play` runs it (tests/helpers/kubeplay.py): fast, no podman needed,
so a chart change that the podman end-to-end test could not play fails `make test`."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from rtvol import auth

pytest.importorskip("helm_python", reason="needs the deploy extra: pip install -e .[deploy]")
from helpers import chart, kubeplay

PUBLISH = {("rtvol-gateway", "http"): 18080, ("rtvol-feature", "grpc"): 18081}


def played(**overrides: Any) -> tuple[list[kubeplay.Doc], list[str]]:
    return kubeplay.to_pods(chart.manifests(chart.deep_merge(kubeplay.podman_values(), overrides)), PUBLISH)


def test_cpu_chart_becomes_one_pod_per_service() -> None:
    docs, dropped = played()
    pods = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Pod"}
    assert set(pods) == {"rtvol-feature", "rtvol-gateway", "rtvol-redis"}
    assert {d["kind"] for d in docs} <= {"Pod", "PersistentVolumeClaim", "ConfigMap", "Secret"}
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


def test_the_secrets_the_chart_mounts_are_played_first_and_hold_every_key() -> None:
    creds = kubeplay.Credentials()
    docs, _ = kubeplay.to_pods(chart.manifests(kubeplay.podman_values()), PUBLISH, creds)
    kinds = [d["kind"] for d in docs]
    assert kinds.index("Pod") > max(i for i, k in enumerate(kinds) if k == "Secret")  # podman plays in order
    data = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
            for d in docs if d["kind"] == "Secret"}
    mounted = 0
    for pod in (d for d in docs if d["kind"] == "Pod"):
        for v in (v for v in pod["spec"]["volumes"] if "secret" in v):
            assert v["secret"]["defaultMode"] == 0o444  # podman gives the files no fsGroup
            keys = [i["key"] for i in v["secret"].get("items", [])] or list(data[v["secret"]["secretName"]])
            assert set(keys) <= set(data[v["secret"]["secretName"]]), (pod["metadata"]["name"], v)
            mounted += 1
    assert mounted >= 4  # auth in both pods, a Redis password each, Redis's users
    keys = auth.parse(data[kubeplay.AUTH_SECRET]["api-keys"])
    given = {"engine": creds.engine, "feeder": creds.feeder, "gateway": creds.gateway}
    roles = {name: keys[auth.hash_key(key)].role for name, key in given.items()}
    assert roles == {"engine": auth.ENGINE, "feeder": auth.FEEDER, "gateway": auth.SERVICE}
    assert data[kubeplay.AUTH_SECRET]["gateway-key"] == creds.gateway
    assert data[kubeplay.REDIS_SECRET] == {"feature-password": creds.redis["feature"],
                                           "gateway-password": creds.redis["gateway"]}
