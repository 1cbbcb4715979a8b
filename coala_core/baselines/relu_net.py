"""Non-convex two-layer ReLU reward network of the head's width, trained by AdamW (the paper's Table 7 baseline).

r(f) = relu(z @ W1) @ w2 with z = (f - mean) / scale (d,), W1 (d, m), w2 (m,), no biases (the same
architecture as the convex head). Loss: mean log(1 + exp(-(r(f_w) - r(f_l)))) on matched training pairs,
AdamW with mini-batches; the learning rate is chosen from a small grid on the validation pairs, and the epoch
with the best validation accuracy is kept (early stopping, which favours the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.baselines.linear_bt import standardiser
from coala_core.errors import DimensionMismatchError


@dataclass(frozen=True)
class ReluNetHead:
    W1: np.ndarray  # (d, m)
    w2: np.ndarray  # (m,)
    mean: np.ndarray
    scale: np.ndarray
    lr: float
    epoch: int
    beta: float = 1.0
    selection: list[dict[str, Any]] = field(default_factory=list)

    def score(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.W1.shape[0]:
            raise DimensionMismatchError(f"features: expected (n, {self.W1.shape[0]}), got {f.shape}")
        return np.maximum(((f - self.mean) / self.scale) @ self.W1, 0.0) @ self.w2


def _train_one(Zw, Zl, Zw_val, Zl_val, width, lr, epochs, batch_size, weight_decay, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    d = Zw.shape[1]
    W1 = torch.nn.Parameter(torch.randn(d, width, generator=gen, dtype=torch.float64) / np.sqrt(d))
    w2 = torch.nn.Parameter(torch.randn(width, generator=gen, dtype=torch.float64) / np.sqrt(width))
    opt = torch.optim.AdamW([W1, w2], lr=lr, weight_decay=weight_decay)
    tw, tl = torch.from_numpy(Zw), torch.from_numpy(Zl)
    vw, vl = torch.from_numpy(Zw_val), torch.from_numpy(Zl_val)
    rng = np.random.default_rng(seed)
    best = (-1.0, 0, W1.detach().clone(), w2.detach().clone())
    curve = []
    for epoch in range(1, epochs + 1):
        perm = torch.from_numpy(rng.permutation(Zw.shape[0]))
        for i in range(0, Zw.shape[0], batch_size):
            rows = perm[i : i + batch_size]
            margin = torch.relu(tw[rows] @ W1) @ w2 - torch.relu(tl[rows] @ W1) @ w2
            loss = torch.nn.functional.softplus(-margin).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float(((torch.relu(vw @ W1) @ w2) > (torch.relu(vl @ W1) @ w2)).double().mean())
        curve.append(acc)
        if acc > best[0]:
            best = (acc, epoch, W1.detach().clone(), w2.detach().clone())
    return best, curve


def fit_relu_net(
    Fw: np.ndarray,
    Fl: np.ndarray,
    Fw_val: np.ndarray,
    Fl_val: np.ndarray,
    *,
    width: int,
    lr_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2),
    epochs: int = 50,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> ReluNetHead:
    """Train the network once per learning rate; keep the best validation accuracy over lr and epoch."""
    mean, scale = standardiser(Fw, Fl)
    Zw, Zl, Zvw, Zvl = ((np.asarray(a, np.float64) - mean) / scale for a in (Fw, Fl, Fw_val, Fl_val))
    table, winner = [], None
    for lr in lr_grid:
        (acc, epoch, W1, w2), curve = _train_one(Zw, Zl, Zvw, Zvl, width, lr, epochs, batch_size, weight_decay, seed)
        table.append({"lr": lr, "val_accuracy": acc, "best_epoch": epoch, "final_val_accuracy": curve[-1]})
        if winner is None or acc > winner[0]:
            winner = (acc, lr, epoch, W1.numpy(), w2.numpy())
    if winner is None:
        raise ValueError("lr_grid: empty; give at least one learning rate")
    for row in table:
        row["chosen"] = row["lr"] == winner[1]
    return ReluNetHead(W1=winner[3], w2=winner[4], mean=mean, scale=scale, lr=winner[1], epoch=winner[2],
                       selection=table)
