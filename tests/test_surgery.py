"""Skip-connection removal (Fig 8): the changed forward, the taps it keeps, errors, and the round trip."""

from __future__ import annotations

import pytest
import torch

from seelike.models.load import ModelConfigError, create_model
from seelike.models.surgery import remove_skip_connections
from seelike.models.taps import discover_taps, record_taps

VIT = {
    "source": "train",
    "arch": "vit_tiny_patch16_224",
    "kwargs": {
        "img_size": 16,
        "patch_size": 4,
        "depth": 3,
        "embed_dim": 32,
        "num_heads": 2,
        "num_classes": 5,
    },
}


def _reference_forward(model, x, block: int, dropped: set[str]):
    """The ViT forward written out from its parts, with the residual sums of `block` in `dropped` left out."""
    h = model._pos_embed(model.patch_embed(x))
    for i, b in enumerate(model.blocks):
        a = b.ls1(b.attn(b.norm1(h)))
        h = a if (i == block and "attn" in dropped) else h + a
        m = b.ls2(b.mlp(b.norm2(h)))
        h = m if (i == block and "mlp" in dropped) else h + m
    return model.forward_head(model.norm(h))


@pytest.mark.parametrize("branches", [["attn", "mlp"], ["attn"], ["mlp"]])
def test_forward_matches_written_out_reference(branches):
    torch.manual_seed(0)
    base = create_model(VIT).eval()
    cut = create_model({**VIT, "remove_skip": {"blocks": [1], "branches": branches}}).eval()
    cut.load_state_dict(base.state_dict())
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = _reference_forward(base, x, 1, set(branches))
        assert torch.allclose(cut(x), want, atol=1e-6)
        assert torch.allclose(base(x), _reference_forward(base, x, -99, set()), atol=1e-6)
        assert not torch.allclose(cut(x), base(x), atol=1e-3), (
            "removing a skip must change the output"
        )
    assert type(cut.blocks[0]) is type(base.blocks[0]) and type(cut.blocks[2]) is type(
        base.blocks[2]
    )


def test_taps_keep_their_names_and_see_the_cut_sum():
    torch.manual_seed(0)
    model = create_model({**VIT, "remove_skip": {"blocks": [-2], "branches": ["attn"]}}).eval()
    taps = discover_taps(model)
    assert [t.name for t in taps] == [t.name for t in discover_taps(create_model(VIT))]
    seen = {}
    wanted = {"blocks.1.attn", "blocks.1.attn_res", "blocks.0.block"}
    with (
        torch.no_grad(),
        record_taps(
            model,
            [t for t in taps if t.name in wanted],
            lambda t, a: seen.__setitem__(t.name, a.clone()),
        ),
    ):
        model(torch.randn(2, 3, 16, 16))
    # Without the skip the post-attention "residual sum" is the attention branch alone.
    assert torch.equal(seen["blocks.1.attn_res"], seen["blocks.1.attn"])
    assert not torch.allclose(
        seen["blocks.1.attn_res"], seen["blocks.1.attn"] + seen["blocks.0.block"]
    )


def test_round_trip_through_model_json(tmp_path):
    from safetensors.torch import save_file

    from seelike.io import write_json
    from seelike.models.load import load_model

    spec = {**VIT, "remove_skip": {"blocks": [0], "branches": ["attn", "mlp"]}}
    torch.manual_seed(1)
    model = create_model(spec).eval()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "weights.safetensors"),
    )
    write_json(tmp_path / "model.json", {"name": "cut", **spec, "weights": "weights.safetensors"})
    loaded, _ = load_model(tmp_path / "model.json")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_errors_name_the_problem():
    with pytest.raises(ModelConfigError, match="VisionTransformer"):
        create_model(
            {
                "source": "train",
                "arch": "resnet18",
                "kwargs": {"num_classes": 3},
                "remove_skip": {"blocks": [0]},
            }
        )
    with pytest.raises(ModelConfigError, match="blocks 0..2"):
        create_model({**VIT, "remove_skip": {"blocks": [3]}})
    with pytest.raises(ValueError, match="subset"):
        remove_skip_connections(create_model(VIT), [0], ["ffn"])
