"""ONNX export: parity with torch, dynamic batch, and refusal of a mismatching graph."""

import numpy as np
import pytest
import torch

from rtvol.training import export
from rtvol.training.cnn import INPUT, OUTPUTS, VolCNN, example_input, parameter_count


def _model(seed: int) -> VolCNN:
    torch.manual_seed(seed)
    m = VolCNN()
    m.set_normalisation(example_input(64).numpy())
    return m.eval()


def test_parity_and_dynamic_batch() -> None:
    model = _model(0)
    onnx_model = export.to_onnx(model)
    for batch in (1, 7, 300):
        x = example_input(batch).numpy()
        assert export.check_parity(onnx_model, model, x) <= export.PARITY_TOLERANCE
    rv, direction, momentum = export.onnx_session(onnx_model).run(
        list(OUTPUTS), {INPUT: example_input(5).numpy()})
    assert rv.shape == (5, 1) and direction.shape == (5, 3) and momentum.shape == (5, 1)
    assert np.all(rv > 0) and np.allclose(direction.sum(axis=1), 1, atol=1e-5)
    assert np.all(np.abs(momentum) <= 1)


def test_refuses_a_graph_that_disagrees() -> None:
    onnx_model = export.to_onnx(_model(0))
    with pytest.raises(export.ExportError, match="refusing to write"):
        export.check_parity(onnx_model, _model(1), example_input(8).numpy())


def test_size_budget() -> None:
    assert parameter_count(VolCNN()) <= 2_000_000
