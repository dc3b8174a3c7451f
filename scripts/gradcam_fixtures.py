#!/usr/bin/env python3
"""Generates tests/fixtures/gradcam.json, the PyTorch reference that tests/gradcam.rs checks cxr's
Grad-CAM, Grad-CAM++ and HiResCAM against. CI never runs this script; it reads the fixture.

Run from the repository root with a Python that has torch and torchvision:

    /work/venv-torch/bin/python scripts/gradcam_fixtures.py              # resnet18 -> tests/fixtures/gradcam.json
    /work/venv-torch/bin/python scripts/gradcam_fixtures.py densenet121  # -> tests/fixtures/gradcam_densenet121.json

densenet121 is the same recipe on torchvision's densenet121 with input [2, 3, 96, 96]; its target
is `features.norm5` after the ReLU that torchvision's forward applies (relu(features(x))), [2,
1024, 3, 3].

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

MODELS = {
    # key: (constructor, input shape, target layer name, output file)
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=14), [2, 3, 128, 128], "layer4", "tests/fixtures/gradcam.json"),
    "densenet121": (
        lambda: torchvision.models.densenet121(num_classes=14),
        [2, 3, 96, 96],
        "features.norm5",
        "tests/fixtures/gradcam_densenet121.json",
    ),
}
SEED = 11
ROUNDS = [[(0, 3), (1, 11)], [(0, 7)]]
CLASSES = 14


def target_and_logits(key, model, x):
    if key == "resnet18":
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        a = model.layer4(model.layer3(model.layer2(model.layer1(h))))
        a.retain_grad()
        return a, model.fc(torch.flatten(model.avgpool(a), 1))
    a = F.relu(model.features(x))
    a.retain_grad()
    return a, model.classifier(torch.flatten(F.adaptive_avg_pool2d(a, (1, 1)), 1))


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


def run(key, dtype):
    ctor, shape, _, _ = MODELS[key]
    torch.manual_seed(0)
    model = ctor().to(dtype)
    fill(model, dtype)
    model.eval()
    x = f32(input_values(shape, SEED), dtype, shape)
    a, logits = target_and_logits(key, model, x)
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
    key = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    _, in_shape, layer, out_path = MODELS[key]
    torch.set_num_threads(2)
    logits32, shape, maps32 = run(key, torch.float32)
    logits64, _, maps64 = run(key, torch.float64)
    entries = []
    for ((target, m32), (_, m64)) in zip(maps32, maps64):
        i, c, method = target
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
        "architecture": key,
        "layer": layer,
        "input_shape": in_shape,
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
