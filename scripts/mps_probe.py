"""How many training steps per second one GPU gives N processes at once (with or without CUDA MPS).

    python scripts/mps_probe.py --procs 8 --seconds 8 [--model inception --size 128]

Each process trains a study model at batch 64 (bf16 autocast, channels_last, fused Adam: the
trainer=gpu settings) on random data for a fixed time after a warm-up; prints one JSON line with
the summed steps/s. Used by scripts/gpu_evidence.sh to decide whether the sweep runs under MPS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time


def worker(model: str, size: int, seconds: float, start_at: float, out) -> None:
    import torch

    from bloodcls.models import build_model

    net = build_model(model, size).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)
    x = torch.rand(64, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 8, (64,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    while time.time() < start_at:  # all processes measure the same window
        step()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    torch.cuda.synchronize()
    out.put(n / (time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--model", default="inception")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 12  # time to import torch and build the model everywhere
    procs = [ctx.Process(target=worker, args=(args.model, args.size, args.seconds, start_at, out))
             for _ in range(args.procs)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    print(json.dumps({"label": args.label, "model": args.model, "size": args.size, "procs": args.procs,
                      "steps_per_s_total": round(sum(rates), 1), "steps_per_s_each": [round(r, 1) for r in rates]}))


if __name__ == "__main__":
    main()
