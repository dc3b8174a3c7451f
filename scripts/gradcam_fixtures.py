#!/usr/bin/env python3
"""Generates tests/fixtures/gradcam.json, the PyTorch reference that tests/gradcam.rs checks cxr's
Grad-CAM, Grad-CAM++ and HiResCAM against. CI never runs this script; it reads the fixture.

Run from the repository root with a Python that has torch and torchvision:

    /work/venv-torch/bin/python scripts/gradcam_fixtures.py [OUT.json]

The model is torchvision's resnet18 (3 input channels, 14 classes) in eval mode, every
state_dict entry filled by the formula of scripts/model_fixtures.py (`fill`, `uniform`), the
input x [2, 3, 128, 128] = input_values(seed 11). The target activation A is layer4's output
tensor [2, 512, 4, 4], retained with `retain_grad()`; G = dA of sum_i logit[i, c_i] for the
targets below (one backward per round, each image at most once per round, as cxr does):

    round 0: image 0 class 3, image 1 class 11
    round 1: image 0 class 7

From PyTorch's A and G, the maps are computed as pytorch-grad-cam defines them:

    gradcam    w_k = mean_hw G;                                  cam = sum_k w_k A_k
    gradcam++  a = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6), 0 where G == 0
               w_k = sum_hw a relu(G);                           cam = sum_k w_k A_k
    hirescam   cam = sum_k G_k A_k
    then relu(cam); `gradcam_norelu` keeps the sign.

Everything runs in float32 (stored) and float64; the float32-vs-float64 gap per map is stored
(`torch_f32_vs_f64`, max|a - b| / max|b|) so the Rust test can show it next to its own error.
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_fixtures import f32, fill, input_values  # noqa: E402  (same formulas as golden_models)

SHAPE = [2, 3, 128, 128]
SEED = 11
ROUNDS = [[(0, 3), (1, 11)], [(0, 7)]]
CLASSES = 14


def layer4_and_logits(model, x):
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    h = model.layer3(model.layer2(model.layer1(h)))
    a = model.layer4(h)
    a.retain_grad()
    logits = model.fc(torch.flatten(model.avgpool(a), 1))
    return a, logits


def cams(a, g, relu=True):
    """a, g: [K, h, w] for one image. Returns every method's map [h, w]."""
    out = {}
    w = g.mean(dim=(1, 2))
    out["gradcam"] = (w[:, None, None] * a).sum(0)
    g2, g3 = g * g, g * g * g
    sum_a = a.sum(dim=(1, 2))
    alpha = g2 / (2 * g2 + sum_a[:, None, None] * g3 + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w_pp = (alpha * torch.clamp(g, min=0)).sum(dim=(1, 2))
    out["gradcam++"] = (w_pp[:, None, None] * a).sum(0)
    out["hirescam"] = (g * a).sum(0)
    signed = out["gradcam"].clone()
    out = {k: torch.clamp(v, min=0) for k, v in out.items()}
    out["gradcam_norelu"] = signed
    return out


def run(dtype):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=CLASSES).to(dtype)
    fill(model, dtype)
    model.eval()
    x = f32(input_values(SHAPE, SEED), dtype, SHAPE)
    a, logits = layer4_and_logits(model, x)
    maps = []
    for round_ in ROUNDS:
        seed = torch.zeros_like(logits)
        for i, c in round_:
            seed[i, c] = 1.0
        a.grad = None
        logits.backward(seed, retain_graph=True)
        for i, c in round_:
            for method, m in cams(a.detach()[i], a.grad[i]).items():
                maps.append(((i, c, method), m.detach()))
    return logits.detach(), a.shape, maps


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gradcam.json"
    torch.set_num_threads(2)
    logits32, shape, maps32 = run(torch.float32)
    logits64, _, maps64 = run(torch.float64)
    entries = []
    for ((key, m32), (_, m64)) in zip(maps32, maps64):
        i, c, method = key
        gap = rel_err(m32.double(), m64)
        print(f"image {i} class {c:2d} {method:15s} max {float(m64.abs().max()):.4g}  f32 vs f64 {gap:.2e}")
        entries.append({
            "image": i,
            "class": c,
            "method": method,
            "shape": list(m32.shape),
            "values": m32.double().flatten().tolist(),
            "torch_f32_vs_f64": gap,
        })
    fixture = {
        "generator": "scripts/gradcam_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "input_shape": SHAPE,
        "input_seed": SEED,
        "activation_shape": list(shape),
        "rounds": ROUNDS,
        "logits": logits32.double().flatten().tolist(),
        "maps": entries,
    }
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(fixture, f)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
