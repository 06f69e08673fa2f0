"""Fig 5: CKA between subsets of one attention block's heads, grouped local → global by their mean attention
distance, and CNN units read from the CNN's activation cache (no CNN forward pass)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from seelike.analyses.attention import AttentionSite, attention_sites, unfused
from seelike.analyses.stream import Progress, stream
from seelike.device import exact_fp32, place_model
from seelike.models.geometry import NotAnAttentionModelError, token_grid
from seelike.models.taps import StopForward, hooks


def head_site(model: nn.Module, block: int = 0) -> AttentionSite:
    """The attention of block `block` whose head outputs Fig 5 reads. Raises NotAnAttentionModelError where
    head subsets are not defined: windowed attention (per-window outputs) and talking-heads attention (CaiT: the
    values are weighted by a mixture across heads, so no head's output follows its own distribution)."""
    sites = attention_sites(model)
    if not 0 <= block < len(sites):
        raise ValueError(f"block {block} out of range: the model has {len(sites)} attention blocks")
    site = sites[block]
    if site.kind != "global":
        raise NotAnAttentionModelError(
            f"{site.name}: Fig 5's head subsets are read from global token attention only; a windowed block's "
            "head outputs are per-window tensors"
        )
    if site.talking_heads:
        raise NotAnAttentionModelError(
            f"{site.name} is talking-heads attention (CaiT): proj_w mixes the heads' distributions before the "
            "values, so a head's output does not belong to the head whose attention distance is measured"
        )
    if not isinstance(getattr(site.module, "proj", None), nn.Module):
        raise NotAnAttentionModelError(
            f"{site.name} has no `proj` output projection to read head outputs from"
        )
    return site


@torch.no_grad()
def head_outputs(model: nn.Module, x: torch.Tensor, block: int = 0) -> torch.Tensor:
    """Per-head outputs of attention block `block` for images `x`: (B, N, heads, head_dim).

    They are the input of `attn.proj` (concatenated head outputs, after the optional scale-norm) reshaped per
    head; a head subset's representation is the chosen heads' slices, flattened over tokens × channels. The
    forward pass stops right after that block's attention.
    """
    site = head_site(model, block)
    got: list[torch.Tensor] = []

    def grab(args: tuple) -> None:
        got.append(args[0].detach())
        raise StopForward

    with unfused([site]), hooks([(site.module.proj, "input", grab)]):
        model(x)
    y = got[0]
    heads = site.num_heads
    return y.reshape(y.shape[0], y.shape[1], heads, y.shape[-1] // heads)


def head_prefix_tokens(model: nn.Module, heads: torch.Tensor, img_hw) -> int:
    """Prefix tokens of a block's head outputs (B, N, heads, hd): N minus the patch grid (CaiT's and ConViT's
    patch-only blocks have none although the model declares a CLS token)."""
    g = token_grid(model, img_hw)
    prefix = heads.shape[1] - g.grid_hw[0] * g.grid_hw[1]
    if prefix < 0:
        raise NotAnAttentionModelError(
            f"{heads.shape[1]} tokens are fewer than the {g.grid_hw[0]}x{g.grid_hw[1]} patch grid"
        )
    return prefix


def group_heads(mean_distance: Sequence[float], subset_size: int) -> list[list[int]]:
    """Heads sorted by mean distance (local → global) cut into consecutive groups of `subset_size`
    (the last group holds the remainder)."""
    if subset_size < 1:
        raise ValueError(f"subset_size must be at least 1, got {subset_size}")
    d = np.asarray(mean_distance, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError(
            "mean distances must be finite to sort heads (an undefined head distance was given)"
        )
    order = np.argsort(d, kind="stable").tolist()
    return [order[i : i + subset_size] for i in range(0, len(order), subset_size)]


def auto_subset_size(num_heads: int, n_subsets: int = 4) -> int:
    """Default subset size: the heads split into `n_subsets` groups (16 heads → 4 of 4; 4 heads → 4 of 1)."""
    return max(1, math.ceil(num_heads / n_subsets))


def head_subset_grams(
    heads: torch.Tensor,
    groups: Sequence[Sequence[int]],
    num_prefix_tokens: int,
    tokens: str = "all",
) -> torch.Tensor:
    """(S, B, B) fp32 Grams of head-subset representations: heads (B, N, H, hd) → subset slices flattened over
    tokens × channels; `tokens="patches"` drops the prefix tokens first."""
    from seelike.cka import gram

    if tokens not in ("all", "patches"):
        raise ValueError(f"tokens must be 'all' or 'patches', got {tokens!r}")
    if tokens == "patches":
        heads = heads[:, num_prefix_tokens:]
    return torch.stack([gram(heads[:, :, list(g), :].reshape(heads.shape[0], -1)) for g in groups])


@exact_fp32()
def head_subset_cka(
    model: nn.Module,
    vit_batches: Iterable,
    cnn_grams: Iterable,
    groups: Sequence[Sequence[int]],
    *,
    block: int = 0,
    tokens: str = "all",
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    n_batches: int | None = None,
    with_se: bool = False,
    with_groups: bool = False,
) -> np.ndarray | tuple:
    """(S, T) minibatch CKA between the head subsets `groups` of attention block `block` and T CNN taps (and,
    `with_se`, its delete-one-minibatch jackknife standard error, `CkaAccumulator.jackknife_se`; `with_groups`,
    then its HSIC₁ terms summed over groups of consecutive minibatches as one repeat,
    `seelike.analyses.replicates.CkaGroups`: every minibatch of every repeat enters one ratio of means).

    `vit_batches` yields the images of minibatch i (or (images, labels)); `cnn_grams` yields the CNN's (T, n, n)
    Grams of the SAME images in the same order (e.g. from its activation cache). `progress(0, i, n_batches)`
    after each minibatch (`seelike.analyses.stream`). `device`: `seelike.device.analysis_device` (default:
    where the model is).
    """
    from seelike.cka import CkaAccumulator

    device = place_model(model, device)
    head_site(model, block)  # refuses before any image is read
    acc: CkaAccumulator | None = None
    batches = stream(vit_batches, device, progress=progress, n_batches=n_batches)
    for i, (batch, g_cnn) in enumerate(zip(batches, cnn_grams, strict=True)):
        x = batch.x
        g_cnn = torch.as_tensor(np.asarray(g_cnn))
        if g_cnn.shape[-1] != x.shape[0]:
            raise ValueError(
                f"minibatch {i}: {x.shape[0]} images for the ViT but CNN Grams of {g_cnn.shape[-1]} images; "
                "both must come from the same sample plan"
            )
        heads = head_outputs(model, x, block)
        prefix = head_prefix_tokens(model, heads, x.shape[-2:])
        g_vit = head_subset_grams(heads, groups, prefix, tokens)
        if acc is None:
            acc = CkaAccumulator(len(groups), g_cnn.shape[0])
        acc.add(g_vit.cpu(), g_cnn, batch_id=i)
    if acc is None:
        raise ValueError("no minibatches were given")
    out = (acc.result(),) + ((acc.jackknife_se(),) if with_se else ())
    if with_groups:
        from seelike.analyses.replicates import CkaGroups, group_terms

        out += (CkaGroups.from_repeats([group_terms(*acc.terms())], *acc.degenerate()),)
    return out if len(out) > 1 else out[0]


def default_cnn_taps(taps: Sequence[dict]) -> list[str]:
    """The paper's Fig 5 CNN taps from a cache's tap list: up to 3 unit outputs (`out`) of the first stage and
    up to 2 of the second (R50: stages.0.blocks.0..2, stages.1.blocks.0..1)."""
    outs = [t["name"] for t in taps if t.get("kind") == "out"]
    stages: dict[str, list[str]] = {}
    for name in outs:
        stages.setdefault(name.rsplit(".", 2)[0], []).append(name)
    firsts = list(stages.values())
    if len(firsts) < 1:
        raise ValueError(
            "the CNN cache lists no unit outputs (kind 'out'); name its taps in the config"
        )
    return firsts[0][:3] + (firsts[1][:2] if len(firsts) > 1 else [])


def _cached_cnn_taps(meta: dict, cnn_taps: Sequence[str] | None) -> tuple[list[str], list[int]]:
    """The CNN taps read from a cache (`cnn_taps`, else `default_cnn_taps`) and their rows in its Grams."""
    names = [t["name"] for t in meta["taps"]]
    chosen = list(cnn_taps) if cnn_taps else default_cnn_taps(meta["taps"])
    missing = [t for t in chosen if t not in names]
    if missing:
        raise ValueError(
            f"CNN taps {missing} are not in the cache of {meta['model_name']!r}; it has {names}"
        )
    return chosen, [names.index(t) for t in chosen]


def _subset_table(groups, dist: np.ndarray, chosen: Sequence[str], cka, se) -> pd.DataFrame:
    """Fig 5's tidy table: one row per head subset × CNN tap."""
    rows = []
    for s, g in enumerate(groups):
        for t, tap in enumerate(chosen):
            rows.append(
                {
                    "subset": s,
                    "heads": ",".join(str(h) for h in g),
                    "subset_mean_distance_px": float(dist[g].mean()),
                    "cnn_tap": tap,
                    "cnn_tap_order": t,
                    "cka": float(cka[s, t]),
                    "cka_se": float(se[s, t]),
                }
            )
    return pd.DataFrame(rows)


@exact_fp32()
def head_subset_cka_from_cache(
    model: nn.Module,
    model_info: dict,
    attention_table: pd.DataFrame,
    samples_csv,
    dataset_cfg: dict,
    cnn_cache_dir,
    *,
    cnn_taps: Sequence[str] | None = None,
    subset_size: int | None = None,
    block: int = 0,
    tokens: str = "all",
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Fig 5: CKA of block `block`'s head subsets (grouped local → global by `attention_table`) with CNN taps.

    The CNN is not rerun: its Grams come from its activation cache, and the ViT sees the cache's images in the
    cache's minibatches (same sample list, checked by hash). Returns a tidy table, its metadata and the table's
    jackknife groups (subsets × CNN taps in the table's order: `subset`, `cnn_tap_order`).
    """
    from seelike.analyses.cache import load_grams, read_cache_meta, repeat_loader
    from seelike.data.loader import read_samples
    from seelike.data.samples import samples_hash

    meta = read_cache_meta(cnn_cache_dir)
    plan = meta["plan"]
    if plan["samples_hash"] != samples_hash(samples_csv):
        raise ValueError(
            f"the CNN cache {cnn_cache_dir} was made from another sample list than {samples_csv}; rebuild it"
        )
    chosen, idx = _cached_cnn_taps(meta, cnn_taps)
    att = attention_table[attention_table["block"] == block].sort_values("head")
    if att.empty:
        raise ValueError(f"the attention table has no block {block}")
    size = subset_size or auto_subset_size(len(att))
    groups = group_heads(att["mean_distance_px"].to_numpy(), size)
    dist = att["mean_distance_px"].to_numpy()
    samples = read_samples(samples_csv)

    def vit_batches():
        for r in range(plan["repeats"]):
            yield from repeat_loader(
                samples, plan, r, dataset_cfg, model_info["data_config"], num_workers=num_workers
            )

    def grams():
        for r in range(plan["repeats"]):
            for b in range(len(meta["batch_sizes"])):
                yield load_grams(cnn_cache_dir, r, b, taps=idx)

    n_batches = plan["repeats"] * len(meta["batch_sizes"])
    cka, se, cka_groups = head_subset_cka(
        model, vit_batches(), grams(), groups, block=block, tokens=tokens, device=device,
        progress=progress, n_batches=n_batches, with_se=True, with_groups=True,
    )  # fmt: skip
    out_meta = {
        "block": block, "subset_size": size, "tokens": tokens, "cnn_model": meta["model_name"],
        "cnn_taps": chosen, "plan": plan, "groups": groups,
    }  # fmt: skip
    return _subset_table(groups, dist, chosen, cka, se), out_meta, cka_groups
