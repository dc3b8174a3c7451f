#!/usr/bin/env python3
"""Generates tests/fixtures/convert/, which tests/convert.rs checks cxr against. CI never runs
this script (it has no PyTorch); it reads the committed fixtures.

    python scripts/make_convert_fixtures.py

Four checkpoints are built with torchvision + torch.save in the layouts found in the wild:

    chexnet    CheXNet (arnoweng/CheXNet): DataParallel around a wrapper holding `densenet121`,
               so names are `module.densenet121.features...`, with the pre-0.4 DenseNet names
               (`norm.1`, `conv.2`, ...) and a Sequential(Linear(1024, 14), Sigmoid) head
               (`classifier.0.*`), saved as {'epoch', 'state_dict', 'best_loss', 'optimizer'} in
               model.pth.tar
    xrv        TorchXRayVision densenet121-res224-*: torchvision-shaped DenseNet121 with 1 input
               channel and 18 outputs, plus its `op_threshs` buffer and a non-tensor `pathologies`
               entry, saved as a bare state_dict
    resnet18   torchvision resnet18, 3 channels, 1000 classes, bare state_dict
    resnet50   torchvision resnet50, 3 channels, 1000 classes, {'model_state_dict': ...}

Each runs through scripts/convert_weights.py. Full converted weights are far too big to commit
(45-100 MB each), so the checkpoints' values follow a periodic formula: entry k of the torchvision
state_dict (num_batches_tracked excluded), flat index i, t = ((389 i + 101 k) mod 997) / 498 - 1,
scaled like an initialisation (conv/linear weights sqrt(6 / fan_in) t, batch-norm weights
1 + 0.1 t, biases and running means 0.1 t, running variances 1 + 0.5 t^2). Data with a period of
997 floats deflates about 500:1, so the *converter's actual output files* are committed gzipped
(`CASE.safetensors.gz`) and the Rust test loads exactly what the converter wrote.

For each case `CASE.json` records the converted header (name, dtype, shape in file order), the
converter's cxr metadata, and PyTorch's float32 eval-mode logits of torchvision's model (loaded
strictly from the converted file) on the input x[i] = ((7 i) mod 101) / 100, shape [1, C, 64, 64].

The script also checks, without writing anything, that the converter maps a whole pickled
module, and that it refuses a checkpoint with an unmappable name.
"""

import gzip
import math
import json
import os
import sys
import tempfile

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_weights as cw  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "convert")
SIZE = 64


def periodic(k, n):
    """Multiples of 1/16 in [-1, 1], period 257 in i: few distinct bytes, long repeats."""
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 89 + k * 101) % 257) % 33 - 16).double() / 16.0


def fill(model):
    """Overwrites every state_dict entry (except num_batches_tracked) with the formula."""
    k = 0
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            v = periodic(k, t.numel()).reshape(t.shape)
            if name.endswith("running_mean") or name.endswith("bias"):
                v = v / 8
            elif name.endswith("running_var"):
                v = 1.0 + v * v / 2
            elif name.endswith("weight") and t.dim() == 1:
                v = 1.0 + v / 8
            elif name.endswith("weight"):
                # sqrt(6 / fan_in) rounded to a power of two, so values stay exact with few bits
                v = 2.0 ** round(math.log2((6.0 / (t.numel() // t.shape[0])) ** 0.5)) * v
            else:
                raise ValueError(name)
            t.copy_(v.to(t.dtype))
            k += 1
    return model


def torchvision_model(arch, channels, classes):
    m = getattr(torchvision.models, arch)(weights=None, num_classes=classes)
    if channels != 3:
        if arch.startswith("densenet"):
            m.features.conv0 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        else:
            m.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return m


def old_densenet_names(sd):
    out = {}
    for k, v in sd.items():
        for a, b in (("norm1", "norm.1"), ("relu1", "relu.1"), ("conv1", "conv.1"), ("norm2", "norm.2"),
                     ("conv2", "conv.2")):
            if ".denselayer" in k:
                k = k.replace(f".{a}.", f".{b}.")
        out[k] = v
    return out


def make_chexnet(path):
    m = fill(torchvision_model("densenet121", 3, 14))
    sd = old_densenet_names(m.state_dict())
    sd = {("module.densenet121." + k).replace(".classifier.", ".classifier.0."): v for k, v in sd.items()}
    torch.save({"epoch": 7, "state_dict": sd, "best_loss": 0.1517, "optimizer": {"param_groups": [{"lr": 1e-4}]}},
               path)
    return "densenet121", 3, 14


def make_xrv(path):
    m = fill(torchvision_model("densenet121", 1, 18))
    sd = dict(m.state_dict())
    sd["op_threshs"] = torch.linspace(0.05, 0.6, 18)
    sd["pathologies"] = list(cw.XRV_LABELS)
    torch.save(sd, path)
    return "densenet121", 1, 18


def make_resnet18(path):
    torch.save(fill(torchvision_model("resnet18", 3, 1000)).state_dict(), path)
    return "resnet18", 3, 1000


def make_resnet50(path):
    torch.save({"model_state_dict": fill(torchvision_model("resnet50", 3, 1000)).state_dict(), "epoch": 1}, path)
    return "resnet50", 3, 1000


def input_x(channels):
    n = channels * SIZE * SIZE
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 7) % 101).double() / 100.0).float().reshape(1, channels, SIZE, SIZE)


def check_extra_paths(tmp):
    """A whole pickled module converts; an unmappable name is refused."""
    m = fill(torchvision_model("resnet18", 3, 14))
    p = os.path.join(tmp, "whole.pt")
    torch.save(torch.nn.DataParallel(m), p)
    tensors, meta, _ = cw.convert(p, log=lambda s: None)
    assert meta["architecture"] == "resnet18" and meta["num_classes"] == 14, meta
    assert torch.equal(tensors["layer3.1.bn2.running_var"], m.state_dict()["layer3.1.bn2.running_var"])
    sd = dict(m.state_dict())
    sd["layer9.weird"] = torch.zeros(3)
    p = os.path.join(tmp, "bad.pt")
    torch.save(sd, p)
    try:
        cw.convert(p, log=lambda s: None)
    except cw.ConvertError as e:
        assert "layer9.weird" in str(e), e
    else:
        raise AssertionError("unmappable checkpoint was accepted")
    print("extra paths: whole pickled DataParallel module converts; unmappable name refused")


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = {"chexnet": make_chexnet, "xrv": make_xrv, "resnet18": make_resnet18, "resnet50": make_resnet50}
    with tempfile.TemporaryDirectory() as tmp:
        check_extra_paths(tmp)
        for case, make in cases.items():
            src = os.path.join(tmp, f"{case}.pth.tar")
            arch, channels, classes = make(src)
            dst = os.path.join(tmp, f"{case}.safetensors")
            print(f"== {case}")
            assert cw.main([src, dst]) == 0
            with safe_open(dst, "pt") as f:
                meta = json.loads(f.metadata()["cxr"])
            with open(dst, "rb") as f:
                raw = f.read()
            n = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8:8 + n])
            header.pop("__metadata__", None)
            entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
            assert meta["architecture"] == arch and meta["in_channels"] == channels and meta["num_classes"] == classes
            # PyTorch's reference: torchvision's model loaded strictly from the converted file.
            model = torchvision_model(arch, channels, classes)
            missing, unexpected = model.load_state_dict(load_file(dst), strict=False)
            assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
            model.eval()
            with torch.no_grad():
                logits = model(input_x(channels))
            fixture = {
                "case": case,
                "architecture": arch,
                "in_channels": channels,
                "num_classes": classes,
                "metadata": meta,
                "header": [[k, v["dtype"], v["shape"]] for k, v in entries],
                "input_shape": [1, channels, SIZE, SIZE],
                "logits": [round(float(v), 8) for v in logits.flatten()],
            }
            with open(os.path.join(OUT, f"{case}.json"), "w") as f:
                json.dump(fixture, f, separators=(",", ":"))
                f.write("\n")
            # gzip twice: the first pass's output is itself periodic and shrinks another 3-10x.
            packed = gzip.compress(gzip.compress(raw, 9, mtime=0), 9, mtime=0)
            with open(os.path.join(OUT, f"{case}.safetensors.gz.gz"), "wb") as g:
                g.write(packed)
    total = 0
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        total += size
        print(f"{name:32} {size:>9} bytes")
    print(f"{'total':32} {total:>9} bytes")
    assert total < 2_000_000, "fixtures must stay under 2 MB"


if __name__ == "__main__":
    main()
