"""Parse + lower time of each shipped space (median of repeated runs; not a timed test).

    python benchmarks/compile_time.py [--repeat 50]
"""
import argparse
import statistics
import time
from pathlib import Path

from dslnas.dsl.parser import parse_file
from dslnas.ir.lower import compile_file

SPACES = Path(__file__).resolve().parents[1] / "spaces"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    compile_file(SPACES / "darts.nas")  # build the LALR tables once, as a long-lived process would
    print(f"{'space':8s} {'parse ms':>9s} {'parse+lower ms':>15s}")
    for name in ["darts", "nb201", "s1", "s2", "s3", "s4"]:
        path = SPACES / f"{name}.nas"
        parse, full = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            parse_file(path)
            t1 = time.perf_counter()
            compile_file(path)
            t2 = time.perf_counter()
            parse.append(t1 - t0)
            full.append(t2 - t1)
        print(f"{name:8s} {1e3 * statistics.median(parse):9.2f} {1e3 * statistics.median(full):15.2f}")


if __name__ == "__main__":
    main()
