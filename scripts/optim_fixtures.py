#!/usr/bin/env python3
"""Fixture for tests/optim.rs: parameters after 5 steps of torch.optim's SGD, Adam and AdamW.

Run from the repo root with a venv that has torch:
    /path/to/venv/bin/python scripts/optim_fixtures.py
Parameters and the gradient of each step come from formulas the Rust test computes too.
"""
import json
import math

import torch

N, STEPS = 7, 5


def param():
    return torch.tensor([0.5 * math.sin(0.7 * i + 0.1) for i in range(N)], dtype=torch.float32)


def grad(step):
    return torch.tensor([math.cos(0.3 * i + 1.1 * step) + 0.1 * step for i in range(N)], dtype=torch.float32)


CASES = {
    "sgd_momentum_nesterov_wd": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd_momentum_dampening": lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.8, dampening=0.3),
    "sgd_plain": lambda p: torch.optim.SGD([p], lr=0.2),
    "adam_l2": lambda p: torch.optim.Adam([p], lr=0.01, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.05),
}

out = {}
for name, make in CASES.items():
    p = param().requires_grad_(True)
    opt = make(p)
    for s in range(STEPS):
        p.grad = grad(s)
        opt.step()
    out[name] = [float(f"{v:.9g}") for v in p.detach().tolist()]

with open("tests/fixtures/optim.json", "w") as f:
    json.dump(out, f, indent=1)
print("wrote tests/fixtures/optim.json")
