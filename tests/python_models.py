"""Models for tests/test_python_source.py, imported as a lab's own code would be (`python_models:small_cnn`;
tests/ is on sys.path under pytest)."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Stem, two strided stages, global pool, linear head: a plain nn.Module, no timm attributes."""

    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stage1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


def small_cnn(width: int = 8) -> nn.Module:
    return SmallCNN(width)


def not_a_model(width: int = 8) -> dict:
    """A builder that returns its settings instead of a module (the bad-input test)."""
    return {"width": width}


NOT_CALLABLE = 3
