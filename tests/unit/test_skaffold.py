"""skaffold.yaml: every profile builds the three images and deploys charts/rtvol with its values file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.chart import CHART, RELEASE, Doc

ROOT = Path(__file__).resolve().parents[2]


def apply_patches(config: Doc, patches: list[Doc]) -> Doc:
    """The JSON-patch subset skaffold profiles use here: add, replace and remove."""
    config = json.loads(json.dumps(config))
    for patch in patches:
        *parents, last = patch["path"].strip("/").split("/")
        node: Any = config
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        index: Any = int(last) if isinstance(node, list) else last
        if patch["op"] == "remove":
            del node[index]
        else:
            assert patch["op"] in ("add", "replace"), patch
            assert patch["op"] == "add" or (index in node if isinstance(node, dict) else index < len(node))
            node[index] = patch["value"]
    return config


@pytest.mark.parametrize(("profile", "variant", "values_file"), [
    (None, "cpu", None), ("local-cpu", "cpu", "values-cpu.yaml"),
    ("local-gpu", "gpu", "values-gpu.yaml"), ("cloud", "gpu", "values-cloud.yaml")])
def test_skaffold_profiles_point_at_the_chart_and_images(
        profile: str | None, variant: str, values_file: str | None) -> None:
    base = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    profiles = {p["name"]: p for p in base.pop("profiles")}
    config = apply_patches(base, profiles[profile]["patches"]) if profile else base
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {"rtvol-feature", "rtvol-gateway", "rtvol-model"}
    for artifact in artifacts.values():
        assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    assert artifacts["rtvol-model"]["docker"]["buildArgs"]["VARIANT"] == variant
    (release,) = [r for r in config["deploy"]["helm"]["releases"] if r["name"] == "rtvol"]
    assert (ROOT / release["chartPath"]) == CHART
    assert [Path(f).name for f in release["valuesFiles"]] == ([values_file] if values_file else [])
    assert all((ROOT / f).is_file() for f in release["valuesFiles"])
    # every image is handed to the chart under the keys values.yaml defines
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name in artifacts:
        component = name.removeprefix("rtvol-")
        var = name.replace("-", "_")
        assert release["setValueTemplates"][f"{component}.image.repository"] == f"{{{{.IMAGE_REPO_{var}}}}}"
        assert release["setValueTemplates"][f"{component}.image.tag"] == f"{{{{.IMAGE_TAG_{var}}}}}"
        assert {"repository", "tag"} <= set(chart_values[component]["image"])
    forwarded = {(p["resourceName"], p["port"]) for p in config["portForward"]}
    assert {(f"{RELEASE}-gateway", 8080), (f"{RELEASE}-gateway", 50051)} <= forwarded
    assert any("grafana" in name for name, _ in forwarded)
