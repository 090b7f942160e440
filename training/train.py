"""`rtvol train`: baselines, the MLP and the CNN on a split by time_id, exported to the repository."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from rtvol import repository
from rtvol.features.spec import spec_dict, spec_hash
from rtvol.training import baselines, ensemble, export, fitting, mlp
from rtvol.training.cnn import VolCNN, parameter_count
from rtvol.training.dataset import Dataset


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 12
    seed: int = 0
    device: str = "cpu"
    direction_weight: float = 0.2
    momentum_weight: float = 0.2
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    # The earlier part of the validation time_ids early-stops the CNN and LightGBM; the
    # later part, which no member has seen, fits the ensemble's weights.
    stop_fraction: float = 0.5


# The parts of a split, in time order.
PARTS = ("train", "stop", "blend", "test")


def split(data: Dataset, cfg: TrainConfig) -> dict[str, Dataset]:
    """Whole time_ids go to one part, so no bucket leaks into another, and the parts
    follow each other in time: train, stop (early stopping), blend (the ensemble's
    weights), test. The blend part comes after the stop part, as test comes after both:
    the weights are judged on time_ids later than any the members were chosen on, as in
    production."""
    if not 0 < cfg.stop_fraction < 1:
        raise ValueError(f"stop_fraction must be in (0, 1), got {cfg.stop_fraction}")
    ids = np.unique(data.time_id)
    n_test = max(1, round(len(ids) * cfg.test_fraction))
    n_val = max(2, round(len(ids) * cfg.val_fraction))
    n_stop = min(n_val - 1, max(1, round(n_val * cfg.stop_fraction)))
    if len(ids) < n_test + n_val + 1:
        raise ValueError(f"need at least {n_test + n_val + 1} time_ids to split (train, "
                         f"{n_stop} to early-stop, {n_val - n_stop} to fit the ensemble's "
                         f"weights, {n_test} to test), have {len(ids)}")
    bounds = np.cumsum([len(ids) - n_test - n_val, n_stop, n_val - n_stop])
    part_of = np.searchsorted(bounds, np.searchsorted(ids, data.time_id), side="right")
    return {name: data.subset(part_of == i) for i, name in enumerate(PARTS)}


def _tensors(data: Dataset, device: torch.device) -> list[torch.Tensor]:
    n = len(data)
    direction = data.direction()
    momentum = data.momentum()
    return [torch.from_numpy(data.windows).to(device),
            torch.from_numpy(data.target.astype(np.float32)).to(device),
            torch.from_numpy(direction if direction is not None else np.full(n, -100)).to(device),
            torch.from_numpy((momentum if momentum is not None else np.zeros(n)).astype(np.float32)
                             ).to(device)]


def _loss(model: VolCNN, batch: list[torch.Tensor], cfg: TrainConfig,
          has_labels: bool) -> torch.Tensor:
    x, y, direction, momentum = batch
    log_rv, logits, pre_momentum = model.logits(x)
    loss = fitting.rmspe_squared(y, log_rv.squeeze(1))
    if has_labels:
        loss = loss + cfg.direction_weight * F.cross_entropy(logits.float(), direction)
        loss = loss + cfg.momentum_weight * F.mse_loss(torch.tanh(pre_momentum.squeeze(1)).float(),
                                                       momentum)
    return loss


def _predict(model: VolCNN, windows: torch.Tensor, batch: int = 4096) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(windows[i:i + batch])[0].squeeze(1).float().cpu()
                          for i in range(0, len(windows), batch)]).numpy()


def train_cnn(train: Dataset, val: Dataset, cfg: TrainConfig,
              progress: bool = True) -> tuple[VolCNN, list[dict[str, float]]]:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = VolCNN()
    model.set_normalisation(train.windows)
    model.to(device)
    tr, va = _tensors(train, device), _tensors(val, device)
    has_labels = train.next_return is not None
    amp = device.type == "cuda"

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return _loss(model, [t[idx] for t in tr], cfg, has_labels)

    history = fitting.early_stopping(
        model, len(train), batch_loss, lambda: baselines.rmspe(val.target, _predict(model, va[0])),
        cfg, device, "cnn", progress)
    return model.cpu().eval(), history


def run(data: Dataset, repo: Path, cfg: TrainConfig, name: str = repository.DEFAULT_MODEL,
        progress: bool = True) -> int:
    """Train everything, export the CNN and the ensemble built on it (rtvol_ensemble) to
    the repository; returns the CNN's new version number."""
    started = time.time()
    parts = split(data, cfg)
    train, stop = parts["train"], parts["stop"]
    har = baselines.Har.fit(train.windows, train.target)
    gbm = baselines.GradientBoosting.fit(train.windows, train.target, stop.windows, stop.target)
    net, net_history = mlp.train(train, stop, cfg, progress)
    model, history = train_cnn(train, stop, cfg, progress)
    onnx_model = export.to_onnx(model)
    parity = export.check_parity(onnx_model, model, stop.windows[:512])

    metadata = {
        "feature_spec_hash": spec_hash(),
        "feature_spec": spec_dict(),
        "normalisation": {"mean": model.mean.tolist(), "std": model.std.tolist(),
                          "log_columns": model.log_mask.nonzero().flatten().tolist()},
        "params": parameter_count(model),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {**asdict(cfg), "seconds": round(time.time() - started, 1),
                     "epochs_run": len(history),
                     "best_val_rmspe": min(h["val_rmspe"] for h in history),
                     "rows": {k: len(v) for k, v in parts.items()},
                     "time_ids": {k: [int(v.time_id.min()), int(v.time_id.max())]
                                  for k, v in parts.items()}},
        "onnx_parity_max_abs_diff": parity,
        "history": history,
        "mlp": {"epochs_run": len(net_history),
                "best_val_rmspe": min(h["val_rmspe"] for h in net_history)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        gbm_path, har_path = Path(tmp) / "lightgbm.txt", Path(tmp) / "har.json"
        mlp_path = Path(tmp) / "mlp.npz"
        gbm.save(gbm_path)
        har.save(har_path)
        net.save(mlp_path)
        version = repository.write_version(repo, name, onnx_model, metadata, export.SERVING,
                                           {baselines.LIGHTGBM_FILE: gbm_path,
                                            baselines.HAR_FILE: har_path,
                                            mlp.MLP_FILE: mlp_path})
    ensemble.export_version(repo, parts["blend"], name, version)
    return version
