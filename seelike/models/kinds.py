"""Tap kinds shared by code that must not import torch (the claims, the figures): which kinds are block outputs.

`seelike.models.taps` re-exports `BLOCK_OUTPUT_KINDS` from here."""

from __future__ import annotations

__all__ = ["BLOCK_OUTPUT_KINDS"]

# What "a block's representation" means across families: the input embedding / stem, then each ViT block's
# or CNN unit's output (per-block comparisons, Fig 12 and App. G; Fig 1 claims on block outputs). A CNN's
# `stem_conv` (the raw stem convolution) is not one: block outputs start at `stem`.
BLOCK_OUTPUT_KINDS: tuple[str, ...] = ("embed", "stem", "block", "out")
