"""The classic small CNN: conv 32 -> pool -> conv 64 -> pool -> dense 128 -> dropout."""

from __future__ import annotations

from torch import nn

from transferlab.core.errors import TransferlabError


class SimpleCNN(nn.Module):
    """A small built-in backbone whose three stages (`stem`, `conv2`, `fc`) are declared explicitly.

    Its output is the 128-d feature vector; the classifier head is added by `TransferModule`.
    """

    stage_names = ("stem", "conv2", "fc")

    def __init__(self, in_chans: int = 3, image_size: int = 32, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        if image_size < 4:
            raise TransferlabError(
                f"dataset.image_size={image_size} is too small for backbone 'simple_cnn'. Use dataset.image_size=4 or larger."
            )
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout)
        )
        self.num_features = hidden

    def forward(self, x):
        return self.fc(self.conv2(self.stem(x)))
