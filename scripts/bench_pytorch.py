#!/usr/bin/env python3
"""Run cxr's benchmark shapes in PyTorch and print cxr/PyTorch ratios side by side.

The names and shapes mirror `src/bench.rs` (keep them in sync). Usage, from the repo root, with a
venv outside the repo that has torch (`pip install torch`):

    cargo run --release -p cxr-tools -- bench --json > /tmp/cxr.jsonl
    /path/to/venv/bin/python scripts/bench_pytorch.py --ours /tmp/cxr.jsonl

Without --ours it prints PyTorch's own figures only. `speedup` is PyTorch time / cxr time:
above 1.0 cxr is faster. Both sides use the same thread count (default 2).
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

# (name, in_channels, out_channels, size, kernel, stride, count, needs_input_grad) as in
# RESNET18_CONVS in src/bench.rs.
RESNET18_CONVS = [
    ("conv1", 3, 64, 224, 7, 2, 1, False),
    ("layer1.3x3", 64, 64, 56, 3, 1, 4, True),
    ("layer2.0.conv1", 64, 128, 56, 3, 2, 1, True),
    ("layer2.0.downsample", 64, 128, 56, 1, 2, 1, True),
    ("layer2.3x3", 128, 128, 28, 3, 1, 3, True),
    ("layer3.0.conv1", 128, 256, 28, 3, 2, 1, True),
    ("layer3.0.downsample", 128, 256, 28, 1, 2, 1, True),
    ("layer3.3x3", 256, 256, 14, 3, 1, 3, True),
    ("layer4.0.conv1", 256, 512, 14, 3, 2, 1, True),
    ("layer4.0.downsample", 256, 512, 14, 1, 2, 1, True),
    ("layer4.3x3", 512, 512, 7, 3, 1, 3, True),
]

# DENSENET121_CONVS in src/bench.rs, measured at batch 16 (group densenet-conv).
DENSENET121_CONVS = [
    ("densenet121.conv0", 3, 64, 224, 7, 2, 1, False),
    ("densenet121.block1.1x1", 160, 128, 56, 1, 1, 6, True),
    ("densenet121.block1.3x3", 128, 32, 56, 3, 1, 6, True),
    ("densenet121.transition1", 256, 128, 56, 1, 1, 1, True),
    ("densenet121.block2.1x1", 320, 128, 28, 1, 1, 12, True),
    ("densenet121.block2.3x3", 128, 32, 28, 3, 1, 12, True),
    ("densenet121.transition2", 512, 256, 28, 1, 1, 1, True),
    ("densenet121.block3.1x1", 640, 128, 14, 1, 1, 24, True),
    ("densenet121.block3.3x3", 128, 32, 14, 3, 1, 24, True),
    ("densenet121.transition3", 1024, 512, 14, 1, 1, 1, True),
    ("densenet121.block4.1x1", 768, 128, 7, 1, 1, 16, True),
    ("densenet121.block4.3x3", 128, 32, 7, 3, 1, 16, True),
]
DENSENET_CONV_BATCH = 16

# RESNET18_SMALL_CONVS in src/bench.rs: the MedMNIST stem at 28x28, batch 128 (group small-conv).
RESNET18_SMALL_CONVS = [
    ("small.conv1", 1, 64, 28, 3, 1, 1, False),
    ("small.layer1.3x3", 64, 64, 28, 3, 1, 4, True),
    ("small.layer2.0.conv1", 64, 128, 28, 3, 2, 1, True),
    ("small.layer2.0.downsample", 64, 128, 28, 1, 2, 1, True),
    ("small.layer2.3x3", 128, 128, 14, 3, 1, 3, True),
    ("small.layer3.0.conv1", 128, 256, 14, 3, 2, 1, True),
    ("small.layer3.0.downsample", 128, 256, 14, 1, 2, 1, True),
    ("small.layer3.3x3", 256, 256, 7, 3, 1, 3, True),
    ("small.layer4.0.conv1", 256, 512, 7, 3, 2, 1, True),
    ("small.layer4.0.downsample", 256, 512, 7, 1, 2, 1, True),
    ("small.layer4.3x3", 512, 512, 4, 3, 1, 3, True),
]
SMALL_CONV_BATCH = 128


def measure(fn, warmup=2, min_iters=5, max_seconds=2.0):
    """Median/min/max milliseconds per call, with the same budget as cxr's Budget::standard."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < max_seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        if len(times) >= 1000:
            break
    times.sort()
    return statistics.median(times), times[0], times[-1]


def gemm_cases(sizes):
    for n in sizes:
        a, b = torch.rand(n, n) - 0.5, torch.rand(n, n) - 0.5
        out = torch.empty(n, n)
        yield f"gemm.{n}", (lambda a=a, b=b, out=out: torch.mm(a, b, out=out)), 1.0


def conv_cases(batch, layers=RESNET18_CONVS):
    for name, cin, cout, size, k, s, count, needs_input_grad in layers:
        x = torch.rand(batch, cin, size, size) - 0.5
        w = torch.rand(cout, cin, k, k) - 0.5
        y = F.conv2d(x, w, None, s, k // 2)
        dy = torch.rand_like(y) - 0.5
        args = (dy, x, w, None, [s, s], [k // 2, k // 2], [1, 1], False, [0, 0], 1)
        prefix = f"conv2d.{name}.b{batch}"
        yield f"{prefix}.fwd", (lambda x=x, w=w, s=s, k=k: F.conv2d(x, w, None, s, k // 2)), count
        yield (f"{prefix}.bwd_data",
               (lambda a=args: torch.ops.aten.convolution_backward(*a, [True, False, False])),
               count if needs_input_grad else 0)
        yield (f"{prefix}.bwd_weight",
               (lambda a=args: torch.ops.aten.convolution_backward(*a, [False, True, False])), count)


def model_cases(archs, train_batch):
    """Inference latency at batch 1, 224x224 (eval, no grad) and, when train_batch > 0, one
    training step (forward, BCE loss, backward), as cxr's `bench --only model`."""
    import torchvision

    for arch in archs:
        model = getattr(torchvision.models, arch)(num_classes=14)
        x1 = torch.rand(1, 3, 224, 224)

        def infer(model=model, x1=x1):
            model.eval()
            with torch.no_grad():
                model(x1)

        yield f"model.{arch}.infer.b1", infer, 0

        # Grad-CAM computed the way cxr does (PyTorch's best case): the backbone without a graph,
        # the target activation (ResNet `layer4`, DenseNet `features.norm5` after its ReLU) made a
        # leaf, then the head forward and backward from one class score.
        if hasattr(model, "layer4"):
            stem = [model.conv1, model.bn1, model.relu, model.maxpool]
            backbone = nn.Sequential(*stem, model.layer1, model.layer2, model.layer3, model.layer4)

            def head(a, model=model):
                return model.fc(torch.flatten(model.avgpool(a), 1))

        else:
            backbone = nn.Sequential(model.features, nn.ReLU())

            def head(a, model=model):
                return model.classifier(torch.flatten(F.adaptive_avg_pool2d(a, 1), 1))

        def gradcam(model=model, x1=x1, backbone=backbone, head=head):
            model.eval()
            with torch.no_grad():
                a = backbone(x1)
            a.requires_grad_(True)
            with torch.enable_grad():
                head(a)[0, 2].backward()
            torch.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(1))
            model.zero_grad(set_to_none=True)

        yield f"model.{arch}.gradcam.b1", gradcam, 0
        if train_batch > 0:
            xb, tb = torch.rand(train_batch, 3, 224, 224), torch.zeros(train_batch, 14)

            def step(model=model, xb=xb, tb=tb):
                model.train()
                with torch.enable_grad():
                    loss = F.binary_cross_entropy_with_logits(model(xb), tb)
                    loss.backward()
                model.zero_grad(set_to_none=True)

            yield f"model.{arch}.train.b{train_batch}", step, 0


def chestmnist_mlp():
    """cxr's `mlp` (the ChestMNIST lab network): Dense-ReLU-BN-Dropout blocks 512/256/128, then
    64 without BN, then 14 logits."""
    layers, width = [nn.Flatten()], 784
    for units, bn, p in [(512, True, 0.2), (256, True, 0.2), (128, True, 0.1), (64, False, 0.1)]:
        layers += [nn.Linear(width, units), nn.ReLU()] + ([nn.BatchNorm1d(units)] if bn else []) + [nn.Dropout(p)]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, 14))


def grey_resnet18(small_stem):
    """torchvision's ResNet18 on one channel; the MedMNIST stem is a 3x3 stride-1 conv without
    the max pool."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=14)
    if small_stem:
        model.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return model


def train_cases(wanted):
    """cxr's `bench --only train`: forward, BCE loss, backward and an Adam step with the data in
    memory; the name ends in the images one call processes (a whole epoch for the MLP). With
    `wanted` non-empty, only the cases whose name contains one of its strings."""
    import torchvision

    cases = [
        ("train.mlp.epoch78468", chestmnist_mlp, 1, 28, 128, 78_468),
        ("train.resnet18.b32", lambda: torchvision.models.resnet18(num_classes=14), 3, 224, 32, 32),
        ("train.resnet18.b128.28px", lambda: grey_resnet18(False), 1, 28, 128, 128),
        ("train.resnet18-small.b128.28px", lambda: grey_resnet18(True), 1, 28, 128, 128),
        ("train.densenet121.b16", lambda: torchvision.models.densenet121(num_classes=14), 3, 224, 16, 16),
    ]
    for name, build, channels, size, batch, images in cases:
        if wanted and not any(w in name for w in wanted):
            continue
        model = build()
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        full = (torch.rand(batch, channels, size, size), torch.rand(batch, 14))
        rest = images % batch
        last = (torch.rand(rest, channels, size, size), torch.rand(rest, 14)) if rest else None

        def call(model=model, opt=opt, full=full, last=last, steps=images // batch):
            with torch.enable_grad():
                for x, t in [full] * steps + ([last] if last else []):
                    loss = F.binary_cross_entropy_with_logits(model(x), t)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)

        yield name, call, 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", help="cxr `tools bench --json` output to compare against")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gemm-sizes", default="256,1024,2048")
    p.add_argument("--batch", default="1,32")
    p.add_argument("--only", default="gemm,conv")
    p.add_argument("--models", default="resnet18,densenet121")
    p.add_argument("--train-batch", type=int, default=0)
    p.add_argument("--cases", default="", help="only the training cases whose name contains one of these")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    ours = {}
    if args.ours:
        with open(args.ours) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rec = json.loads(line)
                    ours[rec["name"]] = rec["median"]

    groups = args.only.split(",")
    cases = []
    if "gemm" in groups:
        cases += list(gemm_cases([int(n) for n in args.gemm_sizes.split(",")]))
    if "model" in groups:
        cases += list(model_cases(args.models.split(","), args.train_batch))
    if "train" in groups:
        wanted = [c for c in args.cases.split(",") if c]
        cases += list(train_cases(wanted))
    totals = {}
    if "conv" in groups:
        for batch in [int(b) for b in args.batch.split(",")]:
            cases += list(conv_cases(batch))
    if "small-conv" in groups:
        cases += list(conv_cases(SMALL_CONV_BATCH, RESNET18_SMALL_CONVS))
    if "densenet-conv" in groups:
        cases += list(conv_cases(DENSENET_CONV_BATCH, DENSENET121_CONVS))

    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'name':<44} {'torch ms':>10} {'cxr ms':>10} {'speedup':>8}")
    for name, fn, weight in cases:
        median, _, _ = measure(fn)
        if name.startswith("conv2d."):
            batch = name.split(".")[-2]
            net = ("densenet121" if name.startswith("conv2d.densenet121.")
                   else "resnet18-small" if name.startswith("conv2d.small.") else "resnet18")
            key = f"conv2d.{net}.{batch}.total"
            totals[key] = totals.get(key, 0.0) + median * weight
        print_row(name, median, ours.get(name))
    for key, torch_total in totals.items():
        print_row(key, torch_total, ours.get(key))


def print_row(name, torch_ms, cxr_ms):
    if cxr_ms is None:
        print(f"{name:<44} {torch_ms:>10.3f} {'-':>10} {'-':>8}")
    else:
        print(f"{name:<44} {torch_ms:>10.3f} {cxr_ms:>10.3f} {torch_ms / cxr_ms:>8.2f}")


if __name__ == "__main__":
    main()
