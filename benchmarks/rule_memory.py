"""Peak memory of every rule that runs a model vs a bare forward pass of the same model at the same batch.

One row per (rule, model): the rule's package entry point (the function its scripts/*.py calls) runs on one
minibatch of `--batch` images, and its peak memory is compared with a bare `model(x)` under
`torch.inference_mode()` at the same batch — for the ERF rule, which needs gradients, with a bare forward plus
one backward of a scalar to the input (`torch.autograd.grad(model(x).sum(), x)`). The criterion is

    rule peak ≤ 1.25 × (bare peak + allowance)

where the allowance is what the rule must hold by design, computed from shapes (printed per row).

Every measurement runs in a fresh subprocess, so peaks never mix. The model is built as the rules build it
(`seelike.models.load.create_model`: random timm weights, fused attention OFF — every rule's model is loaded
that way, so the bare forward is the unfused one too), and images come through the package's own loading path
(`seelike.data.loader.make_loader` over scikit-learn's digits, upsampled by timm's eval transform to the model's
input size); the memory of one image batch is part of both the bare and the rule measurement.

Memory:
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the allocation at reset.
- CPU: the kernel's exact high-water mark of the resident set (VmHWM in /proc/self/status) after resetting it
  to the current RSS (`echo 5 > /proc/self/clear_refs`) once imports, model construction and the sample list are
  done; the peak above that baseline is reported. A kernel high-water mark misses no short spike, unlike
  sampling with psutil, and resetting it excludes import/construction transients, which
  `resource.getrusage().ru_maxrss` (not resettable) cannot. Where clear_refs is not writable the script falls back
  to ru_maxrss − baseline RSS (said in the output). glibc is run with `MALLOC_MMAP_THRESHOLD_=131072`, so every
  tensor buffer ≥ 128 KiB is its own mapping and is returned to the kernel when freed: RSS then follows live
  tensor bytes (as CUDA's allocated bytes do) instead of heap fragmentation (`--malloc-default` turns this off).

    python benchmarks/rule_memory.py --models vit_small_patch16_224 resnet50 --batch 128 --image-size 224
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LIMIT = 1.25
RULES = (
    "cache",
    "attention_distance",
    "head_subset_cka",
    "erf",
    "skip_stats",
    "probe_features",
    "localisation",
)
VIT_ONLY = {"attention_distance", "head_subset_cka"}
BASELINE = {"erf": "forward_backward"}  # every other rule: "forward"
F32 = 4
F64 = 8


# ------------------------------------------------------------------------------------------- memory probes
class PeakMeter:
    """Peak bytes above a baseline taken at `start()` (see the module docstring for the method)."""

    def __init__(self, device):
        self.device = device
        self.method = ""

    def start(self) -> None:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "cuda max_memory_allocated"
            return
        self.base = _status_kib("VmRSS") * 1024
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM (reset)"
        except OSError:
            self.method = "ru_maxrss (not resettable)"

    def peak(self) -> int:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated() - self.base)
        if self.method.startswith("VmHWM"):
            hwm = _status_kib("VmHWM") * 1024
        else:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return int(hwm - self.base)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# ------------------------------------------------------------------------------------------- worker side
def _setup(args) -> dict[str, Any]:
    """Model, sample list, dataset config and loaders, built before the baseline is taken."""
    import torch

    from seelike.data.samples import build_samples, write_samples
    from seelike.models.load import create_model, resolve_data_config

    torch.manual_seed(0)
    device = torch.device(args.device)
    kwargs = {"img_size": args.image_size} if "vit" in args.model else {}
    spec = {"name": args.model, "arch": args.model, "source": "train", "kwargs": kwargs}
    model = create_model(spec).eval().to(device)
    dc = resolve_data_config(model)
    dc["input_size"] = [3, args.image_size, args.image_size]
    info = {**spec, "data_config": dc, "family": None}
    work = Path(args.workdir)
    # digits has 1797 images: 90% test leaves 18 train images per class for the probes' k-shot sets
    dataset_cfg = {"source": "digits", "image_size": 32, "test_fraction": 0.9}
    samples = work / "samples.csv"
    write_samples(build_samples(dataset_cfg, seed=0), samples)
    return {
        "device": device,
        "model": model,
        "info": info,
        "dataset_cfg": dataset_cfg,
        "samples": samples,
        "work": work,
    }


def _loader(env, n: int):
    from seelike.data.loader import make_loader

    return make_loader(
        env["samples"],
        env["dataset_cfg"],
        env["info"]["data_config"],
        split="test",
        n_images=n,
        batch_size=n,
    )


def _run(args) -> dict[str, Any]:
    import torch

    env = _setup(args)
    model, device, b = env["model"], env["device"], args.batch
    meter = PeakMeter(device)
    out: dict[str, Any] = {"rule": args.worker, "model": args.model, "batch": b}
    t0 = time.time()
    meter.start()
    allowance, what = 0, "none"
    if args.worker == "forward":
        x, _ = next(iter(_loader(env, b)))
        with torch.inference_mode():
            model(x.to(device))
    elif args.worker == "forward_fused":
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = True
        x, _ = next(iter(_loader(env, b)))
        with torch.inference_mode():
            model(x.to(device))
    elif args.worker == "forward_backward":
        x, _ = next(iter(_loader(env, b)))
        x = x.to(device).requires_grad_(True)
        torch.autograd.grad(model(x).sum(), x)
    else:
        allowance, what = RULE_FUNCS[args.worker](env, b)
    out["seconds"] = round(time.time() - t0, 1)
    out["peak"] = meter.peak()
    out["method"] = meter.method
    out["allowance"] = int(allowance)
    out["allowance_what"] = what
    return out


def _rule_cache(env, b):
    from seelike.analyses.cache import build_cache
    from seelike.models.taps import discover_taps

    build_cache(
        env["model"], env["info"], env["samples"], env["dataset_cfg"], env["work"] / "cache",
        n_images=b, batch_size=b, split="test", device=env["device"],
    )  # fmt: skip
    t = len(discover_taps(env["model"]))
    # the batch's packed Grams (upper triangle with the diagonal, fp32) and one full Gram being packed
    return t * (b * (b + 1) // 2) * F32 + b * b * F32, (
        f"packed Grams: {t} taps × {b}·{b + 1}/2 × 4 B + one {b}² Gram"
    )


def _rule_attention(env, b):
    from seelike.analyses.attention import attention_distances

    res = attention_distances(env["model"], _loader(env, b), n_images=b, device=env["device"])
    h = max(res.num_heads)
    # (the probabilities themselves are in the bare forward: every rule's model runs unfused attention)
    return 2 * b * h * F64, f"per-image float64 distances of one block: 2 × {b} × {h} heads × 8 B"


def _rule_head_subsets(env, b):
    import numpy as np

    from seelike.analyses.attention import attention_modules
    from seelike.analyses.head_subsets import auto_subset_size, group_heads, head_subset_cka

    heads = int(attention_modules(env["model"])[0][1].num_heads)
    groups = group_heads(np.arange(heads, dtype=float), auto_subset_size(heads))
    t = 5  # the paper's default CNN taps (3 + 2 unit outputs); their Grams stand in for the CNN cache
    rng = np.random.default_rng(0)
    a = rng.standard_normal((t, b, 64)).astype(np.float32)
    cnn = [np.einsum("tnd,tmd->tnm", a, a)]
    head_subset_cka(env["model"], _loader(env, b), cnn, groups, block=0, device=env["device"])
    s = len(groups)
    return (s + t) * b * b * (F32 + F64), (
        f"Grams of {s} subsets + {t} CNN taps, fp32 and float64 U-centred: ({s}+{t}) × {b}² × 12 B"
    )


def _rule_erf(env, b):
    from seelike.analyses.receptive_field import auto_erf_taps, effective_receptive_fields
    from seelike.models.taps import discover_taps, tap_family

    model = env["model"]
    all_taps, family = discover_taps(model), tap_family(model)
    taps = list(
        {t.name: t for r in ("post", "pre") for t in auto_erf_taps(all_taps, family, r)}.values()
    )
    res = effective_receptive_fields(model, _loader(env, b), taps, n_images=b, device=env["device"])
    h, w = res.img_hw
    # one input gradient at a time, its (B, H, W) channel sum, and a float64 (H, W) map per tap
    return b * 3 * h * w * F32 + b * h * w * F32 + len(taps) * h * w * F64, (
        f"input gradient + its channel sum ({b}×3×{h}×{w}×4 B + {b}×{h}×{w}×4 B), {len(taps)} float64 maps"
    )


def _rule_skip(env, b):
    from seelike.analyses.skip import skip_statistics

    stats = skip_statistics(env["model"], _loader(env, b), n_images=b, device=env["device"])
    # per-unit (B, positions) float64 ratio, cosine and norms before they are summed
    pos = max(len(a.n) for a in stats.accs.values())
    if stats.family != "vit":
        pos = _largest_map_positions(env)
    return 4 * b * pos * F64, f"per-position float64 stats of one unit: 4 × {b} × {pos} × 8 B"


def _largest_map_positions(env) -> int:
    import torch

    from seelike.models.taps import discover_taps, record_taps

    hw = [0]

    def cb(_t, a):
        if a.dim() == 4:
            hw[0] = max(hw[0], a.shape[2] * a.shape[3])

    branches = [t for t in discover_taps(env["model"]) if t.kind == "branch"]  # the residual units
    with record_taps(env["model"], branches, cb), torch.inference_mode():
        env["model"](
            torch.zeros(1, *env["info"]["data_config"]["input_size"], device=env["device"])
        )
    return hw[0]


def _rule_probes(env, b):
    import math

    from seelike.analyses.probes import extract_probe_features, plan_probe_features
    from seelike.data.loader import make_loader, read_samples

    k = min(
        10, max(1, b // 20)
    )  # k-shot train images of 10 classes, the rest test images: one batch
    cfg = {"shots": [k], "n_test": b - 10 * k, "tap_kinds": ["embed", "stem", "block", "out"],
           "token_taps": "last", "aggregations": None, "batch_size": b}  # fmt: skip
    plan = plan_probe_features(env["model"], read_samples(env["samples"]), cfg, "bench")
    loader = make_loader(
        plan.rows, env["dataset_cfg"], env["info"]["data_config"], split=None, batch_size=b
    )
    meta = extract_probe_features(
        env["model"], loader, len(plan.rows), env["work"] / "probes", plan.taps, plan.token_taps,
        device=env["device"],
    )  # fmt: skip
    pool = meta["pool_hw"]
    dims = 0
    for t in meta["taps"]:
        shape = t["shape"]
        for agg in t["aggregations"] + (["token"] if t["token"] else []):
            if agg == "pool_final":
                dims += shape[0] * pool[0] * pool[1]
            elif agg == "flat":
                dims += math.prod(shape)
            elif agg == "token":
                dims += (
                    math.prod(shape)
                    if len(shape) == 3
                    else (shape[0] - meta["num_prefix_tokens"]) * shape[1]
                )
            else:
                dims += shape[-1] if len(shape) == 2 else shape[0]
    # the batch's features in the write buffer and in the memory-mapped output files (resident on CPU)
    return 2 * b * dims * F32, f"features: 2 × {b} × {dims} × 4 B (buffer + mapped output)"


def _rule_localisation(env, b):

    from seelike.analyses.localisation import localisation_maps
    from seelike.data.loader import make_loader

    loader = make_loader(
        env["samples"], env["dataset_cfg"], env["info"]["data_config"], split="test", n_images=b,
        batch_size=b,
    )  # fmt: skip
    meta = localisation_maps(env["model"], loader, device=env["device"]).fields()
    g = meta["grid_hw"][0] * meta["grid_hw"][1]
    tap_bytes = _tap_bytes(env, meta["tap"], b)
    h, w = meta["img_hw"]
    patch = b * 3 * h * w * F32  # the input cut into its grid's patches
    grams = 2 * g * b * b * F32 + 2 * g * (b * (b - 1) // 2) * F64
    return tap_bytes + 2 * patch + grams, (
        f"tap activation {tap_bytes / 2**20:.0f} MiB + input patches 2 × {patch / 2**20:.0f} MiB + Grams of "
        f"{g} tokens and {g} patches (fp32 n², float64 n(n−1)/2)"
    )


def _tap_bytes(env, name: str, b: int) -> int:
    import math

    import torch

    from seelike.models.taps import discover_taps, record_taps

    size = [0]
    taps = [t for t in discover_taps(env["model"]) if t.name == name]

    def cb(_t, a):
        size[0] = math.prod(a.shape[1:]) * a.element_size()

    with record_taps(env["model"], taps, cb), torch.inference_mode():
        env["model"](
            torch.zeros(1, *env["info"]["data_config"]["input_size"], device=env["device"])
        )
    return size[0] * b


RULE_FUNCS = {
    "cache": _rule_cache,
    "attention_distance": _rule_attention,
    "head_subset_cka": _rule_head_subsets,
    "erf": _rule_erf,
    "skip_stats": _rule_skip,
    "probe_features": _rule_probes,
    "localisation": _rule_localisation,
}


# ------------------------------------------------------------------------------------------- driver side
def _measure(args, model: str, what: str) -> dict[str, Any]:
    env = dict(os.environ)
    if not args.malloc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    with tempfile.TemporaryDirectory(prefix="rule_memory_") as work:
        cmd = [
            sys.executable, __file__, "--worker", what, "--model", model, "--batch", str(args.batch),
            "--image-size", str(args.image_size), "--device", args.device, "--workdir", work,
        ]  # fmt: skip
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=REPO)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"{what} on {model} failed (exit {p.returncode})")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(
        f"  {model} {what}: peak {res['peak'] / 2**20:.0f} MiB in {res['seconds']} s",
        file=sys.stderr,
    )
    return res


def _mib(v: float) -> str:
    return f"{v / 2**20:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "resnet50"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    ap.add_argument("--fused-reference", action="store_true",
                    help="also measure a bare forward with fused attention (ViTs; informational)")  # fmt: skip
    ap.add_argument(
        "--malloc-default", action="store_true", help="keep glibc's default mmap threshold"
    )
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_run(args)))
        return 0

    rows = []
    for model in args.models:
        is_vit = "vit" in model or "deit" in model
        rules = [r for r in args.rules if is_vit or r not in VIT_ONLY]
        bases = {}
        for kind in sorted({BASELINE.get(r, "forward") for r in rules}):
            bases[kind] = _measure(args, model, kind)
        if args.fused_reference and is_vit:
            bases["forward_fused"] = _measure(args, model, "forward_fused")
        for rule in rules:
            r = _measure(args, model, rule)
            base = bases[BASELINE.get(rule, "forward")]
            r["bare"] = base["peak"]
            r["bare_kind"] = "fwd+bwd" if BASELINE.get(rule) else "forward"
            r["ratio"] = r["peak"] / (r["bare"] + r["allowance"])
            rows.append(r)
        if "forward_fused" in bases:
            f = bases["forward_fused"]
            rows.append({**f, "rule": "(bare forward, fused attention)", "bare": bases["forward"]["peak"],
                         "bare_kind": "forward", "allowance": 0, "allowance_what": "reference only",
                         "ratio": f["peak"] / bases["forward"]["peak"]})  # fmt: skip
    device = args.device
    print(
        f"\nDevice: {device}; memory: {rows[0]['method']}; batch {args.batch}; {args.image_size} px\n"
    )
    print("| rule | model | batch | bare (MiB) | allowance (MiB) | allowance: what | rule peak (MiB) | "
          "peak / bare | ratio | ≤ 1.25 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for r in rows:
        ref = r["rule"].startswith("(")
        passed = r["ratio"] <= LIMIT
        ok &= passed or ref
        print(
            f"| {r['rule']} | {r['model']} | {r['batch']} | {_mib(r['bare'])} ({r['bare_kind']}) | "
            f"{_mib(r['allowance'])} | {r['allowance_what']} | {_mib(r['peak'])} | "
            f"{r['peak'] / r['bare']:.2f} | {r['ratio']:.2f} | "
            f"{'—' if ref else ('pass' if passed else '**FAIL**')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
