"""One line per `dslnas bench --json` file (a table row), plus its `--profile` counts.

    python benchmarks/bench_summary.py FILE.json [...]

Used by the device scripts (gpu_levers.sh, device_session.sh); a file that is missing or not
JSON (a bench that failed or ran out of time) prints nothing.
"""
import json
import sys


def summary(r: dict) -> list[str]:
    epoch_s = r["iteration_ms"] * 391 / 1000            # NB201's 25k/25k split at batch 64
    lines = [f"| {r['space']} | {r['method']} | graphs {r['cuda_graphs']} compiled {r['compiled']} "
             f"| {r['weight_step_ms']:.2f} | {r['arch_step_ms']:.2f} | {r['iteration_ms']:.2f} "
             f"({epoch_s:.1f} s per 391 iterations) | {r['images_per_s']:.0f} "
             f"| {r['peak_memory_bytes'] / 2**30:.2f} | {r['achieved_tflops']:.2f} "
             f"| compile {r['compile_s']} s ({r['compiled_graphs']} graphs) | {r['device_name']} |"]
    for step, p in (r.get("profile") or {}).items():
        lines.append(f"    {step} step: {p['kernels']} kernels, {p['kernel_ms']} ms of kernel "
                     f"time, {p['aten_ops']} ATen ops; largest: "
                     + "; ".join(f"{n[:50]} {c}x {ms:.2f} ms" for n, c, ms in p["top"][:5]))
    return lines


if __name__ == "__main__":
    for path in sys.argv[1:]:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError):
            continue
        print("\n".join(summary(result)), flush=True)
