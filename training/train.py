"""`rtvol train`: baselines and the CNN on a split by time_id, exported to the repository."""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from rtvol import repository
from rtvol.features.spec import spec_dict, spec_hash
from rtvol.training import baselines, ensemble, export
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
    loss = (((y - torch.exp(log_rv.squeeze(1).float())) / y) ** 2).mean()  # RMSPE^2
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
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    tr, va = _tensors(train, device), _tensors(val, device)
    has_labels = train.next_return is not None
    amp = device.type == "cuda"
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, stale, history = np.inf, copy.deepcopy(model.state_dict()), 0, []
    bar = tqdm(range(cfg.epochs), desc="cnn", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = _loss(model, [t[idx] for t in tr], cfg, has_labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        val_rmspe = baselines.rmspe(val.target, _predict(model, va[0]))
        history.append({"epoch": epoch, "train_loss": total / len(train), "val_rmspe": val_rmspe})
        bar.set_postfix(val_rmspe=f"{val_rmspe:.4f}", best=f"{min(best, val_rmspe):.4f}")
        if val_rmspe < best:
            best, best_state, stale = val_rmspe, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
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
    }
    with tempfile.TemporaryDirectory() as tmp:
        gbm_path, har_path = Path(tmp) / "lightgbm.txt", Path(tmp) / "har.json"
        gbm.save(gbm_path)
        har.save(har_path)
        version = repository.write_version(repo, name, onnx_model, metadata, export.SERVING,
                                           {baselines.LIGHTGBM_FILE: gbm_path,
                                            baselines.HAR_FILE: har_path})
    ensemble.export_version(repo, parts["blend"], name, version)
    return version
