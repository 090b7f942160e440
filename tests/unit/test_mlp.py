"""The MLP member: its numpy form equals the torch network it was trained as, its ONNX
nodes in the ensemble graph equal the numpy form on ONNX Runtime and the torch backend,
and training is seeded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from rtvol.features.aggregates import aggregates
from rtvol.services.model.backends.torch_onnx import TorchGraph
from rtvol.training import baselines, dataset, ensemble, export, mlp, train, trees_onnx
from rtvol.training.cnn import INPUT


@pytest.fixture(scope="module")
def parts(tiny_data: Path) -> dict[str, dataset.Dataset]:
    return train.split(dataset.load(tiny_data, progress=False), train.TrainConfig())


def _random_net(seed: int) -> mlp.AggregateNet:
    torch.manual_seed(seed)
    net = mlp.AggregateNet()
    with torch.no_grad():
        net.mean.normal_(0, 1)
        net.std.uniform_(0.5, 2)
    return net.double().eval()  # float64 all through, as the numpy member


def test_numpy_member_equals_the_torch_network(parts: dict[str, dataset.Dataset]) -> None:
    net = _random_net(0)
    x = mlp.inputs(aggregates(parts["test"].windows))
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = mlp.Mlp.from_net(net).log_predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.ptp(got - x[:, mlp.BASE]) > 0.01  # the network does contribute (0.06 here)


def test_save_and_load_give_the_same_member(tmp_path: Path,
                                            parts: dict[str, dataset.Dataset]) -> None:
    member = mlp.Mlp.from_net(_random_net(1))
    member.save(tmp_path / mlp.MLP_FILE)
    assert mlp.load(tmp_path) is not None and mlp.load(tmp_path / "elsewhere") is None
    windows = parts["test"].windows
    np.testing.assert_array_equal(mlp.load(tmp_path).predict(windows),  # type: ignore[union-attr]
                                  member.predict(windows))


def test_mlp_nodes_equal_numpy_on_onnxruntime_and_torch(parts: dict[str, dataset.Dataset]) -> None:
    member = mlp.Mlp.from_net(_random_net(2))
    g = trees_onnx.GraphBuilder("m")
    aggs = ensemble.add_aggregates(g, g.op("Cast", INPUT, to=TensorProto.DOUBLE))
    ensemble.add_mlp(g, aggs, member, weight=0.3)
    g.nodes[-1].output[0] = "rv"
    graph = helper.make_graph(
        g.nodes, "mlp", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, 50, 12])],
        [helper.make_tensor_value_info("rv", TensorProto.FLOAT, [None, 1])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", export.OPSET)],
                              ir_version=10)
    onnx.checker.check_model(model)
    windows = parts["test"].windows
    want = 0.3 * member.predict(windows)
    got = export.run(model.SerializeToString(), windows)["rv"][:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with torch.no_grad():
        (got_torch,) = TorchGraph(model)(torch.from_numpy(windows))
    np.testing.assert_allclose(got_torch.numpy()[:, 0], want, rtol=1e-6)


def test_training_is_seeded_and_stops_on_the_stop_part(parts: dict[str, dataset.Dataset]) -> None:
    torch.set_num_threads(1)
    cfg = train.TrainConfig(epochs=3, seed=5)
    first, history = mlp.train(parts["train"], parts["stop"], cfg, progress=False)
    again, _ = mlp.train(parts["train"], parts["stop"], cfg, progress=False)
    other, _ = mlp.train(parts["train"], parts["stop"], replace(cfg, seed=6), progress=False)
    for a, b in zip(first.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.weights[0], other.weights[0])
    assert len(history) == 3
    stop = parts["stop"]
    best = min(h["val_rmspe"] for h in history)
    # the kept epoch is the best one on the stop part (float32 training, float64 member)
    assert abs(baselines.rmspe(stop.target, first.predict(stop.windows)) - best) < 1e-5

