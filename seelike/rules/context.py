"""What every rule entry starts from: logging into the rule's log file, thread limits, the rule's execution
settings (`Execution`), a `Progress` logger, and `RuleContext` (device, model, loader, metadata of one job)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Execution:
    """Where and how fast a job runs — never what it computes. Rules receive it as one `params.run` object:
    Snakemake compares only builtin-typed params when deciding reruns, so moving a finished run to a GPU or
    raising `num_workers` reruns nothing, while every setting that changes a result (plain dicts and values,
    in canonical key order) does."""

    device: str = "auto"
    num_workers: int = 0


def setup_rule(snakemake: Any) -> logging.Logger:
    """Send logging (and warnings, and uncaught errors) to the rule's log file; cap torch threads at the job's."""
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
    # Cap torch's threads at the job's without importing torch (1.7 s a job; figure jobs never need it): torch
    # reads OMP_NUM_THREADS when it is first imported, and a torch already imported is set directly.
    threads = str(max(1, int(snakemake.threads)))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    return logger


class Progress:
    """The progress protocol of `seelike.analyses.stream` — `progress(repeat, batch, n_batches)` — as log lines
    (tqdm bars are unreadable in log files): the first, every `every`-th and the last step."""

    def __init__(self, logger: logging.Logger, label: str, every: int = 10, unit: str = "batch"):
        self.logger, self.label, self.every, self.unit = logger, label, every, unit

    def __call__(self, repeat: int, batch: int, n_batches: int) -> None:
        if batch % self.every == 0 or batch == n_batches - 1:
            total = n_batches if n_batches >= 0 else "?"
            self.logger.info(
                "%s: repeat %d, %s %d/%s", self.label, repeat, self.unit, batch + 1, total
            )


class RuleContext:
    """One job of a rule: its Snakemake object's input, output, params and wildcards, its logger, its device
    (`params.run.device`, or `params.device` for a CPU-pinned rule), its model (`load_model`, on the device),
    its loader (`loader`), a progress logger (`progress`) and the metadata of its outputs (`metadata`)."""

    def __init__(self, snakemake: Any):
        self.smk = snakemake
        self.rule: str = snakemake.rule
        self.input, self.output = snakemake.input, snakemake.output
        self.params, self.wildcards = snakemake.params, snakemake.wildcards
        self.log = setup_rule(snakemake)
        self.model = None
        self.info: dict[str, Any] | None = None

    @property
    def run(self) -> Execution:
        return self.params.get("run") or Execution(device=self.params.get("device", "auto"))

    @cached_property
    def device(self):
        from seelike.device import pick_device

        return pick_device(self.run.device)

    def load_model(self):
        """The rule's model (`input.model`) in eval mode on the rule's device, and its info (model.json)."""
        from seelike.models.load import load_model

        self.model, self.info = load_model(self.input.model, self.device)
        return self.model, self.info

    def loader(
        self, section: dict[str, Any] | None = None, *, rows=None, batch_size: int | None = None
    ):
        """The images the rule streams, in sample-list order, with the loaded model's preprocessing: a config
        section's `split`, `n_images` and `batch_size` over `input.samples`, or the given sample `rows`."""
        from seelike.data.loader import make_loader

        if self.info is None:
            raise RuntimeError(
                "load the rule's model (ctx.load_model()) before asking for its loader"
            )
        section = section or {}
        return make_loader(
            self.input.samples if rows is None else rows,
            self.params.dataset_cfg,
            self.info["data_config"],
            split=section.get("split") if rows is None else None,
            n_images=section.get("n_images") if rows is None else None,
            batch_size=batch_size or section["batch_size"],
            num_workers=self.run.num_workers,
        )

    def progress(self, what: str, unit: str = "batch") -> Progress:
        """A Progress logger labelled `what` and the job's model (or wildcards)."""
        name = (self.info or {}).get("name") or ", ".join(str(v) for v in self.wildcards)
        return Progress(self.log, f"{what} {name}".strip(), unit=unit)

    def metadata(self, analysis: str, **fields: Any) -> dict[str, Any]:
        """`build_metadata` for this job: its model's info, `input.samples`, its device, and `fields`."""
        from seelike.rules.metadata import build_metadata

        if "samples" not in fields:
            fields["samples"] = self.input.get("samples")
        if "device" not in fields:
            fields["device"] = self.device
        return build_metadata(analysis, info=self.info, network=self.model, **fields)
