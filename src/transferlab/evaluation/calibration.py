"""Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks"): one scalar T > 0
dividing the logits, fitted by minimizing the validation NLL; accuracy is unchanged."""

from __future__ import annotations

import torch
from torch import nn


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimizing the NLL of `logits / T` on (`logits`, `labels`), by L-BFGS on log T."""
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    return temperature if temperature == temperature and temperature > 0 else 1.0
