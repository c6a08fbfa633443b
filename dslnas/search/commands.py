"""``dslnas search``, ``dslnas methods`` and ``dslnas evaluate``.

``add_commands(subparsers)`` registers the three subcommands on the CLI's subparsers. Every user
mistake (unknown method or dataset, bad numbers, a method that does not fit the space, missing
data, a corrupt checkpoint) becomes ``dslnas.cli.UserError``: exit 2 with a message.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ..methods.spec import ADA_MAX_RAISES, ES_MODES, ada_raises

__all__ = ["add_commands", "resolve_method", "method_from_dict", "method_to_dict",
           "split_sets", "SET_HELP"]

DEFAULT_DATA = "~/.cache/dslnas/data"
DATASET_SHAPES = {"cifar10": (3, 10), "cifar100": (3, 100), "svhn": (3, 10),  # channels, classes
                  "digits": (3, 10)}

SET_HELP = """\
--set KEY=VALUE (repeatable) is read by this rule, first match wins:
  1. PART.OPTION      a part option; PART is relaxation, hypergradient, discretizer or a
                      transform's name, e.g. hypergradient.K=3, partial_channels.K=2
  2. a schedule field epochs, batch_size, w_lr, w_lr_min, w_momentum, w_nesterov,
                      w_weight_decay, grad_clip, a_lr, a_betas, a_weight_decay,
                      warmup_epochs, inner_steps, split, order, drop_path, cutout,
                      cutout_prob, hessian_every, lanczos_steps, early_stop (stop,
                      simulate, ada, off), es_window, es_delta, es_factor, es_start,
                      ada_factor, ada_max_weight_decay (e.g. w_lr=0.01)
  3. a network parameter of the space (e.g. C=8, N=1; also classes, in_channels)
  4. OPTION           an option that exactly one part of the method has (e.g. K=2 for
                      pc-darts' partial_channels or idarts-ift's Neumann series)
Values: integers for network parameters; schedule fields by their type (true/false for
booleans, a_betas=0.5,0.999); part options as Python/TOML literals (2, 0.01, [4, 2], true).
--epochs, --batch-size, --split, --hessian-every and --early-stop win over --set, which
wins over --method-file, which wins over the method's per-space defaults (dslnas methods).

--method-file FILE.toml describes a custom combination of parts, on top of --method (or of
`base = "NAME"` in the file, or of plain DARTS parts):
  name = "my-method"
  relaxation = "softmax"                                 # or {name = "...", option = ...}
  hypergradient = {name = "neumann", K = 3}
  transforms = [{name = "partial_channels", K = 2}]      # or ["node_norm"]
  discretizer = "rule"
  [schedule]
  epochs = 20
  w_lr = 0.05
"""

PART_KINDS = ("relaxation", "hypergradient", "discretizer")
FILE_KEYS = ("name", "summary", "base", "relaxation", "hypergradient", "transforms",
             "discretizer", "schedule", "space_defaults")


def _user_error(msg: str):
    from ..cli import UserError
    return UserError(msg)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ============================================================================================
# parser
# ============================================================================================

def _nonneg_int(name):
    """An integer argument (the command checks its lower bound); at most 2**63 - 1, the most
    torch's seeds and sizes take."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            # a list option takes every word after it: `--seeds 0 1 space.nas` ate the space
            hint = (f" (give the space before {name}: it takes every number after it)"
                    if text.endswith(".nas") else "")
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}{hint}") \
                from None
        if v >= 2 ** 63:
            raise argparse.ArgumentTypeError(f"{name} is too large: {text}")
        return v
    return parse


def _minutes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:                                        # also NaN
        raise argparse.ArgumentTypeError(f"--checkpoint-minutes must be a number >= 0, "
                                         f"got {text!r}")
    return v


def add_speed_flags(p: argparse.ArgumentParser) -> None:
    """The speed levers that `search` and `bench` share; None (not given) means wherever they
    fit (docs/performance.md)."""
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="batch the edges leaving each node into fused kernels (same function; "
                        "default: on wherever the method allows)")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each search iteration as one CUDA graph (default: on for CUDA "
                        "and graph-safe methods, off with --deterministic)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   dest="compile_cells",
                   help="torch.compile each cell (same function within float tolerance; "
                        "default: on for CUDA; the architecture step of idarts-ift, "
                        "amended-darts and unrolled with exact=true runs eager cells)")


def add_commands(subparsers) -> None:
    s = subparsers.add_parser(
        "search", help="run a differentiable architecture search on a .nas space",
        description="Search SPACE.nas with a method; writes a run directory (config.json, "
                    "metrics.jsonl, tb/, checkpoint.pt, genotype.{json,txt,svg}).",
        epilog=SET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("space", nargs="?", help="a .nas file (not needed with --resume)")
    s.add_argument("--method", "-m", help="a method name (see `dslnas methods`)")
    s.add_argument("--method-file", metavar="SPEC.toml", help="a custom combination of parts")
    s.add_argument("--dataset", help="cifar10 (default) | cifar100 | svhn | digits (offline, tiny)")
    s.add_argument("--data", metavar="DIR", help=f"dataset folder (default {DEFAULT_DATA})")
    s.add_argument("--no-download", action="store_true",
                   help="never download the dataset; fail if it is not in --data")
    s.add_argument("--epochs", type=_nonneg_int("--epochs"), help="override the schedule")
    s.add_argument("--batch-size", type=_nonneg_int("--batch-size"),
                   help="override the schedule")
    s.add_argument("--seed", type=_nonneg_int("--seed"), help="random seed (default 0)")
    s.add_argument("--seeds", type=_nonneg_int("--seeds"), nargs="+", metavar="S",
                   help="search these seeds at once, in one process that gives each its own "
                        "CUDA stream and runs them in turn, one iteration each, so the GPU "
                        "overlaps their kernels; each computes what it computes alone (on the "
                        "CPU exactly; on a GPU as closely as two runs of one seed agree). With "
                        "--out, the path holds {seed}, e.g. --out runs/darts-s{seed}")
    s.add_argument("--subset", type=_nonneg_int("--subset"), metavar="N",
                   help="use only the first N training images (quick runs)")
    s.add_argument("--split", help="half (DARTS) | random (NB201): how the training images are "
                                   "split into weight and architecture halves")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a part option, schedule field or network parameter (see below)")
    s.add_argument("--hessian-every", type=_nonneg_int("--hessian-every"), metavar="N",
                   help="log the dominant eigenvalue of the validation loss's Hessian in the "
                        "architecture (RobustDARTS) after epoch 1, every N epochs after it and "
                        "after the last (from the dense Hessian; --set lanczos_steps=20: "
                        "from 20 Lanczos steps, 20 products instead of one per α entry)")
    s.add_argument("--early-stop", nargs="?", const="stop", metavar="MODE",
                   help="DARTS-ES: when that eigenvalue has grown by es_factor (1.3), 'stop' "
                        "(the default) returns the genotype from before the growth, 'simulate' "
                        "notes it (genotype_es.*) and searches on, 'ada' (DARTS-ADA) rolls "
                        "back to it, multiplies w's weight decay by ada_factor (3) up to "
                        "ada_max_weight_decay (0.0243) and searches on; measured every 2 "
                        "epochs unless hessian_every is given; thresholds: --set es_window, "
                        "es_delta, es_factor, es_start")
    s.add_argument("--benchmark", metavar="TABLE.csv",
                   help="an NB201 accuracy table: look the genotype up every epoch")
    s.add_argument("--out", metavar="DIR",
                   help="run directory (default runs/<space>-<method>-s<seed>-<time>/)")
    s.add_argument("--resume", metavar="RUN_DIR", nargs="+",
                   help="continue the run in RUN_DIR from its last checkpoint (several: "
                        "in lockstep, as --seeds runs them; its config.json "
                        "gives everything else; only --data, --device, --stop-after, "
                        "--checkpoint-minutes, --no-progress, --no-download, --deterministic, "
                        "--cuda-graphs, --compile and --channels-last may be given)")
    s.add_argument("--stop-after", type=_nonneg_int("--stop-after"), metavar="EPOCHS",
                   help="stop once this many epochs are done, as if interrupted (--resume later)")
    s.add_argument("--checkpoint-minutes", type=_minutes, default=10.0, metavar="M",
                   help="also checkpoint inside an epoch every M minutes (default 10; 0: only at "
                        "the end of each epoch). Ctrl-C or SIGTERM checkpoints after the "
                        "current step and stops; --resume goes on from that step")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    s.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels: a resumed run ends bit-identical to an "
                        "uninterrupted one")
    add_speed_flags(s)
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for the supernet and the data (default off; "
                        "a resumed run keeps its last setting unless given)")
    s.add_argument("--no-progress", action="store_true", help="plain epoch lines, no bar")
    s.set_defaults(func=cmd_search)

    m = subparsers.add_parser("methods", help="list the search methods, their parts and defaults")
    m.add_argument("--json", action="store_true", help="one JSON object")
    m.set_defaults(func=cmd_methods)

    e = subparsers.add_parser("evaluate", help="look a genotype up in a benchmark table")
    e.add_argument("genotype", help="an NB201 string, a genotype JSON file, or a run directory")
    e.add_argument("--benchmark", required=True, metavar="TABLE.csv", help="NB201 accuracy table")
    e.add_argument("--space", metavar="SPACE.nas", help="validate the genotype against a space")
    e.add_argument("--json", action="store_true", help="one JSON object")
    e.set_defaults(func=cmd_evaluate)

    from .bench import add_command as add_bench_command     # dslnas bench (search/bench.py)
    add_bench_command(subparsers)


# ============================================================================================
# method resolution
# ============================================================================================

def _schedule_fields() -> dict[str, attrs.Attribute]:
    from ..methods.spec import Schedule
    return {a.name: a for a in attrs.fields(Schedule)}


def _parse_bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _schedule_value(key: str, text: Any):
    """Convert ``text`` to the type of Schedule field ``key``."""
    from ..methods.spec import Schedule
    return typed_value(getattr(Schedule(), key), text, f"schedule field {key}")


def typed_value(default, text: Any, what: str):
    """``text`` (a command-line word, or a TOML value) as the type of ``default``; a value of
    another type is a user error that names ``what``."""
    try:
        if isinstance(default, bool):
            return text if isinstance(text, bool) else _parse_bool(text)
        if isinstance(default, int):
            if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
                raise ValueError
            return int(text)
        if isinstance(default, float):
            if isinstance(text, bool):
                raise ValueError
            return float(text)
        if isinstance(default, tuple):
            items = text if isinstance(text, (list, tuple)) else \
                str(text).strip().strip("()[]").split(",")
            out = tuple(float(x) for x in items)
            if len(out) != len(default):
                raise ValueError
            return out
        return str(text)
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise _user_error(f"{what}: expected {kind}"
                          f"{' pair' if kind == 'tuple' else ''}, got {text!r}") from None


def _literal(text: str):
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        return t


def _part(value, where: str):
    from ..methods.spec import Part
    if isinstance(value, str):
        return Part(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        opts = {k: v for k, v in value.items() if k != "name"}
        return Part(value["name"], opts)
    raise _user_error(f"{where}: expected a part name or a table with a `name` key, got {value!r}")


def method_to_dict(method) -> dict:
    """A resolved method spec as plain JSON (config.json)."""
    def part(p):
        return {"name": p.name, "options": dict(p.options)}
    return {"name": method.name, "summary": method.summary,
            "relaxation": part(method.relaxation), "hypergradient": part(method.hypergradient),
            "transforms": [part(t) for t in method.transforms],
            "discretizer": part(method.discretizer),
            "schedule": attrs.asdict(method.schedule)}


def method_from_dict(d: dict):
    """The inverse of :func:`method_to_dict` (used by --resume)."""
    from ..methods.spec import MethodSpec, Part, Schedule
    def part(p):
        return Part(p["name"], p.get("options") or {})
    sched = dict(d["schedule"])
    if "a_betas" in sched:
        sched["a_betas"] = tuple(sched["a_betas"])
    return MethodSpec(d["name"], d.get("summary", ""), part(d["relaxation"]),
                      part(d["hypergradient"]), tuple(part(t) for t in d["transforms"]),
                      part(d["discretizer"]), Schedule(**sched))


def _load_method_file(path: str) -> dict:
    import tomllib
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise _user_error(f"--method-file {p}: no such file") from None
    except OSError as e:
        raise _user_error(f"--method-file {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise _user_error(f"--method-file {p}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise _user_error(f"--method-file {p}: not a UTF-8 text file") from None
    unknown = [k for k in data if k not in FILE_KEYS]
    if unknown:
        raise _user_error(f"--method-file {p}: unknown key(s) {', '.join(unknown)} "
                          f"(allowed: {', '.join(FILE_KEYS)})")
    data.setdefault("name", p.stem)
    return data


def _base_method(name: str | None):
    from ..methods.spec import METHODS, MethodSpec, Part, Schedule
    if name is None:
        return MethodSpec("custom", "custom combination of parts", Part("softmax"),
                          Part("first_order"), (), Part("rule"), Schedule())
    if name not in METHODS:
        raise _user_error(f"unknown method {name!r}{_did_you_mean(name, METHODS)}; "
                          f"known: {', '.join(METHODS)} (see `dslnas methods`)")
    return METHODS[name]


def _part_slots(method) -> dict[str, tuple[str, int | None]]:
    """Qualifier -> (kind, transform index): relaxation, hypergradient, discretizer and each
    part's own name."""
    slots: dict[str, tuple[str, int | None]] = {k: (k, None) for k in PART_KINDS}
    for kind in PART_KINDS:
        slots.setdefault(getattr(method, kind).name, (kind, None))
    for i, t in enumerate(method.transforms):
        slots.setdefault(t.name, ("transforms", i))
    return slots


def _set_part_option(method, slot: tuple[str, int | None], key: str, value):
    from ..methods.spec import Part
    kind, index = slot
    if kind == "transforms":
        ts = list(method.transforms)
        ts[index] = Part(ts[index].name, {**ts[index].options, key: value})
        return attrs.evolve(method, transforms=tuple(ts))
    p = getattr(method, kind)
    return attrs.evolve(method, **{kind: Part(p.name, {**p.options, key: value})})


def split_sets(pairs: list[str] | None, method, network_params) -> tuple[dict, dict, list]:
    """Sort ``--set`` pairs by the documented rule (see SET_HELP) into schedule fields, network
    parameters and part options ``(slot, key, value)``."""
    sched_fields = _schedule_fields()
    slots = _part_slots(method)
    schedule, network, part_opts = {}, {}, []
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _user_error(f"--set expects KEY=VALUE, got {pair!r}")
        value = value.strip()
        if "." in key:
            q, _, opt = key.partition(".")
            if q not in slots or not opt:
                raise _user_error(f"--set {key}: {q!r} is not a part of method {method.name!r} "
                                  f"(parts: {', '.join(slots)})")
            part_opts.append((slots[q], opt, _literal(value)))
        elif key in sched_fields:
            schedule[key] = _schedule_value(key, value)
        elif key in network_params:
            try:
                network[key] = int(value)
            except ValueError:
                raise _user_error(f"--set {key}: network parameters are integers, "
                                  f"got {value!r}") from None
        else:
            owners = [(kind, i, p) for kind, i, p in _all_parts(method) if key in p.options]
            if len(owners) == 1:
                kind, i, p = owners[0]
                part_opts.append(((kind, i), key, _literal(value)))
            elif len(owners) > 1:
                names = ", ".join(f"{p.name}.{key}" for _, _, p in owners)
                raise _user_error(f"--set {key}: several parts have option {key!r}; "
                                  f"say which: {names}")
            else:
                options = sorted({k for _, _, p in _all_parts(method) for k in p.options})
                known = list(sched_fields) + list(network_params) + options
                raise _user_error(
                    f"--set {key}: not a schedule field, a network parameter of the space "
                    f"({', '.join(network_params)}) or an option of the method's parts"
                    f"{' (' + ', '.join(options) + ')' if options else ''}"
                    f"{_did_you_mean(key, known)}; see `dslnas search --help`")
    return schedule, network, part_opts


def _all_parts(method):
    for kind in PART_KINDS:
        yield kind, None, getattr(method, kind)
    for i, t in enumerate(method.transforms):
        yield "transforms", i, t


def _validate_schedule(s) -> None:
    from .loader import SPLITS
    problems = []
    if s.epochs < 1:
        problems.append(f"epochs must be >= 1, got {s.epochs}")
    if s.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {s.batch_size}")
    for k in ("w_lr", "w_lr_min", "a_lr", "w_weight_decay", "a_weight_decay", "grad_clip"):
        v = getattr(s, k)
        if not 0 <= v < float("inf"):                     # NaN fails too
            problems.append(f"{k} must be a finite number >= 0, got {v}")
    if not 0 <= s.w_momentum < 1:
        problems.append(f"w_momentum must be in [0, 1), got {s.w_momentum}")
    if not all(0 <= b < 1 for b in s.a_betas):
        problems.append(f"a_betas must be in [0, 1), got {s.a_betas}")
    if s.warmup_epochs < 0:
        problems.append(f"warmup_epochs must be >= 0, got {s.warmup_epochs}")
    if s.inner_steps < 1:
        problems.append(f"inner_steps must be >= 1, got {s.inner_steps}")
    if s.split not in SPLITS:
        problems.append(f"split must be one of {', '.join(SPLITS)}, got {s.split!r}")
    if s.order not in ("arch_first", "weights_first"):
        problems.append(f"order must be arch_first or weights_first, got {s.order!r}")
    if not 0 <= s.drop_path < 1:
        problems.append(f"drop_path must be in [0, 1), got {s.drop_path}")
    if s.cutout < 0:
        problems.append(f"cutout must be >= 0, got {s.cutout}")
    if not 0 <= s.cutout_prob <= 1:
        problems.append(f"cutout_prob must be in [0, 1], got {s.cutout_prob}")
    if s.hessian_every < 0:
        problems.append(f"hessian_every must be >= 0, got {s.hessian_every}")
    if s.lanczos_steps < 0:
        problems.append(f"lanczos_steps must be >= 0, got {s.lanczos_steps}")
    if s.early_stop not in ("",) + ES_MODES:
        problems.append(f"early_stop must be one of {', '.join(ES_MODES)} or off, got "
                        f"{s.early_stop!r}")
    if s.early_stop and s.hessian_every < 1:
        problems.append("early_stop watches the curvature: it needs hessian_every >= 1")
    if s.early_stop == "ada":
        if not 1 < s.ada_factor < float("inf"):
            problems.append(f"ada_factor must be a finite number > 1, got {s.ada_factor}")
        elif not 0 < s.w_weight_decay < s.ada_max_weight_decay < float("inf"):
            problems.append(f"ada_max_weight_decay ({s.ada_max_weight_decay:g}) must be "
                            f"finite and above w_weight_decay ({s.w_weight_decay:g}), and "
                            f"that above 0: DARTS-ADA multiplies the one up to the other")
        elif (raises := ada_raises(s)) > ADA_MAX_RAISES:
            problems.append(f"DARTS-ADA would raise w_weight_decay {raises} times (at most "
                            f"{ADA_MAX_RAISES}): raise ada_factor or lower ada_max_weight_decay")
    if s.es_window < 1 or s.es_window % 2 == 0:
        problems.append(f"es_window must be an odd number >= 1, got {s.es_window}")
    if s.es_delta < 1:
        problems.append(f"es_delta must be >= 1, got {s.es_delta}")
    if not 0 < s.es_factor < float("inf"):
        problems.append(f"es_factor must be a finite number > 0, got {s.es_factor}")
    if s.es_start < 1:
        problems.append(f"es_start must be >= 1, got {s.es_start}")
    if problems:
        raise _user_error("bad schedule: " + "; ".join(problems))


def resolve_method(name: str | None, method_file: str | None, sets: list[str] | None,
                   family: str, network_params, *, epochs=None, batch_size=None, split=None,
                   hessian_every=None, early_stop=None):
    """The method to run: base method or file, per-family defaults, file schedule, --set, flags.

    Returns ``(method, network_overrides, record)`` where ``record`` says what was overridden.
    """
    if name is None and method_file is None:
        raise _user_error("give --method NAME (see `dslnas methods`) or --method-file SPEC.toml")
    file = _load_method_file(method_file) if method_file else {}
    base_name = name if name is not None else file.get("base")
    method = _base_method(base_name)
    file_schedule: dict = {}
    if file:
        changes: dict[str, Any] = {"name": str(file["name"])}
        if "summary" in file:
            changes["summary"] = str(file["summary"])
        for kind in PART_KINDS:
            if kind in file:
                changes[kind] = _part(file[kind], f"--method-file {kind}")
        if "transforms" in file:
            ts = file["transforms"]
            if not isinstance(ts, list):
                raise _user_error("--method-file transforms: expected a list")
            changes["transforms"] = tuple(_part(t, "--method-file transforms") for t in ts)
        if "space_defaults" in file:
            sd = file["space_defaults"]
            if not isinstance(sd, dict) or not all(isinstance(v, dict) for v in sd.values()):
                raise _user_error("--method-file space_defaults: expected tables per family "
                                  "([space_defaults.nb201], [space_defaults.darts])")
            merged = {k: dict(v) for k, v in method.space_defaults.items()}
            for fam, vals in sd.items():
                merged.setdefault(fam, {}).update(
                    {k: _schedule_value(k, v) for k, v in vals.items() if _check_field(k)})
            changes["space_defaults"] = merged
        method = attrs.evolve(method, **changes)
        sched = file.get("schedule", {})
        if not isinstance(sched, dict):
            raise _user_error("--method-file schedule: expected a table")
        file_schedule = {k: _schedule_value(k, v) for k, v in sched.items() if _check_field(k)}
    method = method.for_family(family)
    sched_sets, network, part_opts = split_sets(sets, method, network_params)
    for slot, key, value in part_opts:
        method = _set_part_option(method, slot, key, value)
    flags = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size),
                               ("split", split), ("hessian_every", hessian_every),
                               ("early_stop", early_stop or None)) if v is not None}
    chosen = {**file_schedule, **sched_sets, **flags}
    schedule = attrs.evolve(method.schedule, **chosen)
    if schedule.early_stop and schedule.hessian_every == 0 and "hessian_every" not in chosen:
        chosen["hessian_every"] = 2                 # R-DARTS' scripts measure every 2 epochs
        schedule = attrs.evolve(schedule, hessian_every=2)
    _validate_schedule(schedule)
    method = attrs.evolve(method, schedule=schedule)
    record = {"schedule": chosen,
              "parts": [f"{'transforms[%d]' % i if kind == 'transforms' else kind}.{k}={v!r}"
                        for (kind, i), k, v in part_opts],
              "network": network, "method_file": method_file, "base": base_name}
    return method, network, record


def _check_field(key: str) -> bool:
    if key not in _schedule_fields():
        raise _user_error(f"--method-file schedule: unknown field {key!r}"
                          f"{_did_you_mean(key, _schedule_fields())} "
                          f"(fields: {', '.join(_schedule_fields())})")
    return True


# ============================================================================================
# dslnas search
# ============================================================================================

def _device(name: str | None) -> str:
    import torch
    name = name or "auto"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise _user_error("--device cuda: no CUDA device is available (use --device cpu)")
    return name


def cmd_search(args) -> int:
    from ..bench.nb201 import BenchmarkError
    from ..genotype import GenotypeError
    from .checkpoint import CheckpointError
    from .datasets import DataError
    from .loop import MethodError, SearchError
    from .rundir import RunDirError
    try:
        return _search(args)
    except (DataError, CheckpointError, RunDirError, BenchmarkError, GenotypeError,
            MethodError, SearchError) as e:
        raise _user_error(str(e)) from None


_RESUME_OK = ("resume", "data", "device", "stop_after", "checkpoint_minutes", "no_progress",
              "func", "command",
              "cuda_graphs", "compile_cells", "channels_last",
              "deterministic", "no_download")


@attrs.define
class _Job:
    """One search that ``dslnas search`` runs: its run directory, space, method and data."""
    run: Any
    ir: Any
    method: Any
    data: Any
    seed: int
    deterministic: bool
    device: str
    channels_last: bool
    benchmark: Any = None
    resume_state: dict | None = None
    config: dict | None = None      # a resumed run's config.json, written once all are checked


def refuse_with_resume(args, allowed: tuple[str, ...]) -> None:
    """A resumed run takes its configuration from its config.json: any other option given
    (even one that looks like its default) is an error that names it."""
    given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
             if k not in allowed and v is not None and v is not False and v != []]
    if given:
        raise _user_error(f"--resume takes the configuration from the run's config.json; "
                          f"do not combine it with {', '.join(given)}")


def _search(args) -> int:
    if args.early_stop is not None and args.early_stop not in ES_MODES:
        if args.space is not None:
            raise _user_error(f"--early-stop: expected one of {', '.join(ES_MODES)}, got "
                              f"{args.early_stop!r}")
        # `--early-stop SPACE.nas ...`: the optional MODE took the space
        args.space, args.early_stop = args.early_stop, "stop"
    jobs = jobs_to_run(args, _RESUME_OK, _resume_job, _fresh_job, "runs/nb201-darts-s{seed}")
    return _run_jobs(jobs, args)


def jobs_to_run(args, resume_ok: tuple[str, ...], resume_one, fresh_one, example: str) -> list:
    """The runs a `search` or `train` command asks for: ``resume_one(args, run_dir, datasets)``
    for each ``--resume`` folder, else ``fresh_one(args, seed, datasets)`` for each seed (the
    datasets loaded once for all). Every run is checked before any is noted as resumed; if one
    fails, the ones made so far are closed."""
    if args.stop_after is not None and args.stop_after < 1:
        raise _user_error(f"--stop-after must be >= 1, got {args.stop_after}")
    datasets: dict = {}
    if args.resume:
        refuse_with_resume(args, resume_ok)
        if len({Path(d).resolve() for d in args.resume}) < len(args.resume):
            raise _user_error("--resume: a run directory is named twice")
        jobs = _each(args.resume, lambda d: resume_one(args, d, datasets))
    else:
        seeds = _seeds_to_run(args, example)
        jobs = _each(seeds, lambda seed: fresh_one(args, seed, datasets))
    _start_together(jobs)
    return jobs


def _seeds_to_run(args, example: str) -> list[int]:
    """The seeds of ``--seed``/``--seeds``, checked, with every ``--out`` folder free before
    any is made (``example``: an --out with {seed}, for the message)."""
    from .rundir import RunDir
    if args.seed is not None and args.seeds:
        raise _user_error("give --seed or --seeds, not both")
    seeds = args.seeds or [0 if args.seed is None else args.seed]
    if min(seeds) < 0:
        raise _user_error(f"--seed{'s' if args.seeds else ''} must be >= 0, got {min(seeds)}")
    if len(set(seeds)) < len(seeds):
        raise _user_error(f"--seeds: a seed is given twice ({' '.join(map(str, seeds))})")
    if len(seeds) > 1 and args.out and "{seed}" not in args.out:
        raise _user_error(f"--out {args.out}: with several seeds the path needs {{seed}}, "
                          f"e.g. --out {example}")
    if args.out:
        for seed in seeds:
            RunDir.check_free(args.out.replace("{seed}", str(seed)))
    return seeds


def _start_together(jobs) -> None:
    """Runs that one process runs together share their device and determinism; once that is
    checked, the resumed ones note their resume in config.json (a failed check changes none)."""
    for what in ("device", "deterministic"):
        if len({getattr(j, what) for j in jobs}) > 1:
            for job in jobs:
                job.run.close()
            raise _user_error(f"--resume: the runs differ in {what}; resume them one by one")
    for job in jobs:
        if job.config is not None:
            job.run.write_config(job.config)


def _each(items, make) -> list[_Job]:
    """``make`` a job of each item; if one fails, the runs made so far are closed (unlocked)."""
    jobs: list[_Job] = []
    try:
        for item in items:
            jobs.append(make(item))
    except BaseException:
        for job in jobs:
            job.run.close()
        raise
    return jobs


@contextmanager
def _closed_on_error(run):
    """Close (and so unlock) ``run`` if what the block does fails."""
    try:
        yield
    except BaseException:
        run.close()
        raise


def _resume_job(args, resume_dir, datasets: dict) -> _Job:
    from .rundir import RunDir

    run = RunDir.open(resume_dir)
    run.lock()
    with _closed_on_error(run):
        return _resumed(args, run, datasets)


def _resumed(args, run, datasets: dict) -> _Job:
    """The job of ``--resume`` with ``run`` locked."""
    from ..ir.export import space_json
    from ..ir.lower import compile_file
    from . import checkpoint as ckpt
    from .rundir import _jsonable

    config = run.read_config()
    if isinstance(config, dict) and config.get("kind") == "train":
        raise _user_error(f"--resume {run.path}: a training run; continue it with "
                          f"dslnas train --resume {run.path}")
    if not run.checkpoint_path.exists():
        raise _user_error(f"--resume {run.path}: the run stopped before its first "
                          f"checkpoint, so there is nothing to resume; delete the folder "
                          f"and start the search again")
    try:
        method = method_from_dict(config["method"])
        space_file = config["space_file"]
        network = config["overrides"]["network"]
        ds_conf = config["dataset"]
        seed = int(config["seed"])
        deterministic = bool(config["deterministic"])
        bench_path = config.get("benchmark")
    except (KeyError, TypeError, ValueError) as e:
        raise _user_error(f"{run.path / 'config.json'}: incomplete or malformed ({e})") from None
    if args.deterministic and not deterministic:
        raise _user_error("--deterministic: the run was started without it; resume it as is")
    ir = compile_file(space_file, network)
    if json.loads(json.dumps(_jsonable(space_json(ir)))) != config.get("space"):
        raise _user_error(f"the space {space_file} has changed since the run started; "
                          f"resuming would search another space")
    resume_state = ckpt.load(run.checkpoint_path)
    # a resumed run keeps its device unless told otherwise (the data streams' generator states
    # are per device type)
    device = _device(args.device or config.get("device"))
    benchmark = _load_benchmark(bench_path, ir)
    ds = _dataset(datasets, ds_conf["name"], args.data or ds_conf.get("root") or DEFAULT_DATA,
                  ds_conf.get("norm", "darts"), args.no_download)
    channels_last = bool(args.channels_last if args.channels_last is not None
                         else config.get("channels_last"))
    data = _search_data(ds, method, device, seed, ds_conf.get("subset"), channels_last)
    config["resumed"] = config.get("resumed", []) + [
        {"at_epoch": int(resume_state.get("epoch", 0)), "device": device,
         "channels_last": channels_last, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}]
    config["channels_last"] = channels_last      # what the next resume keeps
    return _Job(run, ir, method, data, seed, deterministic, device, channels_last, benchmark,
                resume_state, config)


def _fresh_job(args, seed: int, datasets: dict) -> _Job:
    from ..ir.export import space_json
    from ..ir.lower import compile_file
    from ..methods.spec import space_family
    from .loop import check_method
    from .rundir import RunDir, versions

    if not args.space:
        raise _user_error("give a SPACE.nas file (or --resume RUN_DIR)")
    for flag, v, lo in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                        ("--subset", args.subset, 2)):
        if v is not None and v < lo:
            raise _user_error(f"{flag} must be >= {lo}, got {v}")
    dataset = dataset_name(args.dataset)
    root = args.data or DEFAULT_DATA
    space_file = str(Path(args.space).resolve()) if Path(args.space).exists() else args.space
    ir0 = compile_file(space_file)
    family = space_family(ir0)
    method, network, record = resolve_method(
        args.method, args.method_file, args.set, family, dict(ir0.params),
        epochs=args.epochs, batch_size=args.batch_size, split=args.split,
        hessian_every=args.hessian_every, early_stop=args.early_stop)
    norm = "nb201" if family == "nb201" else "darts"
    network = network_for(network, dataset)
    ir = compile_file(space_file, network)
    check_method(ir, method)            # before the (maybe long) data loading
    device = _device(args.device)
    benchmark = _load_benchmark(args.benchmark, ir)     # fail early, before the data is loaded
    out = args.out.replace("{seed}", str(seed)) if args.out else None
    ds = _dataset(datasets, dataset, root, norm, args.no_download)
    channels_last = bool(args.channels_last)
    data = _search_data(ds, method, device, seed, args.subset, channels_last)
    config = {
        "space_file": space_file,
        "space": space_json(ir),
        "family": family,
        "method": method_to_dict(method),
        "overrides": {**record, "network": network},
        "seed": seed,
        "deterministic": args.deterministic,
        "dataset": {"name": ds.name, "root": str(Path(root).expanduser().resolve()), "norm": norm,
                    "subset": args.subset, "split": method.schedule.split, "split_seed": 0,
                    "train_images": data.train.num_samples,
                    "val_images": data.val.num_samples,
                    "image_size": ds.image_size, "classes": ds.num_classes},
        "device": device,
        "channels_last": channels_last,
        "benchmark": str(Path(args.benchmark).resolve()) if args.benchmark else None,
        "versions": versions(),
        "argv": sys.argv[1:],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    run = RunDir.create(out, space=ir.name, method=method.name, seed=seed)
    run.lock()
    with _closed_on_error(run):
        run.write_config(config)
    return _Job(run, ir, method, data, seed, args.deterministic, device, channels_last,
                benchmark)


def dataset_name(text: str | None) -> str:
    """The dataset ``text`` names (default cifar10), as a key of DATASETS."""
    from .datasets import DATASETS
    name = (text or "cifar10").lower().replace("-", "").replace("_", "")
    if name not in DATASETS:
        raise _user_error(f"unknown dataset {text!r}{_did_you_mean(name, DATASETS)}; choose "
                          f"one of {', '.join(DATASETS)}")
    return name


def network_for(network: dict, dataset: str) -> dict:
    """The network parameters with the dataset's input channels and classes (the user may
    set them only to the same)."""
    channels, classes = DATASET_SHAPES[dataset]
    for key, want in (("in_channels", channels), ("classes", classes)):
        if network.get(key, want) != want:
            raise _user_error(f"--set {key}={network[key]}: dataset {dataset} has {want}")
    return {"in_channels": channels, "classes": classes, **network}


def _dataset(cache: dict, name: str, root, norm: str, no_download: bool):
    from .datasets import load_dataset
    key = (name, str(Path(root).expanduser()), norm)
    if key not in cache:
        ds = load_dataset(name, Path(root).expanduser(), norm=norm, download=not no_download)
        if (ds.in_channels, ds.num_classes) != DATASET_SHAPES[ds.name]:
            raise _user_error(f"dataset {ds.name}: unexpected {ds.in_channels} channels and "
                              f"{ds.num_classes} classes")
        cache[key] = ds
    return cache[key]


def _search_data(ds, method, device: str, seed: int, subset, channels_last: bool):
    from .loader import SearchData
    return SearchData.from_dataset(ds, batch_size=method.schedule.batch_size, device=device,
                                   split=method.schedule.split, split_seed=0, seed=seed,
                                   subset=subset, channels_last=channels_last,
                                   cutout=method.schedule.cutout)


def _serial_on_gpu(jobs: list[_Job]) -> bool:
    """Whether searches in lockstep must also take turns on the GPU (``Lockstep(serial=...)``):
    on CUDA, when one of them samples random numbers in its steps (DrNAS)."""
    from .loop import make_parts
    return jobs[0].device == "cuda" and any(make_parts(j.method).relaxation.samples
                                            or j.method.schedule.drop_path > 0 for j in jobs)


def run_together(jobs: list, run_one, command: str = "search", serial: bool = False) -> list:
    """Run each job as ``run_one(job, should_stop, log, after_iteration)``: one as it is,
    several in lockstep (one CUDA stream each, ``serial``: taking turns on the GPU too; each
    line they log starts with the run folder's name). Ctrl-C and SIGTERM ask every one to stop
    after its current step with a checkpoint (``command`` resumes them). Returns each one's
    result, or in lockstep the exception it raised."""
    from contextlib import ExitStack
    from functools import partial

    from .lockstep import Lockstep

    several = len(jobs) > 1
    for job in jobs:
        print(f"run directory: {job.run.path}", file=sys.stderr)

    def one(job, should_stop, pass_baton=None):
        log = None
        if several:                             # every line says whose it is
            name = job.run.path.name
            log = lambda line: print(f"[{name}] {line}", file=sys.stderr, flush=True)  # noqa: E731
        return run_one(job, should_stop, log, pass_baton)

    with ExitStack() as stack:
        for job in jobs:
            stack.enter_context(job.run)
        should_stop = stack.enter_context(_stop_signals([j.run.path for j in jobs], command))
        if several:
            return Lockstep(jobs[0].device, serial=serial).run(
                [partial(one, j, should_stop) for j in jobs])
        return [one(jobs[0], should_stop)]


def _run_jobs(jobs: list[_Job], args) -> int:
    """Run the searches (``run_together``); then each one's summary. The exit code is 128 +
    the signal's number when a signal stopped them."""
    from .loop import search

    def run_one(job: _Job, should_stop, log, pass_baton):
        return search(job.ir, job.method, job.data, job.run, device=job.device, seed=job.seed,
                      deterministic=job.deterministic, resume_state=job.resume_state,
                      benchmark=job.benchmark, progress=not args.no_progress and log is None,
                      stop_after=args.stop_after, channels_last=job.channels_last,
                      cuda_graphs=args.cuda_graphs, fused=args.fused,
                      compile_cells=args.compile_cells,
                      checkpoint_every=60.0 * args.checkpoint_minutes or None,
                      should_stop=should_stop, log=log, after_iteration=pass_baton)

    serial = len(jobs) > 1 and _serial_on_gpu(jobs)
    if serial:
        print("lockstep: the steps draw random numbers (a sampling relaxation or drop-path) "
              "inside the CUDA graphs, whose random offsets all graphs share: the searches "
              "take turns on the GPU too", file=sys.stderr)
    results = run_together(jobs, run_one, "search", serial)
    errors = [r for r in results if isinstance(r, BaseException)]
    for job, result in zip(jobs, results):
        if not isinstance(result, BaseException):
            _summary(result, job.method, job.ir, job.run)
        elif len(errors) < len(jobs):
            print(f"{job.run.path}: failed: {result}", file=sys.stderr)
    if errors:
        raise errors[0]
    stopped = [r.interrupted for r in results if r.interrupted is not None]
    if stopped:                     # as the signal's default would: 130 / 143
        return 128 + int(getattr(signal, stopped[0], signal.SIGINT))
    return 0


@contextmanager
def _stop_signals(run_dirs: list[Path], command: str = "search"):
    """Ctrl-C (SIGINT) and SIGTERM ask the runs to stop after their current step, with a
    checkpoint; a second one stops at once (the last checkpoints stay). Yields ``should_stop``;
    ``command`` is the dslnas command that resumes them."""
    from .checkpoint import CHECKPOINT_NAME
    asked: list[str] = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)
        print(f"\n{asked[0]}: stopping after the current step (again to stop at once)",
              file=sys.stderr, flush=True)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: asked[0] if asked else None
    except KeyboardInterrupt:
        saved = [d for d in run_dirs if (Path(d) / CHECKPOINT_NAME).exists()]
        for run_dir in run_dirs:
            if run_dir not in saved:
                print(f"stopped before the first checkpoint; {run_dir} holds nothing to resume",
                      file=sys.stderr)
        if saved:
            print(f"the last checkpoint{'s stay' if len(saved) > 1 else ' stays'}; continue "
                  f"with: dslnas {command} --resume {' '.join(map(str, saved))}", file=sys.stderr)
        raise
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _load_benchmark(path, ir):
    if not path:
        return None
    from ..bench.nb201 import BenchmarkTable
    table = BenchmarkTable.load(path)
    if ir is not None and (len(ir.groups) != 1 or ir.cell(ir.groups[0].cell).derive.kind != "argmax"):
        raise _user_error(f"--benchmark: space {ir.name!r} is not NB201-like (one shared cell "
                          f"derived by argmax), so its genotypes cannot be looked up")
    return table


def _summary(result, method, ir, run) -> None:
    from ..genotype import GenotypeError, to_darts_text, to_nb201_string
    g = result.genotype
    try:
        text = to_nb201_string(g)
    except GenotypeError:
        try:
            text = to_darts_text(g)
        except GenotypeError:
            from ..genotype import to_json
            text = to_json(g)
    status = ("finished" if result.finished else f"stopped after epoch {result.epochs}"
              if result.interrupted is None else
              f"stopped ({result.interrupted}) with {result.epochs} epochs done")
    lines = [f"search {status}: space {ir.name}, method {method.name}, "
             f"{result.epochs}/{method.schedule.epochs} epochs, {result.seconds:.1f} s",
             f"genotype:  {text}"]
    es, mode = result.early_stop, method.schedule.early_stop
    if es:
        why = (f"the curvature's local average is {es['ratio']:.2f}x that centred on epoch "
               f"{es['genotype_epoch']}")
        lines.insert(1, f"DARTS-ES stopped it after epoch {es['epoch']}: {why}, whose genotype "
                        f"it returns" if mode == "stop" else
                        f"DARTS-ES would have stopped it after epoch {es['epoch']} ({why}) and "
                        f"returned that epoch's genotype" +
                        (": genotype_es.txt" if result.finished else ""))
    for r in result.rollbacks:
        lines.append(f"DARTS-ADA: after epoch {r['epoch']} rolled back to epoch "
                     f"{r['genotype_epoch']} (ratio {r['ratio']:.2f}), w weight decay "
                     f"{r['w_weight_decay']:g} from then on")
    if result.benchmark:
        lines.append("benchmark: " + ", ".join(f"{k} {v:.2f}" for k, v in result.benchmark.items()))
    elif result.history and "benchmark_error" in result.history[-1]:
        lines.append(f"benchmark: {result.history[-1]['benchmark_error']}")
    lines.append(f"run dir:   {run.path}")
    if not result.finished:
        lines.append(f"continue:  dslnas search --resume {run.path}")
    else:                           # the evaluation phase (docs/training.md)
        lines.append(f"train it:  dslnas train {run.path}")
    print("\n".join(lines))
    run.write_summary({"finished": result.finished, "epochs": result.epochs,
                       "seconds": result.seconds, "genotype": text,
                       "benchmark": result.benchmark, "darts_es": mode or None,
                       "early_stop": es, "ada_rollbacks": result.rollbacks})


# ============================================================================================
# dslnas methods
# ============================================================================================

def _schedule_brief(s) -> str:
    bits = [f"{s.epochs} epochs", f"batch {s.batch_size}",
            f"w SGD lr {s.w_lr:g}->{s.w_lr_min:g} mom {s.w_momentum:g}"
            f"{' nesterov' if s.w_nesterov else ''} wd {s.w_weight_decay:g} clip {s.grad_clip:g}",
            f"α Adam lr {s.a_lr:g} betas {tuple(s.a_betas)} wd {s.a_weight_decay:g}"]
    if s.warmup_epochs:
        bits.append(f"warm-up {s.warmup_epochs}")
    if s.inner_steps != 1:
        bits.append(f"T={s.inner_steps} weight steps per α step")
    bits.append(f"split {s.split}, {s.order.replace('_', ' ')}")
    if s.hessian_every:
        how = f" ({s.lanczos_steps} Lanczos steps)" if s.lanczos_steps else ""
        bits.append(f"∇²_α L_val eigenvalue every {s.hessian_every} epochs{how}")
    if s.early_stop:
        mode = " simulated" if s.early_stop == "simulate" else ""
        bits.append(f"DARTS-ES{mode} (window {s.es_window}, delta {s.es_delta}, factor "
                    f"{s.es_factor:g}, from epoch {s.es_start})")
    if s.early_stop == "ada":
        bits.append(f"DARTS-ADA (w weight decay ×{s.ada_factor:g} per decision, up to "
                    f"{s.ada_max_weight_decay:g})")
    return ", ".join(bits)


def cmd_methods(args) -> int:
    from ..methods.spec import METHODS
    families = ("darts", "nb201")
    if args.json:
        out = {name: {f: method_to_dict(m.for_family(f)) for f in families}
               for name, m in METHODS.items()}
        print(json.dumps(out, indent=2))
        return 0
    width = max(map(len, METHODS))
    for name, m in METHODS.items():
        print(f"{name:<{width}}  {m.summary}")
        for fam in families:
            spec = m.for_family(fam)
            ts = ", ".join(map(str, spec.transforms)) or "-"
            print(f"  {fam:<6} parts: relaxation {spec.relaxation}; hypergradient "
                  f"{spec.hypergradient}; transforms {ts}; discretizer {spec.discretizer}")
            print(f"  {'':<6} schedule: {_schedule_brief(spec.schedule)}")
        print()
    print("families: darts = top-k spaces (darts, s1-s4); nb201 = argmax spaces (nb201). "
          "Override with --set (see `dslnas search --help`).")
    return 0


# ============================================================================================
# dslnas evaluate
# ============================================================================================

def run_genotype(source: str) -> str:
    """``source`` itself, or for a run directory its genotype: a finished search's
    genotype.json, or the genotype a training run (``dslnas train``) trains."""
    p = Path(source)
    if not p.is_dir():
        return source
    if (p / "genotype.json").is_file():
        return str(p / "genotype.json")
    if not (p / "config.json").is_file():
        raise _user_error(f"{p}: not a dslnas run directory (no config.json)")
    from .rundir import RunDir, RunDirError
    try:
        config = RunDir.open(p, tensorboard=False).read_config()
    except RunDirError as e:
        raise _user_error(str(e)) from None
    if isinstance(config, dict) and config.get("kind") == "train" \
            and isinstance(config.get("genotype"), dict):
        return json.dumps(config["genotype"])
    latest = (" (it has not finished; its latest genotype is in metrics.jsonl)"
              if (p / "metrics.jsonl").is_file() else " (it has not finished an epoch yet)")
    raise _user_error(f"{p}: no genotype.json{latest}")


def cmd_evaluate(args) -> int:
    from ..bench.nb201 import BenchmarkError, BenchmarkTable
    from ..genotype import GenotypeError, parse_genotype, to_nb201_string
    try:
        source = run_genotype(args.genotype)
        ir = None
        if args.space:
            from ..ir.lower import compile_file
            ir = compile_file(args.space)
        genotype = parse_genotype(source, ir=ir)
        table = BenchmarkTable.load(args.benchmark)
        try:
            arch = to_nb201_string(genotype)
        except GenotypeError as e:
            raise _user_error(f"not an NB201 architecture ({e}); a benchmark table covers "
                              f"NB201 cells only: evaluate this genotype by training it with "
                              f"dslnas train (docs/training.md)") from None
        acc = table.lookup(genotype)
    except (BenchmarkError, GenotypeError) as e:
        raise _user_error(str(e)) from None
    if args.json:
        print(json.dumps({"arch": arch, "accuracy": acc}))
    else:
        print(arch)
        for k, v in acc.items():
            print(f"  {k:<16} {v:.2f}")
    return 0
