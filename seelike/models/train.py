"""Train a timm architecture here, deterministically under a seed (the embedded default's models)."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from torch import nn

from seelike.data.loader import eval_transform, make_loader
from seelike.data.samples import read_samples
from seelike.data.sources import open_source

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _train_transform(data_config: dict[str, Any], augment: str):
    """The eval transform, then (crop_flip) a padded random crop and a flip at the model's input size.

    Augmenting after the resize keeps the crop valid when the model's input is larger than the images
    (e.g. 32 px CIFAR upsampled to 64 px); padding is 1/8 of the input side, zeros in normalised space.
    """
    base = eval_transform(data_config)
    if augment == "none":
        return base
    import torchvision.transforms as T

    size = data_config["input_size"][-1]
    return T.Compose([base, T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()])


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(-1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(total, 1)


def train_model(
    model: nn.Module,
    samples_csv: str,
    dataset_cfg: dict[str, Any],
    data_config: dict[str, Any],
    train_cfg: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """AdamW + warmup/cosine schedule on the sample list's train split; returns metrics (test accuracy…)."""
    seed = int(train_cfg["seed"])
    seed_everything(seed)
    samples = read_samples(samples_csv)
    train_rows = samples[samples["split"] == "train"]
    n_train = max(1, math.floor(len(train_rows) * float(train_cfg.get("fraction", 1.0))))
    source = open_source(dataset_cfg)
    train_loader = make_loader(
        train_rows.iloc[:n_train],
        dataset_cfg,
        data_config,
        split=None,
        batch_size=int(train_cfg["batch_size"]),
        shuffle_seed=seed,
        transform=_train_transform(data_config, train_cfg.get("augment", "none")),
        source=source,
        num_workers=int(train_cfg.get("num_workers", 0)),
    )
    test_loader = make_loader(
        samples,
        dataset_cfg,
        data_config,
        split="test",
        batch_size=256,
        source=source,
        num_workers=int(train_cfg.get("num_workers", 0)),
    )
    model.to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"])
    )
    epochs = int(train_cfg["epochs"])
    steps = epochs * len(train_loader)
    warmup = max(1, round(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(train_cfg.get("label_smoothing", 0.0)))
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach().item() * len(y)
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, total / n_train)
    acc = evaluate(model, test_loader, device)
    model.eval()
    return {
        "test_accuracy": acc,
        "train_images": n_train,
        "test_images": len(test_loader.dataset),
        "epochs": epochs,
        "train_seconds": round(time.time() - t0, 2),
        "seed": seed,
    }
