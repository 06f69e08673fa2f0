"""Helpers shared by the thin scripts in scripts/: logging into the rule's log file and thread limits."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Execution:
    """Where and how fast a job runs — never what it computes. Rules receive it as one `params.run` object:
    Snakemake compares only builtin-typed params when deciding reruns, so moving a finished run to a GPU or
    raising `num_workers` reruns nothing, while every setting that changes a result (plain dicts and values,
    in canonical key order) does."""

    device: str = "cpu"
    num_workers: int = 0


def setup_rule(snakemake: Any) -> logging.Logger:
    """Send logging (and warnings, and uncaught errors) to the rule's log file; cap torch threads."""
    log_file = snakemake.log[0] if len(snakemake.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    logger = logging.getLogger("seelike.rule")

    def excepthook(kind, value, tb):
        logger.error("rule failed", exc_info=(kind, value, tb))
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = excepthook
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
    except ImportError:
        pass
    return logger


class Progress:
    """Minimal progress lines into the log (tqdm bars are unreadable in log files)."""

    def __init__(self, logger: logging.Logger, label: str, every: int = 10):
        self.logger, self.label, self.every = logger, label, every

    def __call__(self, repeat: int, batch: int, n_batches: int) -> None:
        if batch % self.every == 0 or batch == n_batches - 1:
            self.logger.info("%s: repeat %d, batch %d/%d", self.label, repeat, batch + 1, n_batches)


def analysis_loader(snakemake: Any, data_config: dict[str, Any], section: dict[str, Any]):
    """The loader an analysis rule streams: its config section's split, image count and batch size, over
    the rule's sample list with the model's own preprocessing."""
    from seelike.data.loader import make_loader

    return make_loader(
        snakemake.input.samples,
        snakemake.params.dataset_cfg,
        data_config,
        split=section["split"],
        n_images=section["n_images"],
        batch_size=section["batch_size"],
        num_workers=snakemake.params.run.num_workers,
    )
