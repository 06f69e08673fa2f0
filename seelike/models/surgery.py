"""Architecture changes a config can ask for on top of a timm model (Fig 8: ViT blocks without skip connections).

The change is applied by `create_model` whenever the spec asks for it, so training, every analysis rule and
`load_model` rebuild the same network. Module paths stay as timm names them (tap names do not change): the
chosen blocks only get a subclass whose `forward` leaves out the identity path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

BRANCHES = ("attn", "mlp")
_SUBCLASSES: dict[tuple[type, frozenset[str]], type] = {}


def _no_skip_class(cls: type, dropped: frozenset[str]) -> type:
    """`cls` with the residual sum around the branches in `dropped` removed (cached per combination)."""
    key = (cls, dropped)
    if key not in _SUBCLASSES:

        def forward(self, x, attn_mask=None, is_causal: bool = False):
            kw = {}
            if attn_mask is not None:
                kw["attn_mask"] = attn_mask
            if is_causal:
                kw["is_causal"] = is_causal
            a = self.drop_path1(self.ls1(self.attn(self.norm1(x), **kw)))
            x = a if "attn" in dropped else x + a
            m = self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
            return m if "mlp" in dropped else x + m

        name = f"{cls.__name__}NoSkip{''.join(b.capitalize() for b in sorted(dropped))}"
        _SUBCLASSES[key] = type(name, (cls,), {"forward": forward, "skip_removed": dropped})
    return _SUBCLASSES[key]


def remove_skip_connections(
    model: nn.Module, blocks: Sequence[int], branches: Sequence[str] = BRANCHES
) -> nn.Module:
    """Drop the identity path around `branches` (attn, mlp) of ViT blocks `blocks` (negative = from the end).

    Raises ValueError naming the problem for a model without timm ViT blocks, an index out of range, or an
    unknown branch.
    """
    bad = sorted(set(branches) - set(BRANCHES))
    if bad or not branches:
        raise ValueError(
            f"remove_skip.branches must be a non-empty subset of {list(BRANCHES)}, got {list(branches)}"
        )
    model_blocks = getattr(model, "blocks", None)
    needed = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")
    if not isinstance(model_blocks, (nn.Sequential, nn.ModuleList)) or not all(
        all(hasattr(b, n) for n in needed) for b in model_blocks
    ):
        raise ValueError(
            "remove_skip needs a timm VisionTransformer-style model (blocks with norm1/attn/ls1/norm2/mlp/ls2); "
            f"{type(model).__name__} has none"
        )
    n = len(model_blocks)
    for i in blocks:
        if not -n <= int(i) < n:
            raise ValueError(
                f"remove_skip.blocks: block {i} does not exist; the model has blocks 0..{n - 1}"
            )
        blk = model_blocks[int(i)]
        blk.__class__ = _no_skip_class(type(blk), frozenset(branches))
    return model


def apply_surgery(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Every architecture change a model spec asks for (currently `remove_skip`)."""
    rs = spec.get("remove_skip")
    if rs:
        remove_skip_connections(model, rs["blocks"], rs.get("branches", BRANCHES))
    return model
