"""The chart as `podman kube play` runs it (tests/helpers/kubeplay.py): fast, no podman needed,
so a chart change that the podman end-to-end test could not play fails `make test`."""

from __future__ import annotations

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
    # Redis's ACL file is written by an init container that podman keeps (its removal races)
    assert [c["name"] for c in pods["rtvol-redis"]["initContainers"]] == ["acl"]
    assert {d["metadata"]["name"]: d["metadata"].get("annotations") for d in docs if d["kind"] == "Pod"} == {
        "rtvol-redis": kubeplay.INIT_CONTAINERS, "rtvol-feature": None, "rtvol-gateway": None}


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


def test_each_secret_volume_becomes_a_config_map_of_its_own_files() -> None:
    """podman 4.3 cannot mount Secrets: each Secret volume is played as a ConfigMap of this pod
    and volume, holding the files the volume maps, made from the test's credentials."""
    creds = kubeplay.Credentials()
    docs, _ = kubeplay.to_pods(chart.manifests(kubeplay.podman_values()), PUBLISH, creds)
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    pods = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Pod"}
    files = {}
    for name, pod in pods.items():
        before = [d["metadata"]["name"] for d in docs[:docs.index(pod)] if d["kind"] == "ConfigMap"]
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            for m in c["volumeMounts"]:
                volume = next(v for v in pod["spec"]["volumes"] if v["name"] == m["name"])
                assert "secret" not in volume
                if "configMap" in volume:
                    source = volume["configMap"]["name"]
                    assert source == f"{name}-{m['name']}" and source in before  # its own, played first
                    assert volume["configMap"]["defaultMode"] == 0o444  # podman gives no fsGroup
                    for path, text in config_maps[source].items():
                        files[f"{name}:{m['mountPath']}/{path}"] = text
    keys = auth.parse(files["rtvol-feature:/etc/rtvol/auth/api-keys"])
    given = {"engine": creds.engine, "feeder": creds.feeder, "gateway": creds.gateway}
    assert {name: keys[auth.hash_key(key)].role for name, key in given.items()} == {
        "engine": auth.ENGINE, "feeder": auth.FEEDER, "gateway": auth.SERVICE}
    assert files["rtvol-gateway:/etc/rtvol/auth/gateway-key"] == creds.gateway
    assert "rtvol-feature:/etc/rtvol/auth/gateway-key" not in files  # only the gateway holds its key
    for user in ("feature", "gateway"):  # each service its own Redis password, under the same path
        assert files[f"rtvol-{user}:/etc/rtvol/redis/password"] == creds.redis[user]
        assert files[f"rtvol-redis:/etc/redis-users/{user}-password"] == creds.redis[user]


def test_a_secret_the_test_does_not_make_is_refused() -> None:
    with pytest.raises(ValueError, match="no Secret keys-of-mine"):
        played(auth={"existingSecret": "keys-of-mine"})
