"""Heads fitted in closed form or nearly so on cached frozen features, as linear-evaluation protocols
do (CLIP_benchmark, DINOv2, Kornblith et al. 2019), instead of SGD through the training loop.

- `fit_linear_head`: multinomial logistic regression by full-batch L-BFGS on features standardized
  by the training statistics, its L2 strength chosen on the validation split from a small grid; the
  standardization is folded into the returned `nn.Linear`, so the head is an ordinary head.
- `KNNHead`: DINO's weighted k-NN (Caron et al. 2021): cosine similarity to the training features,
  the k nearest vote with weight exp(sim / T); no training at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

DEFAULT_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class ProbeFit:
    """What the fit chose (recorded in results.json)."""

    solver: str
    l2: float
    grid: list[float]
    val_acc: list[float] = field(default_factory=list)
    iterations: int = 0  # L-BFGS iterations over all grid points (one full pass over the data each)


def _lbfgs(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int) -> tuple[nn.Linear, int]:
    head = nn.Linear(x.shape[1], classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")
    calls = 0

    def closure() -> torch.Tensor:
        nonlocal calls
        calls += 1
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head, calls


def _cv_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int, folds: int = 5):
    """Mean held-out accuracy of the L2 fit over `folds` folds of (x, y) (each class dealt round-robin)."""
    fold = torch.zeros(len(y), dtype=torch.long)
    for label in y.unique():
        members = torch.nonzero(y == label).flatten()
        fold[members] = torch.arange(len(members)) % folds
    accuracies, calls = [], 0
    for k in range(folds):
        held = fold == k
        if not held.any() or held.all():
            continue
        head, n = _lbfgs(x[~held], y[~held], classes, l2, max_iter)
        calls += n
        accuracies.append(_accuracy(head, x[held], y[held]))
    return (sum(accuracies) / len(accuracies) if accuracies else 0.0), calls


@torch.no_grad()
def _accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((head(x).argmax(dim=1) == y).float().mean()) if len(y) else 0.0


def fit_linear_head(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    classes: int,
    grid: tuple[float, ...] = DEFAULT_GRID,
    max_iter: int = 100,
) -> tuple[nn.Linear, ProbeFit]:
    """Logistic regression on standardized features, L2 chosen on `val` (ties: the stronger L2); with
    no validation images (a final run after `tuning.cv_folds`), by 5-fold cross-validation on `train`."""
    x, y = train[0].float(), train[1].long()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    standard = (x - mean) / std
    val_standard = (val[0].float() - mean) / std
    fit = ProbeFit(
        "lbfgs" if len(val[1]) else "lbfgs, L2 by 5-fold CV on train", l2=math.nan, grid=list(grid)
    )
    best: tuple[float, float, nn.Linear] | None = None
    with torch.random.fork_rng(devices=[]):
        for l2 in grid:
            head, calls = _lbfgs(standard, y, classes, l2, max_iter)
            fit.iterations += calls
            if len(val[1]):
                accuracy = _accuracy(head, val_standard, val[1].long())
            else:
                accuracy, calls = _cv_accuracy(standard, y, classes, l2, max_iter)
                fit.iterations += calls
            fit.val_acc.append(accuracy)
            if best is None or accuracy >= best[0]:
                best = (accuracy, l2, head)
    _, fit.l2, head = best
    folded = nn.Linear(x.shape[1], classes)  # head((x - mean) / std) as one Linear on raw features
    with torch.no_grad():
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - (head.weight / std) @ mean)
    return folded, fit


class KNNHead(nn.Module):
    """Weighted k-NN over the training features (cosine similarity, DINO's vote exp(sim / T)); its
    output is the log of the vote distribution, so metrics and the loss treat it as logits."""

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        classes: int,
        k: int = 20,
        temperature: float = 0.07,
    ):
        super().__init__()
        self.register_buffer("bank", nn.functional.normalize(features.float(), dim=1))
        self.register_buffer("labels", labels.long())
        self.classes, self.k, self.temperature = classes, int(k), float(temperature)

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        similarity = nn.functional.normalize(features.float(), dim=1) @ self.bank.T
        k = min(self.k, self.bank.shape[0])
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(features.shape[0], self.classes, device=features.device)
        votes.scatter_add_(1, self.labels[index], (top / self.temperature).exp())
        return (votes / votes.sum(dim=1, keepdim=True)).clamp_min(1e-12).log()
