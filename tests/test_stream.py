"""The streaming layer every analysis uses (seelike.analyses.stream) and exact fp32 applied inside the package."""

from __future__ import annotations

import os

import torch
from tiny_models import tiny_vit

from seelike.analyses.stream import n_batches_of, stream

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_stream_stops_after_n_images_taking_a_partial_last_batch():
    batches = [
        (torch.arange(4.0), torch.arange(4)),
        (torch.arange(4.0), torch.arange(4)),
        (torch.ones(4), None),
    ]
    got = list(stream(batches, "cpu", n_images=6))
    assert [b.index for b in got] == [0, 1] and [len(b.x) for b in got] == [4, 2]
    assert got[1].y.tolist() == [0, 1]  # labels cut with their images
    bare = list(stream([torch.zeros(3, 2), torch.zeros(3, 2)]))  # images without labels
    assert [len(b.x) for b in bare] == [3, 3] and bare[0].y is None


def test_progress_is_reported_after_the_consumer_is_done_with_each_batch():
    events = []
    loader = torch.utils.data.DataLoader(torch.arange(10.0), batch_size=4)
    assert n_batches_of(loader) == 3 and n_batches_of(loader, n_images=5) == 2
    for b in stream(
        loader, n_images=5, progress=lambda r, i, n: events.append(("p", r, i, n)), repeat=2
    ):
        events.append(("use", b.index))
    assert events == [("use", 0), ("p", 2, 0, 2), ("use", 1), ("p", 2, 1, 2)]
    events.clear()
    for b in stream(loader, progress=lambda r, i, n: events.append((i, n)), skip={0, 2}):
        assert b.index == 1
    assert events == [(1, 3)]  # skipped batches are neither yielded nor reported
    assert n_batches_of(iter([1, 2])) == -1


# ------------------------------------------------------------------------------------------- exact fp32 inside
def _tiny_vit():
    return tiny_vit(num_classes=4)


def _entries(tmp_path):
    from seelike.analyses.attention import attention_distances
    from seelike.analyses.localisation import localisation_maps
    from seelike.analyses.probes import extract_probe_features
    from seelike.analyses.receptive_field import auto_erf_taps, effective_receptive_fields
    from seelike.analyses.skip import skip_statistics
    from seelike.api import compare
    from seelike.models.taps import discover_taps

    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    return {
        "attention": lambda m: attention_distances(m, [x]),
        "skip": lambda m: skip_statistics(m, [x]),
        "erf": lambda m: effective_receptive_fields(m, [x], auto_erf_taps(discover_taps(m), "vit")),
        "localisation": lambda m: localisation_maps(m, [(x, y)]),
        "probes": lambda m: extract_probe_features(
            m, [(x, y)], 4, tmp_path / "f", discover_taps(m)[-2:]
        ),
        "compare": lambda m: compare(m, None, x, device="cpu"),
    }


def test_every_analysis_runs_in_exact_fp32_without_the_caller_asking(tmp_path):
    model = _tiny_vit()
    seen = []

    def hook(*_):
        seen.append(
            (
                torch.get_float32_matmul_precision(),
                torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.flash_sdp_enabled()
                or torch.backends.cuda.mem_efficient_sdp_enabled(),
            )
        )

    model.blocks[0].register_forward_hook(hook)
    old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")  # TF32 allowed outside, as a notebook may have it
    torch.backends.cudnn.allow_tf32 = True
    try:
        for name, run in _entries(tmp_path).items():
            seen.clear()
            run(model)
            assert seen and set(seen) == {("highest", False, False)}, name
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


def test_fused_attention_under_exact_fp32_matches_the_unfused_path():
    """Models keep timm's fused attention; exact_fp32 computes it on SDPA's math backend, so activations equal
    the unfused path's to fp32 noise."""
    from seelike.device import exact_fp32
    from seelike.models.taps import discover_taps, record_taps

    model, x = _tiny_vit(), torch.randn(6, 3, 32, 32)
    taps = discover_taps(model)

    def acts(fused: bool) -> dict[str, torch.Tensor]:
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = fused
        out = {}
        with (
            exact_fp32(),
            torch.no_grad(),
            record_taps(model, taps, lambda t, a: out.__setitem__(t.name, a.clone())),
        ):
            model(x)
        return out

    fused, unfused = acts(True), acts(False)
    for name in unfused:
        torch.testing.assert_close(fused[name], unfused[name], rtol=1e-5, atol=1e-5)


def test_device_defaults_are_chosen_in_one_place():
    """`analysis_device`: the device asked for, else the model's, else cpu; `place_model` puts the model there
    in eval mode; analysis metadata: the analysis's own keys win over the caller's (`with_extra_meta`)."""
    from seelike.analyses.stream import with_extra_meta
    from seelike.device import analysis_device, place_model

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    assert analysis_device() == torch.device("cpu")
    assert analysis_device(None, model) == next(model.parameters()).device
    assert analysis_device(None, torch.nn.ReLU()) == torch.device("cpu")  # no parameters
    assert (
        analysis_device("cpu", model) == analysis_device(torch.device("cpu")) == torch.device("cpu")
    )
    assert analysis_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert place_model(model) == torch.device("cpu") and not model.training
    assert with_extra_meta({"model": "name", "x": 1}, {"model": {"id": 2}}) == {
        "model": {"id": 2},
        "x": 1,
    }
    assert with_extra_meta(None, {"a": 1}) == {"a": 1}
