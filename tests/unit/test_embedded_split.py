"""`rtvol serve embedded` splits its arguments into the feature service's, the gateway's and,
when asked for, the model sidecar's (tier 1's models in the process)."""

from __future__ import annotations

from rtvol.services.embedded import split


def test_feature_flags_alone() -> None:
    assert split(["--stocks", "8"]) == (["--stocks", "8"], [], None)


def test_feature_and_gateway_flags() -> None:
    assert split(["--stocks", "8", "--gateway", "--port", "1"]) == (["--stocks", "8"], ["--port", "1"], None)


def test_a_model_section_after_the_gateway_loads_the_models_in_process() -> None:
    args = ["--stocks", "8", "--gateway", "--model-url", "", "--model", "--backend", "onnx"]
    assert split(args) == (["--stocks", "8"], ["--model-url", ""], ["--backend", "onnx"])


def test_an_empty_model_section_is_the_sidecar_defaults() -> None:
    assert split(["--gateway", "--model"]) == ([], [], [])
