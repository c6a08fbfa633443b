"""``dslnas``: the command line. Every user mistake exits 2 with a message, never a traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .dsl.errors import DSLError


class UserError(Exception):
    """A mistake in the command line or its inputs: print the message and exit 2."""


def _overrides(pairs: list[str]) -> dict[str, int]:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects NAME=VALUE, got {pair!r}")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise UserError(f"--set {key}: expected an integer, got {value!r}") from None
    return out


def _compile(args):
    from .ir.lower import compile_file
    return compile_file(args.space, _overrides(args.set))


def cmd_compile(args) -> int:
    from .ir.export import space_dot, space_json
    from .report import compile_report
    from .supernet.network import build, count_parameters

    ir = _compile(args)
    import torch
    with torch.device("meta"):      # shapes only: counting needs no memory and no random init
        net = build(ir)
    params = count_parameters(net.weight_parameters())
    data = space_json(ir)
    data["supernet_params"] = params
    if args.emit:
        target = Path(args.emit)
        if target.suffix == ".json":
            _write(target, json.dumps(data, indent=2) + "\n")
        elif target.suffix == ".dot":
            _write(target, space_dot(ir))
        else:
            raise UserError(f"--emit: unknown format {target.suffix!r} (use .json or .dot)")
    if args.render:
        _render_cells(ir, Path(args.render))
    if args.json:
        print(json.dumps(data))
    else:
        print(compile_report(ir, params))
    return 0


def _render_cells(ir, folder: Path) -> None:
    from .ir.export import cell_dot
    from .render import RenderError, render_dot
    no_dot = None
    for cell in ir.used_cells:
        target = folder / f"{cell.name}.svg"
        try:
            render_dot(cell_dot(cell), target)
            print(f"rendered {target}", file=sys.stderr)
        except RenderError as e:
            if e.dot_path is None:                  # not written at all
                raise UserError(str(e)) from None
            no_dot = no_dot or e                    # graphviz missing: each cell's .dot written
            print(f"wrote {e.dot_path}", file=sys.stderr)
    if no_dot is not None:
        print(f"note: {no_dot}", file=sys.stderr)


def cmd_render(args) -> int:
    from .genotype import GenotypeError, parse_genotype
    from .render import RenderError, render_genotype
    from .search.commands import run_genotype
    try:
        genotype = parse_genotype(run_genotype(args.genotype))
    except GenotypeError as e:
        raise UserError(str(e)) from None
    target = Path(args.output)
    try:
        render_genotype(genotype, target)
    except RenderError as e:
        raise UserError(str(e)) from None
    print(f"wrote {target}")
    return 0


def _write(path: Path, text: str) -> None:
    from .render import RenderError, write_file
    try:
        write_file(path, text)
    except RenderError as e:
        raise UserError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dslnas", description="Differentiable NAS from a search-space language.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compile", help="check a .nas space and show what it means")
    c.add_argument("space", help="a .nas file")
    c.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override a network parameter, e.g. --set C=36 (repeatable)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    c.add_argument("--emit", metavar="FILE", help="also write the IR as FILE.json or FILE.dot")
    c.add_argument("--render", metavar="DIR", help="render each supernet cell to DIR/CELL.svg")
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("render", help="draw a genotype with graphviz")
    r.add_argument("genotype", help="a JSON file, an NB201 string, DARTS Genotype(...) text or "
                                    "a run directory (search or train)")
    r.add_argument("-o", "--output", required=True, help="FILE.svg | .png | .pdf | .dot")
    r.set_defaults(func=cmd_render)

    from .search.commands import add_commands
    add_commands(sub)
    from .train.commands import add_command as add_train_command
    add_train_command(sub)

    rep = sub.add_parser("report", help="runs side by side, mean ± std over each group's seeds",
                         description="Tabulate search and training runs: every run, and mean ± "
                                     "sample std over the finished runs of each group that "
                                     "differs in the seed only (same space, method or "
                                     "training recipe, dataset; for training, same genotype).")
    rep.add_argument("runs", nargs="+", metavar="RUN_DIR",
                     help="run directories of `dslnas search` or `dslnas train`, or folders "
                          "holding them (e.g. runs/)")
    rep.add_argument("--benchmark", metavar="TABLE.csv",
                     help="an NB201 accuracy table: look up the genotypes of searches that did "
                          "not look them up themselves")
    rep.add_argument("--json", action="store_true", help="one JSON object: groups and runs")
    rep.set_defaults(func=cmd_report)
    return p


def cmd_report(args) -> int:
    import attrs

    from .runs import RunError, format_report, groups, read_run, run_dirs
    table = None
    if args.benchmark:
        from .bench.nb201 import BenchmarkError, BenchmarkTable
        try:
            table = BenchmarkTable.load(args.benchmark)
        except BenchmarkError as e:
            raise UserError(f"--benchmark: {e}") from None
    try:
        runs = [read_run(p, table) for p in run_dirs(args.runs)]
    except RunError as e:
        raise UserError(str(e)) from None
    if args.json:
        as_dicts = [attrs.asdict(r, value_serializer=lambda _, __, v: str(v)
                                 if isinstance(v, Path) else v) for r in runs]
        print(json.dumps({"groups": groups(runs), "runs": as_dicts}, indent=2))
    else:
        print(format_report(runs))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DSLError as e:
        print(e.render(), file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
    except (MemoryError, RuntimeError) as e:
        text = str(e)
        if not isinstance(e, MemoryError) and "allocate memory" not in text \
                and "out of memory" not in text.lower():
            raise
        if getattr(args, "resume", None):    # its config fixes the network and batch size
            hint = ("a resumed run keeps its network and batch size, so free memory on the "
                    "device" + (" or resume fewer runs at once" if len(args.resume) > 1 else "")
                    + ", or start a new search with a smaller network or --batch-size")
        else:
            hint = ("try a smaller network (--set C=..., fewer cells) or --batch-size"
                    + (", or fewer --seeds at once" if len(getattr(args, "seeds", None) or ()) > 1
                       else ""))
        print(f"error: not enough memory ({text.splitlines()[0] if text else 'MemoryError'}); "
              f"{hint}", file=sys.stderr)
    except UnicodeDecodeError as e:  # a binary file where text was expected, wherever it was read
        print(f"error: an input file is not UTF-8 text ({e.reason} at byte {e.start})",
              file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # e.g. `dslnas methods | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 2


if __name__ == "__main__":
    # `python -m dslnas.cli` runs this file as __main__, a second copy of the module; the
    # package's own main() catches the errors the package raises
    from dslnas.cli import main as package_main
    sys.exit(package_main())
