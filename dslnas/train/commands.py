"""``dslnas train``: train a genotype's network from scratch and test it (the evaluation phase).

Every user mistake (an unknown recipe or field, a genotype that does not fit the space, a
network that does not run on the dataset's images, missing data, a corrupt checkpoint) becomes
``dslnas.cli.UserError``: exit 2 with a message.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import attrs

__all__ = ["add_command", "cmd_train", "resolve_recipe"]

SET_HELP = """\
--set KEY=VALUE (repeatable): a recipe field (epochs, batch_size, lr, lr_min, momentum,
nesterov, weight_decay, grad_clip, cutout, drop_path, auxiliary, eval_batch_size; e.g.
--set drop_path=0.3, --set auxiliary=0 for no auxiliary head) or a network parameter of the
space (e.g. --set C=16 --set L=8). The recipe sets the network's size (darts: C=36, L=20).

Recipes (docs/training.md):
  darts   DARTS' evaluation: 600 epochs, batch 96, SGD lr 0.025 cosine, momentum 0.9,
          wd 3e-4, grad clip 5, cutout 16, drop-path 0.2, auxiliary head 0.4, C=36, L=20
  rdarts  the same in RobustDARTS' code-default network: C=16, L=8
  nb201   NAS-Bench-201's training: 200 epochs, batch 256, SGD lr 0.1 cosine, Nesterov
          momentum 0.9, wd 5e-4, C=16, N=5
The default is nb201 for NB201 and darts for top-k spaces (darts, s1-s4), except s1-s4 on
CIFAR-100 and SVHN, which R-DARTS' follow-ups train with rdarts.
"""

_RESUME_OK = ("resume", "data", "device", "stop_after", "checkpoint_minutes", "no_progress",
              "no_download", "compile_model", "channels_last", "precision", "deterministic",
              "func", "command")


@attrs.define
class _Job:
    """One training run of the command: its run directory, network, data and settings."""
    run: object
    ir: object
    genotype: object
    recipe: object
    train: object
    test: object
    seed: int
    deterministic: bool
    device: str
    channels_last: bool
    precision: str
    eval_every: int
    benchmark: dict | None = None
    resume_state: dict | None = None
    config: dict | None = None      # a resumed run's config.json, written once all are checked


def _user_error(msg: str):
    from ..cli import UserError
    return UserError(msg)


def add_command(subparsers) -> None:
    from ..search.commands import DEFAULT_DATA, _minutes, _nonneg_int
    t = subparsers.add_parser(
        "train", help="train a genotype's network from scratch and test it",
        description="Train the network of GENOTYPE with an evaluation recipe and test it after "
                    "every epoch; writes a run directory (config.json, metrics.jsonl, tb/, "
                    "checkpoint.pt, model.pt, summary.json).",
        epilog=SET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("genotype", nargs="?",
                   help="a search run directory, a genotype JSON file, an NB201 string, DARTS "
                        "Genotype(...) text or a known name (DARTS_V2); not with --resume")
    t.add_argument("--space", metavar="SPACE.nas",
                   help="the genotype's space (default: the search run's space)")
    t.add_argument("--recipe", help="darts | rdarts | nb201 (default: by the space and the "
                                    "dataset, below)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field or a network parameter (see below)")
    t.add_argument("--epochs", type=_nonneg_int("--epochs"), help="override the recipe")
    t.add_argument("--batch-size", type=_nonneg_int("--batch-size"), help="override the recipe")
    t.add_argument("--seed", type=_nonneg_int("--seed"), default=None,
                   help="random seed (default 0)")
    t.add_argument("--seeds", type=_nonneg_int("--seeds"), nargs="+", metavar="S",
                   help="train once per seed, all at once (one process, one CUDA stream each, "
                        "as search --seeds) and report mean ± std; --out needs {seed}")
    t.add_argument("--dataset", help="cifar10 (default) | cifar100 | svhn | digits (offline, tiny)")
    t.add_argument("--data", metavar="DIR", help=f"dataset folder (default {DEFAULT_DATA})")
    t.add_argument("--no-download", action="store_true",
                   help="never download the dataset; fail if it is not in --data")
    t.add_argument("--subset", type=_nonneg_int("--subset"), metavar="N",
                   help="train on the first N training images only (quick runs)")
    t.add_argument("--benchmark", metavar="TABLE.csv",
                   help="an NB201 accuracy table: show the genotype's benchmark accuracy beside "
                        "the trained one (NB201 spaces)")
    t.add_argument("--eval-every", type=_nonneg_int("--eval-every"), metavar="E",
                   help="test every E epochs and after the last (default 1)")
    t.add_argument("--out", metavar="DIR",
                   help="run directory (default runs/<space>-train-<recipe>-s<seed>-<time>/)")
    t.add_argument("--resume", metavar="RUN_DIR", nargs="+",
                   help="continue the training run(s) in RUN_DIR from the last checkpoint")
    t.add_argument("--stop-after", type=_nonneg_int("--stop-after"), metavar="EPOCHS",
                   help="stop once this many epochs are done, as if interrupted")
    t.add_argument("--checkpoint-minutes", type=_minutes, default=10.0, metavar="M",
                   help="also checkpoint inside an epoch every M minutes (default 10; 0: only "
                        "at the end of each epoch)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels: a resumed run ends bit-identical")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   dest="compile_model",
                   help="torch.compile the network (default: on for CUDA)")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for the network and the data")
    t.add_argument("--precision", choices=("fp32", "bf16"),
                   help="bf16: forward and backward under bfloat16 autocast, weights and "
                        "optimiser in fp32 (default fp32, as the references trained)")
    t.add_argument("--no-progress", action="store_true", help="plain epoch lines, no bar")
    t.set_defaults(func=cmd_train)


def resolve_recipe(name: str, sets: list[str] | None, network_params: dict, *,
                   epochs: int | None = None, batch_size: int | None = None):
    """The recipe ``name`` with ``--set`` applied, and the network overrides
    (``recipe.network`` plus the ``--set`` network parameters)."""
    from .recipes import RECIPES, recipe_fields
    from ..search.commands import _did_you_mean, typed_value

    if name not in RECIPES:
        raise _user_error(f"unknown recipe {name!r}{_did_you_mean(name, RECIPES)}; choose one "
                          f"of {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    foreign = sorted(set(recipe.network) - set(network_params))
    if foreign:
        raise _user_error(f"recipe {name!r} sizes its network by {', '.join(foreign)}, which this "
                          f"space does not have; choose a recipe of its family (--recipe)")
    fields = recipe_fields()
    changes: dict = {}
    network = dict(recipe.network)
    for pair in sets or ():
        key, sep, text = pair.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise _user_error(f"--set expects KEY=VALUE, got {pair!r}")
        if key in fields:
            changes[key] = typed_value(getattr(recipe, key), text, f"--set {key}")
        elif key in network_params:
            try:
                network[key] = int(text)
            except ValueError:
                raise _user_error(f"--set {key}: expected an integer, got {text!r}") from None
        else:
            known = list(fields) + list(network_params)
            raise _user_error(f"--set {key}: not a recipe field or network parameter"
                              f"{_did_you_mean(key, known)}")
    if epochs is not None:
        changes["epochs"] = epochs
    if batch_size is not None:
        changes["batch_size"] = batch_size
    recipe = attrs.evolve(recipe, **changes)
    _check(recipe)
    return recipe, network


def _check(r) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(r, key) < 1:
            raise _user_error(f"{key} must be >= 1, got {getattr(r, key)}")
    for key in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip", "cutout", "auxiliary"):
        v = getattr(r, key)
        if not (v >= 0 and math.isfinite(v)):                    # also NaN and inf
            raise _user_error(f"{key} must be a finite number >= 0, got {v}")
    if r.lr_min > r.lr:
        raise _user_error(f"lr_min ({r.lr_min}) must not exceed lr ({r.lr})")
    if not 0 <= r.drop_path < 1:
        raise _user_error(f"drop_path must be in [0, 1), got {r.drop_path}")
    if r.auxiliary > 0 and r.batch_size < 2:
        raise _user_error("the auxiliary head's BN needs batch_size >= 2 (or --set auxiliary=0)")
    if r.nesterov and r.momentum == 0:
        raise _user_error("nesterov needs momentum > 0")


def cmd_train(args) -> int:
    from ..genotype import GenotypeError
    from ..search.checkpoint import CheckpointError
    from ..search.datasets import DataError
    from ..search.rundir import RunDirError
    from .trainer import TrainError
    try:
        return _train(args)
    except (DataError, CheckpointError, RunDirError, GenotypeError, TrainError) as e:
        raise _user_error(str(e)) from None


def _genotype_source(source: str, space: str | None) -> tuple[str, str | None, dict]:
    """(genotype text or file, space file, the search's dataset entry): a search run directory
    gives its genotype.json, its space and the dataset it searched on."""
    p = Path(source)
    if not p.is_dir():
        return source, space, {}
    if not (p / "config.json").is_file():
        raise _user_error(f"{p}: not a dslnas run directory (no config.json)")
    try:
        config = json.loads((p / "config.json").read_text())
        if config.get("kind") == "train":
            raise _user_error(f"{p} is a training run; continue it with dslnas train --resume {p}")
        if space is None:
            space = config["space_file"]
        dataset = dict(config.get("dataset") or {})
        if not isinstance(space, str) or not isinstance(dataset.get("name", ""), str) \
                or not isinstance(dataset.get("root", ""), str):
            raise TypeError("space_file, dataset name and root must be strings")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _user_error(f"{p / 'config.json'}: cannot read its space and dataset "
                          f"({type(e).__name__}: {e})") from None
    if not (p / "genotype.json").is_file():
        raise _user_error(f"{p}: no genotype.json (the search has not finished)")
    return str(p / "genotype.json"), space, dataset


def _check_runs(ir, genotype, recipe, ds) -> None:
    """Build the network on the meta device and run one batch through it: a network too deep
    for the dataset's images (e.g. the auxiliary head's 5x5 pooling on 4x4 maps) is a clear
    message here rather than a traceback in the first step."""
    import torch
    from ..supernet.network import build_child
    with torch.device("meta"):
        try:
            net = build_child(ir, genotype, auxiliary=recipe.auxiliary > 0)
            net(torch.empty(2, ds.in_channels, ds.image_size, ds.image_size))
        except (RuntimeError, ValueError, TypeError, OverflowError) as e:
            hint = ("; the auxiliary head needs a reduction cell with at least 5x5 maps: try "
                    "--set auxiliary=0" if recipe.auxiliary > 0 else "")
            raise _user_error(f"the network cannot train on the {ds.name} images "
                              f"({ds.image_size}x{ds.image_size}): {str(e).splitlines()[0]}"
                              f"{hint}") from None


def _batches(ds, recipe, device: str, seed: int, subset, channels_last: bool):
    import torch
    from ..search.loader import DeviceBatches, eval_batches
    n = len(ds.train_x) if subset is None else min(subset, len(ds.train_x))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    # a last batch of one image is dropped: BN cannot train on one value per channel (the
    # auxiliary head's 1x1 maps), which would stop the run at the end of its first epoch
    train = DeviceBatches(ds.train_x[:n].to(device), ds.train_y[:n].to(device),
                          recipe.batch_size, mean=ds.mean, std=ds.std, cutout=recipe.cutout,
                          generator=gen, channels_last=channels_last,
                          drop_last=n % recipe.batch_size == 1)
    test = eval_batches(ds, batch_size=recipe.eval_batch_size, device=device,
                        channels_last=channels_last)
    return train, test


def _train(args) -> int:
    from ..search.commands import jobs_to_run
    return _run(jobs_to_run(args, _RESUME_OK, _resumed, _fresh, "runs/darts-v2-s{seed}"), args)


def _fresh(args, seed: int, datasets: dict) -> _Job:
    from ..genotype import parse_genotype, to_dict
    from ..ir.export import space_json
    from ..ir.lower import compile_file
    from ..methods.spec import space_family
    from ..search.commands import (DEFAULT_DATA, _dataset, _device, _load_benchmark,
                                   dataset_name, network_for)
    from ..search.rundir import RunDir, versions
    from .recipes import default_recipe

    if not args.genotype:
        raise _user_error("give a GENOTYPE (or --resume RUN_DIR)")
    for flag, v, lo in (("--subset", args.subset, 2), ("--eval-every", args.eval_every, 1)):
        if v is not None and v < lo:
            raise _user_error(f"{flag} must be >= {lo}, got {v}")
    source, space_file, searched = _genotype_source(args.genotype, args.space)
    if space_file is None:
        raise _user_error("give --space SPACE.nas: the space the genotype was searched in")
    if Path(space_file).exists():
        space_file = str(Path(space_file).resolve())
    ir0 = compile_file(space_file)
    family = space_family(ir0)
    # a search run's genotype trains on the dataset it was searched on unless told otherwise
    dataset = dataset_name(args.dataset or searched.get("name"))
    recipe, network = resolve_recipe(args.recipe or default_recipe(family, dataset, ir0.name),
                                     args.set, dict(ir0.params), epochs=args.epochs,
                                     batch_size=args.batch_size)
    network = network_for(network, dataset)
    ir = compile_file(space_file, network)
    genotype = parse_genotype(source, ir=ir)
    benchmark = None
    if args.benchmark:
        from ..bench.nb201 import BenchmarkError
        try:
            benchmark = _load_benchmark(args.benchmark, ir).lookup(genotype)
        except BenchmarkError as e:
            raise _user_error(f"--benchmark: {e}") from None
    device = _device(args.device)
    root = args.data or (searched.get("root") if searched.get("name") == dataset else None) \
        or DEFAULT_DATA
    norm = "nb201" if family == "nb201" else "darts"
    ds = _dataset(datasets, dataset, root, norm, args.no_download)
    _check_runs(ir, genotype, recipe, ds)
    channels_last = bool(args.channels_last)
    train_b, test_b = _batches(ds, recipe, device, seed, args.subset, channels_last)
    config = {
        "kind": "train",
        "genotype": to_dict(genotype),
        "space_file": space_file,
        "space": space_json(ir),
        "family": family,
        "recipe": recipe.to_dict(),
        "network": network,
        "seed": seed,
        "deterministic": args.deterministic,
        "eval_every": args.eval_every or 1,
        "dataset": {"name": ds.name, "root": str(Path(root).expanduser().resolve()), "norm": norm,
                    "subset": args.subset, "train_images": train_b.num_samples,
                    "test_images": test_b.num_samples, "image_size": ds.image_size,
                    "classes": ds.num_classes},
        "device": device,
        "channels_last": channels_last,
        "precision": args.precision or "fp32",
        "benchmark": benchmark,
        "versions": versions(),
        "argv": sys.argv[1:],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = args.out.replace("{seed}", str(seed)) if args.out else None
    run = RunDir.create(out, space=ir.name, method=f"train-{recipe.name}", seed=seed)
    run.lock()
    try:
        run.write_config(config)
    except BaseException:
        run.close()
        raise
    return _Job(run, ir, genotype, recipe, train_b, test_b, seed, args.deterministic, device,
                channels_last, config["precision"], config["eval_every"], benchmark)


def _resumed(args, path, datasets: dict) -> _Job:
    from ..genotype import from_dict
    from ..ir.export import space_json
    from ..ir.lower import compile_file
    from ..search import checkpoint as ckpt
    from ..search.rundir import _jsonable
    from ..search.commands import DEFAULT_DATA, _dataset, _device
    from ..search.rundir import RunDir
    from .recipes import Recipe

    run = RunDir.open(path)
    run.lock()
    try:
        config = run.read_config()
        if not isinstance(config, dict) or config.get("kind") != "train":
            raise _user_error(f"--resume {run.path}: not a training run (a search run resumes "
                              f"with dslnas search --resume)")
        if not run.checkpoint_path.exists():
            raise _user_error(f"--resume {run.path}: the run stopped before its first "
                              f"checkpoint; delete the folder and start again")
        try:
            recipe = Recipe.from_dict(config["recipe"])
            ir = compile_file(config["space_file"], config["network"])
            genotype = from_dict(config["genotype"])
            ds_conf = config["dataset"]
            seed, deterministic = int(config["seed"]), bool(config["deterministic"])
        except (KeyError, TypeError, ValueError) as e:
            raise _user_error(f"{run.path / 'config.json'}: incomplete or malformed ({e})") \
                from None
        if json.loads(json.dumps(_jsonable(space_json(ir)))) != config.get("space"):
            raise _user_error(f"the space {config['space_file']} has changed since the run "
                              f"started; resuming would train another network")
        if args.deterministic and not deterministic:
            raise _user_error("--deterministic: the run was started without it; resume it as is")
        resume_state = ckpt.load(run.checkpoint_path)
        device = _device(args.device or config.get("device"))
        ds = _dataset(datasets, ds_conf["name"],
                      args.data or ds_conf.get("root") or DEFAULT_DATA,
                      ds_conf.get("norm", "darts"), args.no_download)
        channels_last = bool(args.channels_last if args.channels_last is not None
                             else config.get("channels_last"))
        train_b, test_b = _batches(ds, recipe, device, seed, ds_conf.get("subset"),
                                   channels_last)
        config["resumed"] = config.get("resumed", []) + [
            {"at_epoch": int(resume_state.get("epoch", 0)), "device": device,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}]
        config["channels_last"] = channels_last
        config["precision"] = args.precision or config.get("precision", "fp32")
    except BaseException:
        run.close()
        raise
    return _Job(run, ir, genotype, recipe, train_b, test_b, seed, deterministic, device,
                channels_last, config["precision"], int(config.get("eval_every", 1)),
                config.get("benchmark"), resume_state, config)


def _run(jobs: list[_Job], args) -> int:
    """Train every job (several in lockstep, one CUDA stream each), then summarise each and,
    for several, their mean and spread. The exit code is 128 + the signal's number when a
    signal stopped them."""
    from ..genotype import to_dict
    from ..search.commands import run_together
    from .trainer import train

    def run_one(job: _Job, should_stop, log, pass_baton):
        return train(job.ir, job.genotype, job.recipe, job.train, job.test, job.run,
                     device=job.device, seed=job.seed, deterministic=job.deterministic,
                     channels_last=job.channels_last, precision=job.precision,
                     compile_model=args.compile_model, resume_state=job.resume_state,
                     progress=not args.no_progress and log is None, stop_after=args.stop_after,
                     eval_every=job.eval_every,
                     checkpoint_every=60.0 * args.checkpoint_minutes or None,
                     should_stop=should_stop, log=log, after_iteration=pass_baton)

    for job in jobs:
        r = job.recipe
        size = ", ".join(f"{k}={v}" for k, v in job.ir.params
                         if k not in ("classes", "in_channels"))
        print(f"{job.run.path}: recipe {r.name} ({r.epochs} epoch{'s' * (r.epochs != 1)}, "
              f"batch {r.batch_size}; "
              f"network {size})", file=sys.stderr)
    results = run_together(jobs, run_one, "train")
    several = len(jobs) > 1
    errors = [r for r in results if isinstance(r, BaseException)]
    for job, result in zip(jobs, results):
        if not isinstance(result, BaseException):
            _summary(job, result)
        elif several:
            print(f"{job.run.path}: failed: {result}", file=sys.stderr)
    if errors:
        raise errors[0]
    accs = [r.test_acc for r in results if r.finished and r.test_acc is not None]
    same = len({(json.dumps(to_dict(j.genotype), sort_keys=True), json.dumps(
        j.recipe.to_dict(), sort_keys=True), j.ir.name, j.train.num_samples) for j in jobs}) == 1
    if several and same and len(accs) == len(results):
        import statistics
        print(f"test accuracy over {len(accs)} seeds: {statistics.mean(accs):.2f} ± "
              f"{statistics.stdev(accs):.2f} % (sample std; {min(accs):.2f}–{max(accs):.2f})")
    stopped = [r.interrupted for r in results if r.interrupted is not None]
    if stopped:
        return 128 + int(getattr(signal, stopped[0], signal.SIGINT))
    return 0


def _summary(job: _Job, result) -> None:
    last = result.history[-1] if result.history else {}
    run, recipe = job.run, job.recipe
    if not result.finished:
        print(f"{run.path}: stopped after epoch {result.epochs} of {recipe.epochs}; continue "
              f"with: dslnas train --resume {run.path}", file=sys.stderr)
        return
    run.write_summary({"finished": True, "epochs": result.epochs,
                       "test_acc": result.test_acc, "test_top5": last.get("test_top5"),
                       "parameters": result.parameters, "seconds": result.seconds,
                       "recipe": recipe.name, "seed": job.seed, "benchmark": job.benchmark})
    acc = "-" if result.test_acc is None else f"{result.test_acc:.2f}%"
    print(f"test accuracy {acc} after {result.epochs} epoch{'s' * (result.epochs != 1)}; "
          f"{result.parameters:,} parameters (without the auxiliary head); "
          f"{result.seconds:.0f} s; "
          f"model: {run.path / 'model.pt'}")
    if job.benchmark:
        print("NB201 table (its own 200-epoch training): " + ", ".join(
            f"{k} {v:.2f}" for k, v in job.benchmark.items()))
