#!/usr/bin/env python3
"""Generates tests/fixtures/golden_chain.json, the PyTorch reference that tests/golden_chain.rs
checks cxr against. CI never runs this script (it has no PyTorch); it reads the committed fixture.

Run it from the repository root with any Python that has PyTorch (CPU is enough), e.g.

    python -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch
    /tmp/venv-torch/bin/python scripts/golden_fixtures.py

It rewrites tests/fixtures/golden_chain.json (pass another path as the first argument to write
elsewhere) and prints how far the float32 results are from a float64 run of the same chain; it
refuses to write the fixture if that gap is not far below the Rust test's tolerance.

The chain, all functional ops, batch norm in training mode (momentum 0.1, eps 1e-5):

    x [2, 3, 17, 17]
    -> conv1 (3->8, 3x3, stride 1, pad 1, no bias) -> bn1 -> relu
    -> maxpool 3x3 / stride 2 / pad 1                        = p  [2, 8, 9, 9]
    -> conv2 (8->8, 3x3, pad 1, bias) -> bn2 -> + p -> relu
    -> avgpool 2x2 / stride 2 -> flatten                        [2, 128]
    -> fc (128 -> 14, bias)                                      = logits
    -> BCEWithLogits(mean, pos_weight[14]) against 0/1 targets = loss

followed by a second forward of the same chain with batch norm in eval mode (using the running
statistics the training forward updated), whose logits are stored too.

Every input is a formula of its flat (row-major) index i, evaluated in float64 with the C
library's sin and then rounded to float32, which tests/golden_chain.rs repeats exactly, so both
sides start from bit-identical inputs (the fixture records checksums of the inputs to prove it):

    value[i] = offset + scale * sin(0.37 * i + phase)       (see INPUTS below)
    target[i] = 1 if (7 * i + 3) % 5 < 2 else 0

Keep INPUTS and TARGETS in sync with tests/golden_chain.rs.
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

# name: (shape, offset, scale, phase)
INPUTS = {
    "x": ([2, 3, 17, 17], 0.0, 1.0, 0.1),
    "conv1.weight": ([8, 3, 3, 3], 0.0, 0.2, 0.7),
    "bn1.weight": ([8], 1.0, 0.2, 1.3),
    "bn1.bias": ([8], 0.0, 0.1, 1.9),
    "bn1.running_mean": ([8], 0.0, 0.1, 2.3),
    "bn1.running_var": ([8], 1.0, 0.25, 2.9),
    "conv2.weight": ([8, 8, 3, 3], 0.0, 0.1, 3.1),
    "conv2.bias": ([8], 0.0, 0.1, 3.7),
    "bn2.weight": ([8], 1.0, 0.2, 4.3),
    "bn2.bias": ([8], 0.0, 0.1, 4.9),
    "bn2.running_mean": ([8], 0.0, 0.1, 5.3),
    "bn2.running_var": ([8], 1.0, 0.25, 5.9),
    "fc.weight": ([14, 128], 0.0, 0.1, 0.5),
    "fc.bias": ([14], 0.0, 0.05, 1.1),
    "pos_weight": ([14], 1.5, 1.0, 2.1),
}
TARGETS_SHAPE = [2, 14]
MOMENTUM = 0.1
EPS = 1e-5
# The tolerance tests/golden_chain.rs applies; float32 must be much closer than this to float64.
RUST_TOLERANCE = 1e-4
F32_VS_F64_LIMIT = RUST_TOLERANCE / 20

# grad.conv2.bias is zero in exact arithmetic: a per-channel constant added before training-mode
# batch norm is removed by the mean subtraction, so d loss / d conv2.bias = sum(d loss / d bn2 input)
# = 0 per channel. In float32 (PyTorch's and cxr's alike) it is rounding noise around 1e-9, so an
# error relative to its own size is meaningless. Its error is measured relative to the size of
# grad.bn2.bias instead, the per-channel sum of the same upstream gradient before batch norm's
# cancellation. The Rust test applies the same rule (same tolerance, other denominator).
SCALE_OF = {"grad.conv2.bias": "grad.bn2.bias"}

PARAMS = [
    "x",
    "conv1.weight",
    "conv2.weight",
    "conv2.bias",
    "bn1.weight",
    "bn1.bias",
    "bn2.weight",
    "bn2.bias",
    "fc.weight",
    "fc.bias",
]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def formula(shape, offset, scale, phase):
    """float64 values of the formula; rounded to float32 by the caller."""
    return [offset + scale * math.sin(0.37 * i + phase) for i in range(numel(shape))]


def targets():
    return [1.0 if (7 * i + 3) % 5 < 2 else 0.0 for i in range(numel(TARGETS_SHAPE))]


def checksum(values):
    """Sum of the float32 values in float64, left to right (the Rust test repeats this order;
    Python's sum() would use compensated summation), as the 16 hex digits of its bits so that no
    JSON float parsing can blur it."""
    acc = 0.0
    for v in values:
        acc += v
    return format(struct.unpack("<Q", struct.pack("<d", acc))[0], "016x")


def make_inputs(dtype):
    """The inputs as float32 values (bit-identical to the Rust side), converted to `dtype`."""
    t = {}
    for name, (shape, offset, scale, phase) in INPUTS.items():
        f32 = torch.tensor(formula(shape, offset, scale, phase), dtype=torch.float64).to(torch.float32)
        t[name] = f32.to(dtype).reshape(shape)
    t["targets"] = torch.tensor(targets(), dtype=dtype).reshape(TARGETS_SHAPE)
    return t


def forward(t, training):
    x = F.conv2d(t["x"], t["conv1.weight"], None, stride=1, padding=1)
    x = F.batch_norm(
        x, t["bn1.running_mean"], t["bn1.running_var"], t["bn1.weight"], t["bn1.bias"],
        training=training, momentum=MOMENTUM, eps=EPS,
    )
    x = F.relu(x)
    p = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    y = F.conv2d(p, t["conv2.weight"], t["conv2.bias"], stride=1, padding=1)
    y = F.batch_norm(
        y, t["bn2.running_mean"], t["bn2.running_var"], t["bn2.weight"], t["bn2.bias"],
        training=training, momentum=MOMENTUM, eps=EPS,
    )
    y = F.relu(y + p)
    y = F.avg_pool2d(y, kernel_size=2, stride=2)
    y = torch.flatten(y, 1)
    return F.linear(y, t["fc.weight"], t["fc.bias"])


def run(dtype):
    """Training forward + backward, then eval forward. Returns name -> flat float64 list."""
    t = make_inputs(dtype)
    for name in PARAMS:
        t[name].requires_grad_(True)
    logits = forward(t, training=True)
    loss = F.binary_cross_entropy_with_logits(logits, t["targets"], pos_weight=t["pos_weight"], reduction="mean")
    loss.backward()
    out = {
        "logits": logits.detach(),
        "loss": loss.detach(),
    }
    for bn in ["bn1", "bn2"]:
        out[f"{bn}.running_mean"] = t[f"{bn}.running_mean"].clone()
        out[f"{bn}.running_var"] = t[f"{bn}.running_var"].clone()
    for name in PARAMS:
        out[f"grad.{name}"] = t[name].grad.detach()
    with torch.no_grad():
        out["eval_logits"] = forward(t, training=False)
    return {k: (list(v.shape), v.double().flatten().tolist()) for k, v in out.items()}


def rel_err(a, b, scale_ref=None):
    """max|a - b| / max(max|ref|, tiny), ref = b unless given: the measure tests/golden_chain.rs
    uses."""
    ref = b if scale_ref is None else scale_ref
    diff = max(abs(x - y) for x, y in zip(a, b))
    return diff / max(max(abs(y) for y in ref), 1e-30)


def main():
    torch.set_num_threads(2)
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures", "golden_chain.json")

    f32 = run(torch.float32)
    f64 = run(torch.float64)
    worst = 0.0
    print(f"{'tensor':28} {'f32 vs f64 rel err':>20}")
    for name, (_, values) in f32.items():
        scale_ref = f64[SCALE_OF[name]][1] if name in SCALE_OF else None
        err = rel_err(values, f64[name][1], scale_ref)
        worst = max(worst, err)
        print(f"{name:28} {err:20.3e}")
    for name, ref in SCALE_OF.items():
        exact_zero = rel_err([0.0] * len(f64[name][1]), f64[name][1], f64[ref][1])
        print(f"{name} in float64 is {exact_zero:.1e} of max|{ref}| (zero up to rounding)")
        if exact_zero > 1e-12:
            sys.exit(f"{name} is not zero in float64: the chain is not what SCALE_OF assumes")
    if worst > F32_VS_F64_LIMIT:
        sys.exit(f"float32 is {worst:.3e} from float64, above {F32_VS_F64_LIMIT:.1e}: fixture not written")

    inputs = make_inputs(torch.float32)
    fixture = {
        "generator": "scripts/golden_fixtures.py",
        "torch_version": torch.__version__,
        "dtype": "float32",
        "input_checksums": {
            name: checksum(inputs[name].double().flatten().tolist()) for name in list(INPUTS) + ["targets"]
        },
        "tensors": {
            name: {"shape": shape, "values": [float(f"{v:.9g}") for v in values]}
            for name, (shape, values) in f32.items()
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # One line per tensor keeps the file small and its diffs readable.
    lines = ["{"]
    for key in ["generator", "torch_version", "dtype"]:
        lines.append(f" {json.dumps(key)}: {json.dumps(fixture[key])},")
    lines.append(f' "input_checksums": {json.dumps(fixture["input_checksums"])},')
    lines.append(' "tensors": {')
    items = list(fixture["tensors"].items())
    for k, (name, t) in enumerate(items):
        comma = "," if k + 1 < len(items) else ""
        lines.append(f"  {json.dumps(name)}: {json.dumps(t, separators=(', ', ': '))}{comma}")
    lines.append(" }")
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"worst float32 vs float64: {worst:.3e}; wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
