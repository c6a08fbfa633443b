"""How fast `dslnas train` trains a genotype, per speed lever: one table row per configuration.

    python benchmarks/train_speed.py --recipe darts --device cuda                 # DARTS_V2, C=36, L=20
    python benchmarks/train_speed.py --recipe nb201 --device cuda
    python benchmarks/train_speed.py --recipe darts --configs eager compiled compiled+cl+bf16

Each configuration builds the recipe's network (the same `Trainer` the command runs, with the
recipe's batch size, cutout, drop-path at mid-schedule and auxiliary head) and times `--steps`
training steps on random CIFAR-sized batches drawn on the device (outside the timed region)
after `--warmup` untimed ones; the first warm-up step's time (compiling included) is reported
apart. Configurations: `eager`, `compiled` (torch.compile of the whole network), `+cl`
(channels-last), `+bf16` (bfloat16 autocast), `reduce-overhead` (compiled with CUDA graphs).
Prints one row per configuration: ms per step, images/s, an epoch of the recipe's 50,000
images, the whole recipe, peak memory.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dslnas.genotype import from_nb201_string, known_genotype, parse_genotype  # noqa: E402
from dslnas.ir.lower import compile_file  # noqa: E402
from dslnas.methods.spec import space_family  # noqa: E402
from dslnas.search.loader import DeviceBatches  # noqa: E402
from dslnas.train.commands import resolve_recipe  # noqa: E402
from dslnas.train.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NB201_DEFAULT = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                 "nor_conv_3x3~1|nor_conv_1x1~2|")      # a best CIFAR-10 cell of the table, 94.37
CONFIGS = ("eager", "compiled", "compiled+cl", "compiled+cl+bf16", "reduce-overhead")
TRAIN_IMAGES = 50_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(ir, genotype, recipe, config: str, device: torch.device, steps: int,
            warmup: int) -> dict:
    parts = set(config.split("+"))
    channels_last = "cl" in parts
    t = Trainer(ir, genotype, recipe, device=device, channels_last=channels_last,
                precision="bf16" if "bf16" in parts else "fp32")
    if "compiled" in parts:
        t.forward = torch.compile(t.model)
    elif "reduce-overhead" in parts:
        t.forward = torch.compile(t.model, mode="reduce-overhead")
    t.epoch = recipe.epochs // 2                       # drop-path on, as for most of a run
    t.begin_epoch()
    n = recipe.batch_size * (steps + warmup)
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device,
                           generator=gen)
    labels = torch.randint(0, 10, (n,), device=device, generator=gen)
    stream = DeviceBatches(images, labels, recipe.batch_size, mean=(0.5,) * 3, std=(0.25,) * 3,
                           cutout=recipe.cutout, generator=gen, channels_last=channels_last,
                           drop_last=True)
    batches = [stream.next() for _ in range(steps + warmup)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = None
    for i, (x, y) in enumerate(batches[:warmup]):
        t0 = time.perf_counter()
        t.step(x, y)
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for x, y in batches[warmup:]:
        t0 = time.perf_counter()
        t.step(x, y)
        _sync(device)
        times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times)
    steps_per_epoch = math.ceil(TRAIN_IMAGES / recipe.batch_size)
    return {"config": config, "ms_per_step": ms, "first_step_s": first,
            "images_per_s": recipe.batch_size / ms * 1000,
            "epoch_s": steps_per_epoch * ms / 1000,
            "recipe_h": recipe.epochs * steps_per_epoch * ms / 3.6e6,
            "peak_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                         if device.type == "cuda" else None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="darts")
    p.add_argument("--space", help="default: spaces/darts.nas (spaces/nb201.nas for nb201)")
    p.add_argument("--genotype", help="default: DARTS_V2, or the NB201 table's best cell")
    p.add_argument("--set", action="append", default=[], help="recipe field or network parameter")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--configs", nargs="+", default=None, choices=CONFIGS,
                   help=f"default: all on CUDA ({' '.join(CONFIGS)}), eager on the CPU")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    space = args.space or str(ROOT / "spaces" / ("nb201.nas" if args.recipe == "nb201"
                                                 else "darts.nas"))
    ir0 = compile_file(space)
    recipe, network = resolve_recipe(args.recipe, args.set, dict(ir0.params))
    ir = compile_file(space, {"in_channels": 3, "classes": 10, **network})
    if args.genotype:
        genotype = parse_genotype(args.genotype, ir=ir)
    elif space_family(ir) == "nb201":
        genotype = from_nb201_string(NB201_DEFAULT, space=ir.name, cell=ir.groups[0].cell)
    else:
        genotype = known_genotype("DARTS_V2")
    configs = args.configs or (list(CONFIGS) if device.type == "cuda" else ["eager"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}, recipe {recipe.name} (batch "
          f"{recipe.batch_size}, {recipe.epochs} epochs), network {network}, "
          f"{args.steps} timed steps after {args.warmup}")
    print("| config | ms/step | images/s | epoch s | recipe h | first step s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for config in configs:
        try:
            r = measure(ir, genotype, recipe, config, device, args.steps, args.warmup)
        except Exception as e:                          # noqa: BLE001 - report, go on
            print(f"| {config} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} |",
                  flush=True)
            continue
        rows.append(r)
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {config} | {r['ms_per_step']:.1f} | {r['images_per_s']:.0f} | "
              f"{r['epoch_s']:.1f} | {r['recipe_h']:.2f} | {r['first_step_s']:.1f} | {peak} |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "recipe": recipe.to_dict(),
                                               "rows": rows}, indent=2))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
