"""Forward + backward time of a supernet on one batch (median over steps; not a timed test).

    python benchmarks/supernet_step.py --space spaces/nb201.nas --batch 64 --steps 10 [--device cuda]
"""
import argparse
import statistics
import time

import torch

from dslnas.ir.lower import compile_file
from dslnas.supernet.network import build, count_parameters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", nargs="+", default=["spaces/nb201.nas", "spaces/darts.nas"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fused", action="store_true", help="the fused search cell")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, fused {args.fused}")
    for path in args.space:
        ir = compile_file(path)
        net = build(ir, fused=args.fused).to(dev)
        x = torch.randn(args.batch, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (args.batch,), device=dev)
        times = []
        for i in range(args.steps + 2):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:   # warm-up
                times.append(time.perf_counter() - t0)
        print(f"{ir.name:8s} weights {count_parameters(net.weight_parameters()):>10,}  "
              f"fwd+bwd {1e3 * statistics.median(times):8.1f} ms/batch")


if __name__ == "__main__":
    main()
