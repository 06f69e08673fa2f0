"""The model rule's work: build or train a model from its config entry and write `model.json` (+ weights).

A `source: python` model's weights are saved (weights.safetensors) whatever the factory does to get them, so
every analysis rule loads exactly the acquired model."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import timm
import torch

from seelike.io import atomic_write, sha256_file, write_json
from seelike.models.load import (
    ModelConfigError,
    create_model,
    fixed_input_size,
    resolve_data_config,
)
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
    python = spec["source"] == "python"
    if python:  # a factory that initialises at random gets the same weights on every run
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model({**spec, "name": name})
    else:
        model = create_model({**spec, "name": name})
    data_config = resolve_data_config(model)
    check_input_size(name, spec, model, data_config)
    info: dict[str, Any] = {
        "name": name,
        "source": spec["source"],
        # python: the factory string, for code that reads info["arch"] as the model's architecture
        "arch": spec["factory"] if python else spec["arch"],
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
    if python:
        info["factory"] = spec["factory"]
        if spec.get("taps"):
            info["taps"] = list(spec["taps"])
    if spec["source"] == "checkpoint" or (python and spec.get("path")):
        info["path"] = str(Path(spec["path"]).expanduser().resolve())
        info["checkpoint_sha256"] = sha256_file(info["path"])
        info["strict"] = bool(spec.get("strict", True))
    if python:  # the analysis rules load these, not the factory's own (a download, a random init)
        from safetensors.torch import save_model

        weights = out_json.parent / "weights.safetensors"
        with atomic_write(weights) as tmp:
            save_model(model, str(tmp), force_contiguous=True)
        info.update(weights=weights.name, weights_sha256=sha256_file(weights))
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


def check_input_size(
    name: str, spec: dict[str, Any], model: torch.nn.Module, data_config: dict[str, Any]
) -> None:
    """Refuse a model that does not run at its data config's input size, before anything is written.

    A real forward pass (one zero image, eval mode, no grad, on the CPU where the model was built), not a
    comparison of sizes: timm's own code decides, for every architecture (a ViT's strict patch embedding,
    patch-size divisibility with `dynamic_img_size`, Swin windows, fixed-size heads), where a size
    comparison would only cover the attributes it knows. It costs one batch-1 forward per model at fetch
    time, and consumes no random numbers (a `train` model's initial weights stay as seeded)."""
    size = [int(v) for v in data_config["input_size"]]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *size))
    except Exception as e:  # whatever the architecture raises: say which setting to change
        given = (spec.get("data_config") or {}).get("input_size")
        accepted = fixed_input_size(model)
        kwargs = spec.get("kwargs") or {}
        why = f"{type(e).__name__}: {e}"
        if spec["source"] == "python":  # no timm attributes to point at: the factory's own settings
            fix = (
                f"models.{name}.data_config.input_size is {list(given or size)} but the model of "
                f"{spec.get('factory')!r}, built with kwargs {kwargs}, does not run at that size. Fix: set "
                f"models.{name}.data_config.input_size to a size the model accepts ([channels, height, "
                f"width]), or change models.{name}.kwargs so that it is built for {size[1]}×{size[2]}."
            )
        elif given is not None:
            fix = (
                f"models.{name}.data_config.input_size is {list(given)} but the model, built with "
                f"kwargs {kwargs}, "
                + (f"accepts only {list(accepted)}" if accepted else "does not run at that size")
                + f". Fix: set models.{name}.data_config.input_size to "
                + (f"{list(accepted)}" if accepted else "a size the model accepts")
                + f", or build the model for {size[1]}×{size[2]} with models.{name}.kwargs.img_size: "
                f"{size[1]} (a checkpoint's position embeddings are resampled to it), or drop "
                f"data_config.input_size (it follows kwargs.img_size)."
            )
        else:
            fix = (
                f"the input size {size} comes from the architecture's pretrained config; set "
                f"models.{name}.data_config.input_size (or models.{name}.kwargs.img_size) so that "
                "the two agree."
            )
        raise ModelConfigError(
            f"model {name!r} does not run at its data config's input size {size} ({why}): {fix}"
        ) from e
    finally:
        model.train(was_training)
