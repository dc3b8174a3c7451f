#!/usr/bin/env python3
"""Converts a PyTorch checkpoint to a safetensors file with torchvision's parameter names, which
cxr loads (`tools train --pretrained OUT`, `tools info OUT`).

    python scripts/convert_weights.py IN OUT [--arch NAME] [--f16]

IN may be a `.pth`, `.pt` or `.pth.tar` holding
  * a bare state_dict,
  * a dict with the state_dict (or a whole model) under `state_dict`, `model_state_dict` or `model`
    (training checkpoints, CheXNet's `model.pth.tar`, jrzech/reproduce-chexnet's `checkpoint`),
  * a whole pickled nn.Module (TorchXRayVision's older `.pt` files).

Names are mapped to torchvision's:
  * prefixes `module.` (DataParallel), `densenet121.` (CheXNet wrappers) and `model.` are stripped,
    repeatedly, so `module.densenet121.features...` becomes `features...`;
  * the pre-0.4 torchvision DenseNet names CheXNet uses, `norm.1`, `relu.1`, `conv.1`, `norm.2`,
    `relu.2`, `conv.2`, become `norm1`, `relu1`, `conv1`, `norm2`, `relu2`, `conv2`;
  * a head that is a Linear inside a Sequential (`classifier.0.*`, `fc.0.*`: CheXNet's
    Linear + Sigmoid) becomes `classifier.*` / `fc.*`;
  * `num_batches_tracked` is dropped (cxr ignores it), and so are non-tensor entries and
    TorchXRayVision's extras (`op_threshs`, `upsample`, `pathologies`), each with a printed note.

The result is checked against torchvision's model of the architecture (given by --arch, or
inferred from the names): every name must exist with the same shape, except the stem's input
channels (1 for grey models) and the head's class count. Anything that cannot be mapped is an
error that lists the offending names; nothing is written then.

The file's `__metadata__` gets a `cxr` JSON entry (architecture, in_channels, num_classes and,
when recognised, labels: TorchXRayVision's 18 pathologies or CheXNet's 14 NIH findings in NIH
order), which `tools info OUT` prints. Tensors are written as float32, or float16 with --f16.

Loading a whole pickled model or a dict holding one runs Python code from the file (pickle):
convert only checkpoints you trust.
"""

import argparse
import json
import re
import sys

import torch

# CheXNet (arnoweng/CheXNet, jrzech/reproduce-chexnet): NIH ChestX-ray14 order.
NIH_LABELS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
# TorchXRayVision's xrv.datasets.default_pathologies, the output order of its 18-output models.
XRV_LABELS = [
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
    "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
]
ARCHS = ["resnet18", "resnet34", "resnet50", "densenet121"]
PREFIXES = ["module.", "densenet121.", "model."]
# Tensors some checkpoints carry that are not part of the torchvision model.
KNOWN_EXTRAS = {"op_threshs": "TorchXRayVision's operating-point thresholds"}
OLD_DENSENET = re.compile(r"\.(norm|relu|conv)\.([12])\.")


class ConvertError(Exception):
    pass


def load(path):
    """The checkpoint's state_dict (name -> value), and notes on how it was found."""
    notes = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # Whole pickled modules (and old training checkpoints holding one) need full unpickling.
        notes.append("file holds pickled objects beyond tensors: loaded with weights_only=False")
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                notes.append(f"state_dict taken from the checkpoint's '{key}' entry")
                obj = obj[key]
                break
        else:
            raise ConvertError(
                f"{path}: a dict without tensors and without a 'state_dict', 'model_state_dict' or "
                f"'model' entry (keys: {sorted(map(str, obj))[:20]})"
            )
    if isinstance(obj, torch.nn.Module):
        notes.append(f"whole pickled model ({type(obj).__name__}): using its state_dict()")
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, not a state_dict or model")
    return dict(obj), notes


def map_name(name):
    """torchvision's name for a checkpoint name, and what changed."""
    changes = []
    stripped = True
    while stripped:
        stripped = False
        for p in PREFIXES:
            if name.startswith(p):
                name = name[len(p):]
                changes.append(f"strip '{p}'")
                stripped = True
    new = OLD_DENSENET.sub(lambda m: f".{m.group(1)}{m.group(2)}.", name)
    if new != name:
        changes.append("old DenseNet name")
        name = new
    for head in ("classifier", "fc"):
        for suffix in ("weight", "bias"):
            if name == f"{head}.0.{suffix}":
                name = f"{head}.{suffix}"
                changes.append("Sequential head")
    return name, changes


def torchvision_shapes(arch):
    """name -> shape of torchvision's model (meta device: no memory, no initialisation)."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def infer_arch(names, shapes):
    if "features.conv0.weight" in names:
        return "densenet121" if "features.denseblock4.denselayer16.conv2.weight" in names else None
    if "conv1.weight" in names and "layer4.0.conv1.weight" in names:
        if "layer1.0.conv3.weight" in names:
            return "resnet50" if "layer3.5.conv1.weight" in names and "layer3.6.conv1.weight" not in names else None
        if "layer3.5.conv1.weight" in names:
            return "resnet34"
        if "layer3.2.conv1.weight" not in names:
            return "resnet18"
    return None


def convert(src, arch=None, f16=False, log=print, verbose=False):
    """Returns (tensors, metadata dict). Raises ConvertError on anything it cannot map."""
    state, notes = load(src)
    for n in notes:
        log(f"note: {n}")
    out, renamed, dropped = {}, [], []
    chexnet_like = False
    nbt = 0
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            dropped.append(f"{name} (a {type(value).__name__}, not a tensor)")
            continue
        new, changes = map_name(name)
        if new.endswith("num_batches_tracked"):
            nbt += 1
            continue
        if new in KNOWN_EXTRAS or new.split(".")[0] == "upsample":
            dropped.append(f"{name} ({KNOWN_EXTRAS.get(new, 'not part of the torchvision model')})")
            continue
        if "densenet121." in name or "classifier.0." in name:
            chexnet_like = True
        if new in out:
            raise ConvertError(f"two checkpoint tensors map to '{new}' (the second is '{name}')")
        if changes:
            renamed.append((name, new, changes))
        out[new] = value
    inferred = infer_arch(set(out), {k: v.shape for k, v in out.items()})
    if arch is None:
        if inferred is None:
            raise ConvertError(
                "cannot tell the architecture from the names (pass --arch one of "
                f"{', '.join(ARCHS)}); first names after mapping: {list(out)[:8]}"
            )
        arch = inferred
        log(f"architecture: {arch} (inferred from the names)")
    elif inferred is not None and inferred != arch:
        raise ConvertError(f"--arch {arch} given, but the names look like {inferred}")

    want = torchvision_shapes(arch)
    stem = "features.conv0.weight" if arch.startswith("densenet") else "conv1.weight"
    head = "classifier" if arch.startswith("densenet") else "fc"
    missing = [k for k in want if k not in out]
    unexpected = [k for k in out if k not in want]
    wrong = []
    for k in want:
        if k not in out:
            continue
        got, need = tuple(out[k].shape), want[k]
        if got == need:
            continue
        if k == stem and len(got) == 4 and got[0] == need[0] and got[2:] == need[2:]:
            continue  # input channels: 1 for grey models
        if k == f"{head}.weight" and len(got) == 2 and got[1] == need[1]:
            continue  # class count
        if k == f"{head}.bias" and len(got) == 1:
            continue
        wrong.append(f"{k}: checkpoint {list(got)}, torchvision {list(need)}")
    if missing or unexpected or wrong:
        lines = [f"cannot map the checkpoint onto torchvision's {arch}:"]
        for title, items in (("missing", missing), ("not in torchvision (unmapped)", unexpected),
                             ("wrong shape", wrong)):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
        raise ConvertError("\n".join(lines))

    in_channels = out[stem].shape[1]
    num_classes = out[f"{head}.weight"].shape[0]
    labels = []
    if arch == "densenet121" and num_classes == 18 and in_channels == 1:
        labels = XRV_LABELS
        log("labels: TorchXRayVision's 18 pathologies (1-channel, 18-output DenseNet121)")
    elif arch == "densenet121" and num_classes == 14 and chexnet_like:
        labels = NIH_LABELS
        log("labels: CheXNet's 14 NIH ChestX-ray14 findings, NIH order")

    # One line per kind of change with an example, then every name only when asked (--verbose).
    kinds = {}
    for old, new, changes in renamed:
        kinds.setdefault(", ".join(changes), []).append((old, new))
    for kind, pairs in kinds.items():
        log(f"renamed {len(pairs)} ({kind}): e.g. {pairs[0][0]} -> {pairs[0][1]}")
        if verbose:
            for old, new in pairs:
                log(f"  {old} -> {new}")
    if nbt:
        log(f"dropped {nbt} num_batches_tracked buffers (cxr ignores them)")
    for d in dropped:
        log(f"dropped: {d}")
    dtype = torch.float16 if f16 else torch.float32
    tensors = {}
    for k in want:  # torchvision's order
        v = out[k]
        if not v.is_floating_point():
            raise ConvertError(f"{k} has dtype {v.dtype}; weights must be floating point")
        tensors[k] = v.detach().to(dtype).contiguous()
    meta = {"format": 1, "architecture": arch, "in_channels": int(in_channels), "num_classes": int(num_classes)}
    if labels:
        meta["labels"] = labels
    return tensors, meta, {"renamed": len(renamed), "dropped": len(dropped) + nbt}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="PyTorch checkpoint (.pth, .pt, .pth.tar)")
    ap.add_argument("output", help="safetensors file to write")
    ap.add_argument("--arch", choices=ARCHS, help="architecture (default: inferred from the names)")
    ap.add_argument("--f16", action="store_true", help="write float16 (half the size)")
    ap.add_argument("--verbose", action="store_true", help="print every renamed name")
    args = ap.parse_args(argv)
    from safetensors.torch import save_file

    try:
        tensors, meta, summary = convert(args.input, args.arch, args.f16, verbose=args.verbose)
    except (ConvertError, FileNotFoundError) as e:
        print(f"convert_weights: {args.input}: {e}", file=sys.stderr)
        return 1
    save_file(tensors, args.output, metadata={"cxr": json.dumps(meta)})
    print(
        f"wrote {args.output}: {len(tensors)} tensors ({'f16' if args.f16 else 'f32'}), {meta['architecture']}, "
        f"{meta['in_channels']} input channel(s), {meta['num_classes']} classes; "
        f"{summary['renamed']} renamed, {summary['dropped']} dropped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
