"""The small random-init timm models the tests build (one home: each test file asks for its variant by kwargs).

Seeded before construction, so a variant's weights are the same in every test that builds it."""

from __future__ import annotations

import timm
import torch
from torch import nn

VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 3}


def tiny_vit(seed: int = 0, **kw) -> nn.Module:
    """timm ViT (vit_tiny_patch16_224 layout): 32 px, patch 8 (4×4 grid + CLS), 2 blocks of width 24, 3 heads;
    any timm kwarg overrides."""
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**VIT, **kw}).eval()


def tiny_resnet(seed: int = 0, **kw) -> nn.Module:
    """timm ResNet-18 (its default widths unless `channels` is given); any timm kwarg overrides."""
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False, **kw).eval()


def tiny_generic() -> nn.Module:
    """A plain nn.Sequential (no timm structure: the generic family): two conv maps (16×16, then 8×8 at 16 px),
    a 1×1 pool and a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
