"""The model rule's work: build or train a model from its config entry and write `model.json` (+ weights)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import timm
import torch

from seelike.io import atomic_write, sha256_file, write_json
from seelike.models.load import create_model, resolve_data_config
from seelike.models.taps import discover_taps, tap_family, taps_table

log = logging.getLogger(__name__)


def acquire_model(
    name: str,
    spec: dict[str, Any],
    out_json: str | Path,
    out_taps: str | Path,
    samples_csv: str | None = None,
    dataset_cfg: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Materialise one configured model; returns the info written to `model.json`."""
    out_json = Path(out_json)
    device = device or torch.device("cpu")
    if spec["source"] == "train":
        from seelike.models.train import seed_everything

        seed_everything(
            int(spec["train"]["seed"])
        )  # before construction: the initial weights are random
    model = create_model(spec)
    data_config = resolve_data_config(model)
    info: dict[str, Any] = {
        "name": name,
        "source": spec["source"],
        "arch": spec["arch"],
        "kwargs": spec.get("kwargs") or {},
        "data_config": data_config,
        "family": tap_family(model),
        "num_params": sum(p.numel() for p in model.parameters()),
        "versions": {
            "timm": timm.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    if spec.get("remove_skip"):
        info["remove_skip"] = spec["remove_skip"]
    if spec.get("data_config"):
        info["data_config_overlay"] = spec["data_config"]
    if spec["source"] == "checkpoint":
        info["path"] = str(Path(spec["path"]).expanduser().resolve())
        info["checkpoint_sha256"] = sha256_file(info["path"])
        info["strict"] = bool(spec.get("strict", True))
    if spec["source"] == "train":
        from safetensors.torch import save_file

        from seelike.data.samples import samples_hash
        from seelike.models.train import train_model

        metrics = train_model(model, samples_csv, dataset_cfg, data_config, spec["train"], device)
        log.info("trained %s: %s", name, metrics)
        weights = out_json.parent / "weights.safetensors"
        with atomic_write(weights) as tmp:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp)
            )
        info.update(
            weights=weights.name,
            weights_sha256=sha256_file(weights),
            metrics=metrics,
            train=spec["train"],
            samples_hash=samples_hash(samples_csv),
        )
    taps = discover_taps(model)
    info["num_taps"] = len(taps)
    table = taps_table(taps)
    with atomic_write(out_taps) as tmp:
        table.to_csv(tmp, index=False)
    write_json(out_json, info)  # last: its presence means the model is complete
    return info
