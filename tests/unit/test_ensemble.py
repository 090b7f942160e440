"""The served ensemble: trees as ONNX tensor ops, weights, and parity of the one graph
with the python ensemble on every backend this machine has."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import pytest
import torch
from helpers.ensembles import TinyEnsemble, tiny_ensemble
from onnx import TensorProto, helper

from rtvol import repository
from rtvol.features.aggregates import AGGREGATE_NAMES, aggregates
from rtvol.services.model import backends
from rtvol.services.model.backends import tree_lowering
from rtvol.services.model.backends.torch_onnx import TorchGraph
from rtvol.training import baselines, dataset, ensemble, evaluate, export, train, trees_onnx
from rtvol.training.cnn import OUTPUTS
from rtvol.trees import FlatTrees


def _booster(x: np.ndarray, y: np.ndarray, rounds: int = 40) -> lgb.Booster:
    params = {**baselines.LGBM_PARAMS, "num_leaves": 15, "min_data_in_leaf": 5,
              "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=rounds)


def _one_output_model(g: trees_onnx.GraphBuilder, inp: onnx.ValueInfoProto, output: str,
                      dims: list[int | None], dtype: int = TensorProto.DOUBLE) -> onnx.ModelProto:
    """The builder's nodes as a model whose output is the last node's, named ``output``."""
    g.nodes[-1].output[0] = output
    graph = helper.make_graph(g.nodes, output, [inp],
                              [helper.make_tensor_value_info(output, dtype, dims)],
                              g.initializers)
    opsets = [helper.make_opsetid("", export.OPSET),
              helper.make_opsetid(trees_onnx.ML_DOMAIN, trees_onnx.ML_OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)  # this ONNX Runtime's


def _trees_graph(trees: FlatTrees, n_features: int) -> onnx.ModelProto:
    g = trees_onnx.GraphBuilder("t")
    trees_onnx.add_tree_ensemble(g, trees, "x")
    return _one_output_model(
        g, helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, n_features]), "y",
        [None, 1], TensorProto.FLOAT)


def _on_thresholds(trees: FlatTrees, x: np.ndarray) -> np.ndarray:
    """``x`` with one value per row set exactly on some split's threshold ('<=' goes left)."""
    internal = np.flatnonzero(trees.left != np.arange(len(trees.left)))
    pick = np.random.default_rng(1).choice(internal, size=len(x))
    out = x.copy()
    out[np.arange(len(x)), trees.feature[pick]] = trees.threshold[pick]
    return out


@pytest.fixture(scope="module")
def trees_and_data() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=len(x))
    return _booster(x, y), rng.normal(size=(500, 6))


def test_flat_trees_walk_like_lightgbm_even_on_the_thresholds(trees_and_data) -> None:  # type: ignore[no-untyped-def]
    booster, x = trees_and_data
    trees = trees_onnx.flatten(booster.dump_model())
    assert len(trees.roots) == 40 and trees.depth >= 4
    for sample in (x, _on_thresholds(trees, x)):
        np.testing.assert_allclose(trees.predict(sample), booster.predict(sample), rtol=1e-12)


def test_trees_graph_matches_lightgbm_in_onnxruntime_and_torch(trees_and_data) -> None:  # type: ignore[no-untyped-def]
    booster, x = trees_and_data
    trees = trees_onnx.flatten(booster.dump_model())
    model = _trees_graph(trees, x.shape[1])
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["TreeEnsembleRegressor"]
    session = export.onnx_session(model.SerializeToString())
    lowered = TorchGraph(model)  # the torch backend's lowering of the node
    for sample in (x, _on_thresholds(trees, x)):
        want = booster.predict(sample)  # float32 output: ~1e-7 relative; a wrong branch: ~1e-2
        got = session.run(["y"], {"x": sample})[0]
        np.testing.assert_allclose(got[:, 0], want, rtol=1e-6, atol=1e-6)
        (got_torch,) = lowered(torch.from_numpy(sample))
        np.testing.assert_allclose(got_torch.numpy()[:, 0], want, rtol=1e-6, atol=1e-6)


def test_flatten_refuses_what_it_cannot_convert() -> None:
    leaf = {"leaf_value": 1.0}
    split = {"split_feature": 0, "threshold": 0.5, "left_child": leaf, "right_child": leaf,
             "missing_type": "None"}
    with pytest.raises(trees_onnx.TreeConversionError, match="numerical"):
        trees_onnx.flatten({"tree_info": [{"tree_structure": {**split, "decision_type": "=="}}]})
    with pytest.raises(trees_onnx.TreeConversionError, match="zero as missing"):
        trees_onnx.flatten({"tree_info": [{"tree_structure": {
            **split, "decision_type": "<=", "missing_type": "Zero"}}]})
    with pytest.raises(trees_onnx.TreeConversionError, match="no trees"):
        trees_onnx.flatten({"tree_info": []})


def test_weights_recover_a_known_mix_and_stay_convex() -> None:
    rng = np.random.default_rng(2)
    a, b = np.exp(rng.normal(-6, 0.5, 2000)), np.exp(rng.normal(-6, 0.5, 2000))
    y = 0.3 * a + 0.7 * b
    w = ensemble.fit_weights(y, {"cnn": a, "lightgbm": b, "har": 2 * y.mean() - y})
    assert w["cnn"] == pytest.approx(0.3, abs=1e-9) and w["lightgbm"] == pytest.approx(0.7, abs=1e-9)
    assert w["har"] == 0.0
    np.testing.assert_allclose(ensemble.combine(w, {"cnn": a, "lightgbm": b, "har": y}), y)
    # both members twice too high: a free scale would halve them; convex weights cannot
    doubled = ensemble.fit_weights(y, {"cnn": 2 * a, "lightgbm": 2 * b})
    assert sum(doubled.values()) == pytest.approx(1.0) and min(doubled.values()) >= 0


@pytest.fixture(scope="module")
def tiny(tiny_data: Path, tiny_repo: Path) -> TinyEnsemble:
    return tiny_ensemble(tiny_data, tiny_repo)


def test_served_ensemble_equals_python_ensemble_on_every_backend(tiny: TinyEnsemble,
                                                                 tmp_path: Path) -> None:
    nodes = onnx.load_from_string(tiny.onnx).graph.node
    assert [n.op_type for n in nodes].count("TreeEnsembleRegressor") == 1
    lowered = tree_lowering.lower_tree_ensembles(list(nodes), {})
    assert sum(n.op_type == "GatherElements" for n in lowered) >= 2  # trees deeper than stumps
    repo = tmp_path / "repo"
    repository.write_version(repo, ensemble.MODEL, tiny.onnx, {}, export.SERVING)
    files = backends.ModelFiles(repository.version_dir(repo, ensemble.MODEL), "window", OUTPUTS, 1024)
    served = {"onnxruntime-cpu": backends.create("onnxruntime-cpu", files).infer(tiny.windows)}
    with torch.no_grad():
        got = TorchGraph(onnx.load_from_string(tiny.onnx))(torch.from_numpy(tiny.windows))
    served["torch (CUDA-graph backend's interpreter, fp32 on the CPU)"] = {
        k: t.numpy() for k, t in zip(OUTPUTS, got, strict=True)}
    if torch.cuda.is_available():
        served["cudagraph-fp32"] = backends.create("cudagraph", files, precision="fp32").infer(
            tiny.windows)
    for name, out in served.items():
        np.testing.assert_allclose(out["rv"][:, 0], tiny.rv, rtol=1e-5, err_msg=name)
        for head in OUTPUTS[1:]:
            np.testing.assert_allclose(out[head], tiny.cnn[head], atol=1e-5,
                                       err_msg=f"{name} {head}")


def test_training_exports_the_ensemble_and_evaluate_scores_it(tiny_data: Path, tiny_repo: Path,
                                                              tmp_path: Path) -> None:
    version = ensemble.served_by(tiny_repo, repository.DEFAULT_MODEL, 1)
    assert version is not None
    meta = repository.read_metadata(tiny_repo, ensemble.MODEL, version)["ensemble"]
    assert set(meta["weights"]) == set(ensemble.MEMBERS) and min(meta["weights"].values()) >= 0
    assert meta["val_rmspe"]["ensemble"] <= min(meta["val_rmspe"][m] for m in ensemble.MEMBERS) + 1e-9
    data = dataset.load(tiny_data, progress=False)
    cnn_meta = repository.read_metadata(tiny_repo, repository.DEFAULT_MODEL, 1)["training"]
    parts = train.split(data, train.TrainConfig(**{k: cnn_meta[k] for k in (
        "val_fraction", "test_fraction", "stop_fraction")}))
    # the weights see only time_ids after those the members were stopped on
    assert cnn_meta["time_ids"]["stop"][1] < meta["fit_time_ids"][0]
    assert meta["fit_time_ids"] == [int(parts["blend"].time_id.min()),
                                    int(parts["blend"].time_id.max())]
    report = evaluate.evaluate(data, tiny_repo, draws=200)
    assert report["ensemble"]["version"] == version
    assert {"ensemble - cnn", "ensemble - lightgbm", "cnn - lightgbm"} <= set(
        report["intervals"]["difference"])
    assert "ensemble" in evaluate.table(report)


def test_aggregates_graph_matches_numpy(tiny: TinyEnsemble) -> None:
    g = trees_onnx.GraphBuilder("a")
    aggs = ensemble.add_aggregates(g, g.op("Cast", "window", to=TensorProto.DOUBLE))
    assert g.nodes[-1].output[0] == aggs.table
    model = _one_output_model(
        g, helper.make_tensor_value_info("window", TensorProto.FLOAT, [None, 50, 12]), "agg",
        [None, None])
    got = export.onnx_session(model.SerializeToString()).run(["agg"], {"window": tiny.windows})[0]
    columns = [aggs.columns[n] for n in AGGREGATE_NAMES]
    assert len(set(columns)) == len(AGGREGATE_NAMES)
    np.testing.assert_allclose(got[:, columns], aggregates(tiny.windows), rtol=1e-12, atol=1e-300)


def test_torch_lowering_refuses_trees_it_would_get_wrong(trees_and_data) -> None:  # type: ignore[no-untyped-def]
    booster, _ = trees_and_data
    node = _trees_graph(trees_onnx.flatten(booster.dump_model()), 6).graph.node[0]
    for name, value in (("post_transform", "LOGISTIC"), ("n_targets", 2)):
        changed = onnx.NodeProto()
        changed.CopyFrom(node)
        kept = [a for a in changed.attribute if a.name != name]
        del changed.attribute[:]
        changed.attribute.extend([*kept, helper.make_attribute(name, value)])
        with pytest.raises(ValueError, match="only summed BRANCH_LEQ trees"):
            tree_lowering.lower_tree_ensembles([changed], {})


def test_the_lowering_reads_back_the_flat_trees_training_wrote(trees_and_data) -> None:  # type: ignore[no-untyped-def]
    booster, x = trees_and_data
    trees = trees_onnx.flatten(booster.dump_model())
    read = tree_lowering.flat_trees(_trees_graph(trees, x.shape[1]).graph.node[0])
    for field in ("feature", "threshold", "left", "right", "value", "roots"):
        np.testing.assert_array_equal(getattr(read, field), getattr(trees, field), err_msg=field)
    assert read.depth == trees.depth
    np.testing.assert_array_equal(read.predict(x), trees.predict(x))
