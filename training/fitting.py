"""The training loop the neural members share: AdamW with a cosine schedule over shuffled
mini-batches, scored on the stop part after each epoch, the best epoch kept, stopped after
``patience`` epochs without a better score. Seeded: the same seed gives the same model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:  # train imports this module
    from rtvol.training.train import TrainConfig


def early_stopping(model: nn.Module, rows: int, batch_loss: Callable[[torch.Tensor], torch.Tensor],
                   score: Callable[[], float], cfg: TrainConfig, device: torch.device,
                   desc: str, progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` in place (it ends in eval mode with its best epoch's weights);
    ``batch_loss(rows' indices)`` is a mini-batch's loss, ``score()`` the stop part's
    RMSPE. Returns each epoch's train loss and score."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, stale, history = np.inf, copy.deepcopy(model.state_dict()), 0, []
    bar = tqdm(range(cfg.epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(rows, generator=gen).to(device)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        model.eval()
        val_rmspe = score()
        history.append({"epoch": epoch, "train_loss": total / rows, "val_rmspe": val_rmspe})
        bar.set_postfix(val_rmspe=f"{val_rmspe:.4f}", best=f"{min(best, val_rmspe):.4f}")
        if val_rmspe < best:
            best, best_state, stale = val_rmspe, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return history


def rmspe_squared(y: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    """The members' RV loss: mean squared relative error of exp(log_pred), RMSPE^2."""
    return (((y - torch.exp(log_pred.float())) / y) ** 2).mean()
