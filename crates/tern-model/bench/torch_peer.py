#!/usr/bin/env python3
"""PyTorch peer of `cargo bench -p tern-model --bench model`: the same 48 -> 128 -> 64 -> 4-head
MLP on the CPU, with the same thread count, printing the same lines (`name rows/s=N`).

Inference: sigmoid of the logits under torch.inference_mode(), one call per batch, median of 5.
Training: Adam, batch 1024, masked BCE-with-logits summed over heads, 200k rows, 3 epochs;
median rows/s per epoch.
"""
import os
import sys
import time

import torch

threads = int(os.environ.get("THREADS", os.cpu_count() or 1))
torch.set_num_threads(threads)
torch.manual_seed(0)
WIDTH, HEADS, REPEATS = 48, 4, 5


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


model = torch.nn.Sequential(
    torch.nn.Linear(WIDTH, 128), torch.nn.ReLU(),
    torch.nn.Linear(128, 64), torch.nn.ReLU(),
    torch.nn.Linear(64, HEADS),
)
wanted = sys.argv[1:]


def want(name):
    return not wanted or any(w in name for w in wanted)


print(f"# torch {torch.__version__} bench: {WIDTH} features, threads {threads}")

if want("train"):
    rows = 200_000
    x = torch.rand(rows, WIDTH) * 2 - 1
    y = torch.stack([(2 * x[:, 0] - x[:, 1] > 0).float(), (torch.rand(rows) > 0.5).float(),
                     torch.zeros(rows), (torch.rand(rows) > 0.95).float()], dim=1)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0]).expand(rows, HEADS).contiguous()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, eps=1e-8)
    rates = []
    for epoch in range(3):
        perm = torch.randperm(rows)
        t = time.perf_counter()
        for i in range(0, rows, 1024):
            idx = perm[i:i + 1024]
            xb, yb, mb = x[idx], y[idx], mask[idx]
            w = mb / mb.sum(0).clamp(min=1)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                model(xb), yb, reduction="none") * w).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(rows / (time.perf_counter() - t))
    print(f"train batch=1024 rows/s={median(rates):.0f}")

model.eval()
for batch in (1, 256, 4096, 65536):
    name = f"infer batch={batch}"
    if not want(name):
        continue
    x = torch.rand(batch, WIDTH) * 2 - 1
    # Capped so that batch 1 (~20k calls/s in PyTorch) does not take minutes.
    calls = max(min(300_000 // batch, 20_000), 20)
    rates = []
    with torch.inference_mode():
        torch.sigmoid(model(x))
        for _ in range(REPEATS):
            t = time.perf_counter()
            for _ in range(calls):
                out = torch.sigmoid(model(x))
            rates.append(calls * batch / (time.perf_counter() - t))
    print(f"{name} rows/s={median(rates):.0f}")
