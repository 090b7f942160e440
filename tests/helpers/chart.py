"""Render charts/rtvol with the real Helm engine (helm-python-sdk embeds Helm v4, no binary).

Shared by the chart tests (tests/unit/test_chart.py) and the podman end-to-end test, so both
see exactly what `helm install -f values-<profile>.yaml` would apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "rtvol"
RELEASE, NAMESPACE = "rtvol", "rtvol"

Doc = dict[str, Any]


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
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(values: dict[str, Any]) -> list[Doc]:
    docs: list[Doc] = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs
