"""The containers end to end with podman: the three images built offline from the Dockerfiles
(tests/e2e/podman/build.sh), the chart rendered with values-cpu.yaml, `podman kube play`,
market data fed to the feature service's published port, Predict answered through the
gateway's published port by the model sidecar in the gateway's pod (tier 1, Unix socket)
and checked against the same model run here on the windows the containers stored.

Minutes (the image builds; about 1.5 with every image cached), so deselected by default:
`make podman-e2e` runs it (root, podman + runc). Its last result is in docs/DEPLOY.md.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from helpers import podman as pm
from helpers.store import stored_windows

from rtvol import repository
from rtvol.loadtest import feed
from rtvol.localproc import http_ready, wait_until

pytestmark = [pytest.mark.podman, pytest.mark.timeout(3600)]
pytest.importorskip("helm_python", reason="needs the deploy extra: pip install -e .[deploy]")
from helpers import chart, kubeplay  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUILD_SH = ROOT / "tests" / "e2e" / "podman" / "build.sh"
WORK = ROOT / "build" / "podman"
BUILD_S, READY_S, TIER1_S = 3000, 180, 180


def pod_spec(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pods = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Pod"}
    spec: dict[str, Any] = pods[name]
    return spec


def container_names(docs: list[dict[str, Any]]) -> list[str]:
    """podman names a played pod's containers <pod>-<container>."""
    return [f"{d['metadata']['name']}-{c['name']}" for d in docs if d["kind"] == "Pod"
            for c in d["spec"]["containers"]]


@pytest.fixture(scope="module")
def images() -> Iterator[float]:
    """Builds (or finds cached) every image; yields the build's wall time in seconds."""
    reason = pm.missing()
    if reason:
        pytest.skip(reason)
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "build.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run([str(BUILD_SH)], stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_S,
                              env=pm.env())
    assert done.returncode == 0, f"{BUILD_SH} failed; last lines of {log}:\n" + "\n".join(
        log.read_text().splitlines()[-30:])
    yield time.monotonic() - started


def predict(url: str, stocks: list[int], key: str) -> list[dict[str, Any]]:
    r = httpx.post(f"{url}/v1/predict", json={"stock_ids": stocks, "max_staleness_ms": 0}, timeout=10,
                   headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    signals: list[dict[str, Any]] = r.json()["signals"]
    return signals


def first_tier1(url: str, stocks: list[int], key: str, within_s: float
                ) -> tuple[list[dict[str, Any]], list[Any]]:
    """Ask until every stock is answered by tier 1 (the sidecar may still be loading when the
    gateway is ready: slower tiers answer meanwhile). Returns (answer, tiers seen before)."""
    seen: list[Any] = []
    deadline = time.monotonic() + within_s
    while True:
        signals = predict(url, stocks, key)
        tiers = sorted({s.get("tier", s.get("error")) for s in signals}, key=str)
        if tiers == [1] or time.monotonic() > deadline:
            return signals, seen
        if not seen or seen[-1] != tiers:
            seen.append(tiers)
        time.sleep(0.5)


def locked_down(name: str) -> dict[str, Any]:
    """uid/gid of the container's processes and whether its root filesystem refuses a write."""
    ids = [pm.podman("exec", name, "id", flag).stdout.strip() for flag in ("-u", "-g")]
    write = pm.podman("exec", name, "touch", "/rootfs-write-probe", check=False)
    return {"uid": ids[0], "gid": ids[1], "root_read_only": "Read-only file system" in write.stderr}


def check_answer(signals: list[dict[str, Any]], stocks: list[int], repo: Path, redis_url: str) -> None:
    """Tier 1 from the repository's model, and the numbers that model gives, run here on the
    host with ONNX Runtime, for the windows the containers stored."""
    model = repository.models(repo)[0]
    version = repository.resolve(repo, model)
    session = ort.InferenceSession(str(repository.version_dir(repo, model, version) / "model.onnx"))
    rv, direction, momentum = session.run(["rv", "direction", "momentum"],
                                          {"window": stored_windows(redis_url, stocks)})
    assert [s["stock_id"] for s in signals] == stocks
    for i, s in enumerate(signals):
        assert (s.get("tier"), s["model"], s["version"]) == (1, model, str(version)), s
        assert s["rv"] == pytest.approx(float(rv[i, 0]), rel=1e-5), s
        assert [s["direction"][k] for k in ("down", "flat", "up")] == pytest.approx(direction[i], abs=1e-5)
        assert s["momentum"] == pytest.approx(float(momentum[i, 0]), abs=1e-5), s
        assert not s["stale"] and s["feature_age_ms"] >= 0, s


def rest_latency_ms(url: str, stocks: list[int], key: str, n: int = 200) -> dict[str, float]:
    """Sequential Predict round trips through podman's published port (informative only)."""
    took = []
    with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": key}) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            client.post("/v1/predict", json={"stock_ids": stocks, "max_staleness_ms": 0}).raise_for_status()
            took.append((time.perf_counter() - t0) * 1000)
    p50, p99 = np.percentile(took, [50, 99])
    return {"n": n, "p50": round(float(p50), 2), "p99": round(float(p99), 2)}


def test_kube_play_the_cpu_chart_and_predict(images: float, tiny_data: Path, tiny_repo: Path,
                                            tmp_path: Path, free_port: Callable[[], int]) -> None:
    http, feature_grpc, redis = free_port(), free_port(), free_port()
    publish = {("rtvol-gateway", "http"): http, ("rtvol-feature", "grpc"): feature_grpc,
               ("rtvol-redis", "redis"): redis}
    creds = kubeplay.Credentials()  # the chart's Secrets' contents (API keys, Redis users)
    docs, dropped = kubeplay.to_pods(chart.manifests(kubeplay.podman_values()), publish, creds)
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    names = container_names(docs)
    url = f"http://127.0.0.1:{http}"
    pm.podman("kube", "down", str(kube), check=False, timeout_s=120)  # a run killed before its teardown
    leftovers = [kubeplay.MODELS_VOLUME, *kubeplay.config_maps(docs)]  # named volumes kube down keeps
    pm.podman("volume", "rm", "--force", *leftovers, check=False)
    fs_group = pod_spec(docs, "rtvol-gateway")["securityContext"]["fsGroup"]
    pm.import_volume(kubeplay.MODELS_VOLUME, tiny_repo, fs_group)
    started = time.monotonic()
    try:
        pm.podman("kube", "play", str(kube), timeout_s=180)
        assert wait_until(http_ready(f"{url}/readyz"), READY_S, interval_s=0.5), (
            f"gateway not ready on {url} in {READY_S} s\n" + pm.logs(names))
        ready_s = time.monotonic() - started

        security = {name: locked_down(name) for name in names}
        assert all(s == {"uid": "10001", "gid": "10001", "root_read_only": True}
                   for s in security.values()), security
        socket = pm.podman("exec", "rtvol-gateway-gateway", "test", "-S", "/var/run/rtvol/model.sock",
                           check=False)
        assert socket.returncode == 0, "no sidecar socket in the gateway pod\n" + pm.logs(names)

        stocks = feed.replay(f"127.0.0.1:{feature_grpc}", tiny_data, range(0, 3), api_key=creds.feeder)
        signals, before = first_tier1(url, stocks, creds.engine, TIER1_S)
        tier1_s = time.monotonic() - started
        assert {s.get("tier") for s in signals} == {1}, (
            f"{signals} (tiers seen before: {before})\n" + pm.logs(names))
        # read as the gateway's Redis user: the default user is off
        check_answer(signals, stocks, tiny_repo,
                     f"redis://rtvol-gateway:{creds.redis['gateway']}@127.0.0.1:{redis}/0")
        latency = rest_latency_ms(url, stocks, creds.engine)
    finally:
        down = pm.podman("kube", "down", str(kube), check=False, timeout_s=120)
        pm.podman("volume", "rm", "--force", *leftovers, check=False)
    assert down.returncode == 0, down.stderr
    assert not pm.podman("pod", "ps", "-q", "--filter", "name=^rtvol-").stdout.strip()

    sizes = pm.podman("images", "--filter", "reference=localhost/rtvol-*", "--format",
                      "{{.Repository}}:{{.Tag}} {{.Size}}").stdout.splitlines()
    result = {"build_s": round(images, 1), "ready_s": round(ready_s, 1), "tier1_s": round(tier1_s, 1),
              "tiers_before_tier1": before, "rest_latency_ms": latency, "dropped": dropped,
              "security": security, "images": sizes, "predict": signals[:2]}
    (WORK / "last-result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
