"""The chart's rendered manifests as `podman kube play` (podman 4.3, Debian bookworm) runs them.

podman plays Pods, Deployments, PersistentVolumeClaims and ConfigMaps; it has no Services,
StatefulSets, NetworkPolicies, autoscalers, disruption budgets or Prometheus-operator kinds.
Each workload becomes one Pod named after its Service: podman's DNS (aardvark-dns on the
kube network) answers pod names, so `rtvol-redis:6379` in the gateway's environment reaches
the Redis pod as it would through the Service. That needs one pod per Service, which the
chart's CPU values give (single replicas). Everything else is dropped and listed.

Unchanged: images, commands, environment, volumes (emptyDir, persistentVolumeClaim = a
podman named volume) and security contexts. Changed, because podman 4.3 does otherwise:
- ports: podman publishes every containerPort on 0.0.0.0 of the host; only the ports asked
  for stay, published on 127.0.0.1 (pods reach each other over the pod network regardless);
- emptyDirs are renamed per pod (podman would share one volume per name across pods);
- probes are removed: podman runs no readiness or grpc probes and turns the other liveness
  ones into broken healthchecks (`curl http://localhost:0/livez` for a named port,
  `nc -z "" 0` for tcpSocket; no curl or nc in the images) that it schedules with systemd
  timers (none in this VM). The test polls /readyz itself;
- Secret volumes become ConfigMap volumes, one ConfigMap per pod and volume holding exactly
  the files the volume maps (world-readable: podman gives them no fsGroup). podman 4.3.1 plays
  Secrets but cannot mount them: a secret volume without `optional` crashes it (podman issue
  16636), and with `optional: false` the files hold the base64 text and ignore `items`.
  ConfigMap volumes are named volumes called after the ConfigMap, shared by every pod that
  mounts it, hence one per pod and volume. The contents are the chart's Secrets (API keys,
  Redis passwords) as you create them before install, made from fresh ``Credentials``;
- pods with init containers (Redis's ACL file) keep them after they exit (INIT_CONTAINERS).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from helpers import chart

from rtvol import auth

Doc = dict[str, Any]
WORKLOADS = {"Deployment", "StatefulSet"}
PLAYED_AS_IS = {"PersistentVolumeClaim", "ConfigMap"}
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
MODELS_VOLUME = "rtvol-e2e-models"  # the model repository PVC's claimName = a podman named volume
AUTH_SECRET, REDIS_SECRET = f"{chart.RELEASE}-auth", f"{chart.RELEASE}-redis"  # the chart's default names
READABLE = 0o444
# podman's "once" init containers (kube play's default) are removed after they exit, and 4.3.1
# can try that while one still runs, failing the play (podman issue 18477); "always" ones are kept.
INIT_CONTAINERS = {"io.podman.annotations.init.container.type": "always"}


def _password() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class Credentials:
    """Fresh keys for one run: an engine's and a feeder's (the test's), the gateway's service
    key, and the Redis users' passwords (docs/DEPLOY.md makes the same for `helm install`)."""

    engine: str = field(default_factory=auth.new_key)
    feeder: str = field(default_factory=auth.new_key)
    gateway: str = field(default_factory=auth.new_key)
    redis: dict[str, str] = field(default_factory=lambda: {"feature": _password(), "gateway": _password()})

    def api_keys(self) -> str:
        """The api-keys file: 'NAME ROLE sha256:HEX' lines."""
        return "".join(f"{name} {role} {auth.hash_key(key)}\n" for name, role, key in (
            ("e2e-engine", auth.ENGINE, self.engine), ("e2e-feeder", auth.FEEDER, self.feeder),
            ("gateway", auth.SERVICE, self.gateway)))


def secret_data(creds: Credentials) -> dict[str, dict[str, str]]:
    """The Secrets the chart mounts (auth and redis) by name: key -> value."""
    return {AUTH_SECRET: {"api-keys": creds.api_keys(), "gateway-key": creds.gateway},
            REDIS_SECRET: {f"{user}-password": pw for user, pw in creds.redis.items()}}


def podman_values() -> dict[str, Any]:
    """values-cpu.yaml plus what a registry-less podman host needs: the images
    tests/e2e/podman/build.sh made (never pulled), Redis from its Debian image, the model
    repository from a volume filled beforehand (source pvc) instead of an init container."""
    local = {"pullPolicy": "Never"}
    return chart.profile_values(
        "cpu",
        imageRegistry="localhost/",
        feature={"image": local},
        gateway={"image": local},
        model={"image": {**local, "tag": "0.1.0-cpu"},
               "repository": {"source": "pvc", "pvc": {"existingClaim": MODELS_VOLUME}}},
        redis={"image": {**local, "repository": "rtvol-redis", "tag": "bookworm"}},
    )


def to_pods(docs: list[Doc], publish: dict[tuple[str, str], int],
            creds: Credentials | None = None) -> tuple[list[Doc], list[str]]:
    """(playable documents, "Kind/name" of each dropped one): each pod after the ConfigMaps
    that stand in for its Secret volumes, filled from ``creds`` (fresh ones when None).

    ``publish`` maps (pod name, container port name) to a loopback host port.
    """
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    secrets_by_name = secret_data(creds or Credentials())
    played: list[Doc] = []
    dropped: list[str] = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in WORKLOADS:
            pod, config_maps = _pod(doc, services, publish, secrets_by_name)
            played.extend([*config_maps, pod])
        elif kind in PLAYED_AS_IS:
            played.append(doc)
        else:
            dropped.append(f"{kind}/{name}")
    missing = set(publish) - {(p["metadata"]["name"], port["name"]) for p in played if p["kind"] == "Pod"
                              for c in p["spec"]["containers"] for port in c["ports"]}
    if missing:
        raise ValueError(f"no such (pod, port) to publish: {sorted(missing)}")
    return played, dropped


def _pod(doc: Doc, services: set[str], publish: dict[tuple[str, str], int],
         secrets_by_name: dict[str, dict[str, str]]) -> tuple[Doc, list[Doc]]:
    name, spec = doc["metadata"]["name"], doc["spec"]
    where = f"{doc['kind']}/{name}"
    if spec.get("replicas", 1) != 1:
        raise ValueError(f"{where}: {spec['replicas']} replicas; one pod per Service is what DNS can name")
    if name not in services:
        raise ValueError(f"{where}: no Service of the same name, so no DNS name for its pod")
    if spec.get("volumeClaimTemplates"):
        raise ValueError(f"{where}: volumeClaimTemplates have no podman equivalent (disable persistence)")
    pod_spec = _own_empty_dirs(dict(spec["template"]["spec"]), name)
    config_maps = [_config_map(name, v, secrets_by_name) for v in pod_spec["volumes"] if "secret" in v]
    pod_spec["volumes"] = [
        {"name": v["name"], "configMap": {"name": f"{name}-{v['name']}", "defaultMode": READABLE}}
        if "secret" in v else v for v in pod_spec["volumes"]]
    pod_spec["containers"] = [_container(c, name, publish) for c in pod_spec["containers"]]
    metadata = {"name": name, "labels": spec["template"]["metadata"].get("labels", {})}
    if pod_spec.get("initContainers"):
        metadata["annotations"] = INIT_CONTAINERS
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}, config_maps


def _config_map(pod: str, volume: Doc, secrets_by_name: dict[str, dict[str, str]]) -> Doc:
    """The files a Secret volume of ``pod`` shows (its items, else every key), as a ConfigMap."""
    secret = volume["secret"]
    if secret["secretName"] not in secrets_by_name:
        raise ValueError(f"{pod}: no Secret {secret['secretName']} to mount (volume {volume['name']})")
    data = secrets_by_name[secret["secretName"]]
    items = secret.get("items") or [{"key": k, "path": k} for k in data]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{pod}-{volume['name']}"},
            "data": {item["path"]: data[item["key"]] for item in items}}


def config_maps(docs: list[Doc]) -> list[str]:
    """Names of the played ConfigMaps: podman keeps a named volume for each after `kube down`."""
    return [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]


def _container(container: Doc, pod: str, publish: dict[tuple[str, str], int]) -> Doc:
    out = {k: v for k, v in container.items() if k not in PROBES}
    out["ports"] = [{**port, "hostPort": publish[(pod, port["name"])], "hostIP": "127.0.0.1"}
                    for port in container.get("ports", []) if (pod, port["name"]) in publish]
    return out


def _own_empty_dirs(pod_spec: Doc, pod: str) -> Doc:
    """Prefix each emptyDir's name with the pod's, as its mounts: podman 4.3 makes an emptyDir
    a named volume called after the volume, which every pod using that name shares (/tmp)."""
    empty = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}

    def own(item: Doc) -> Doc:
        return {**item, "name": f"{pod}-{item['name']}"} if item["name"] in empty else item

    pod_spec["volumes"] = [own(v) for v in pod_spec.get("volumes", [])]
    for key in ("initContainers", "containers"):
        if key in pod_spec:
            pod_spec[key] = [{**c, "volumeMounts": [own(m) for m in c.get("volumeMounts", [])]}
                             for c in pod_spec[key]]
    return pod_spec

