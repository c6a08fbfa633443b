"""``dslnas report RUN...``: a study's runs side by side, and mean ± std over the seeds of each
group of runs that differ in their seed only.

A run is a directory that ``dslnas search`` or ``dslnas train`` wrote: ``config.json`` says what
ran (space, method or training recipe, dataset, seed), ``summary.json`` what a finished run
found, and an unfinished run's last ``metrics.jsonl`` record how far it got. Scores: a search's
benchmark accuracies (its own lookups, or ``--benchmark``'s for its final or latest genotype), a
training run's test accuracy. Unfinished runs are listed but left out of the means.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path

import attrs

from .genotype import Genotype, GenotypeError, from_dict, to_json, to_nb201_string

__all__ = ["Run", "RunError", "format_report", "groups", "mean_std", "read_run", "run_dirs"]


class RunError(ValueError):
    """A path that is not a readable run directory."""


@attrs.frozen
class Run:
    path: Path
    kind: str                       # "search" | "train"
    space: str
    what: str                       # the search method, or "train <recipe>"
    dataset: str
    seed: int
    finished: bool
    epochs: int                     # epochs done
    epochs_total: int | None
    seconds: float | None
    genotype: str | None            # NB201 string, or "#" + a digest of the genotype's JSON
    scores: dict[str, float]        # benchmark accuracies (search) or test accuracy (train)
    notes: tuple[str, ...] = ()     # DARTS-ES / DARTS-ADA
    # the configuration but the seed (and where, when and how fast it ran), flattened: runs
    # with equal settings are seeds of one study
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> tuple[str, str, str]:
        return self.space, self.what, self.dataset


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std None with fewer than two values."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def genotype_label(genotype: Genotype) -> str:
    """The NB201 string where it has one; otherwise a short digest of the genotype, so equal
    genotypes read equal in a table."""
    try:
        return to_nb201_string(genotype)
    except GenotypeError:
        return "#" + hashlib.sha1(to_json(genotype).encode()).hexdigest()[:8]


# config.json entries that do not change what a run computes, beyond its seed's numbers
_NOT_SETTINGS = {"seed", "device", "created", "argv", "versions", "benchmark", "deterministic",
                 "channels_last", "space_file", "overrides", "resumed", "dataset.root",
                 "space.source", "method.summary"}
# settings that follow from others (a space's network and cells from its file and parameters,
# a training run's genotype, shown apart): not named when telling groups apart
_DERIVED = ("space.network", "space.cells", "space.groups", "space.alpha_shapes", "genotype.")


def _flatten(value, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if path not in _NOT_SETTINGS:
                out |= _flatten(v, path)
        return out
    return {prefix: json.dumps(value, sort_keys=True)}


def _settings(config: dict) -> tuple[tuple[str, str], ...]:
    """The config's settings, flattened; a search's schedule with the fields an older version
    did not write filled in with their defaults (and old values read as today's)."""
    method = config.get("method")
    if isinstance(method, dict) and isinstance(method.get("schedule"), dict):
        from .methods.spec import Schedule
        known = {a.name for a in attrs.fields(Schedule)}
        try:
            schedule = attrs.asdict(Schedule(**{k: v for k, v in method["schedule"].items()
                                                if k in known}))
        except (TypeError, ValueError):
            schedule = method["schedule"]
        config = {**config, "method": {**method, "schedule": schedule}}
    return tuple(sorted(_flatten(config).items()))


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: not a JSON object")
    return data


def _last_record(path: Path) -> dict | None:
    from .search.rundir import RunDir
    records = RunDir(path, tensorboard=False).read_metrics() if path.is_dir() else []
    return records[-1] if records else None


def _genotype(data) -> Genotype | None:
    try:
        return from_dict(data) if isinstance(data, dict) else None
    except (GenotypeError, KeyError, TypeError, ValueError):
        return None


def run_dirs(paths) -> list[Path]:
    """Each path as given when it is a run directory (it has a config.json); a folder that
    is not one stands for the run directories under it, in name order. A run named twice
    counts once."""
    out: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir() and not (path / "config.json").exists():
            inside = _runs_under(path)
            if not inside:
                raise RunError(f"{path}: not a run directory (no config.json), nor a folder "
                               f"of run directories")
        else:
            inside = [path]
        for p in inside:
            out.setdefault(p.resolve(), p)
    return list(out.values())


def _runs_under(folder: Path) -> list[Path]:
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            found += [p] if (p / "config.json").is_file() else _runs_under(p)
    return found


def read_run(path: str | Path, benchmark=None) -> Run:
    """A run directory's :class:`Run`; ``benchmark`` (a BenchmarkTable) looks a search's
    genotype up when the run did not. Damaged files raise RunError, naming the run."""
    try:
        return _read_run(Path(path), benchmark)
    except (KeyError, TypeError, ValueError, AttributeError, OSError, UnicodeDecodeError) as e:
        if isinstance(e, RunError):
            raise
        raise RunError(f"{path}: its run files are damaged ({type(e).__name__}: {e})") from None


def _read_run(path: Path, benchmark) -> Run:
    config = _json(path / "config.json")
    if config is None:
        raise RunError(f"{path}: not a run directory (no config.json)")
    summary = _json(path / "summary.json") or {}
    last = _last_record(path) or {}
    if not isinstance(last, dict):
        raise RunError(f"{path}/metrics.jsonl: its last line is not a JSON object")
    try:
        kind = config.get("kind", "search")
        space = config["space"]["space"]
        dataset = config["dataset"]["name"]
        seed = int(config["seed"])
        what = (config["method"]["name"] if kind == "search"
                else f"train {config['recipe']['name']}")
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path}/config.json: not a search or training run's config "
                       f"({type(e).__name__}: {e})") from None
    finished = bool(summary.get("finished"))
    genotype = _genotype(_json(path / "genotype.json") if finished else None) or \
        _genotype(last.get("genotype") if kind == "search" else config.get("genotype"))
    scores: dict[str, float] = {}
    notes: list[str] = []
    if kind == "search":
        found = (summary.get("benchmark") if finished else last.get("benchmark")) or {}
        if not found and benchmark is not None and genotype is not None:
            from .bench.nb201 import BenchmarkError
            try:
                found = benchmark.lookup(genotype)
            except BenchmarkError as e:
                notes.append(f"benchmark: {e}")
        scores = {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}
        es = summary.get("early_stop")
        if summary.get("darts_es") in ("stop", True) and es:     # True: before the modes
            notes.append(f"DARTS-ES stopped after epoch {es['epoch']}, returned epoch "
                         f"{es['genotype_epoch']}")
        elif es:
            notes.append(f"DARTS-ES would have returned epoch {es['genotype_epoch']}")
        if summary.get("ada_rollbacks"):
            notes.append(f"DARTS-ADA: {len(summary['ada_rollbacks'])} rollback(s)")
    else:
        acc = summary.get("test_acc") if finished else last.get("test_acc")
        if isinstance(acc, (int, float)):
            scores["test_acc"] = float(acc)
    seconds = summary.get("seconds") if finished else last.get("elapsed")
    return Run(path=path, kind=kind, space=space, what=what, dataset=dataset, seed=seed,
               finished=finished, epochs=int(summary.get("epochs", last.get("epoch", 0))),
               epochs_total=last.get("epochs"),
               seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
               genotype=None if genotype is None else genotype_label(genotype),
               scores=scores, notes=tuple(notes),
               settings=_settings(config))


def groups(runs: list[Run]) -> list[dict]:
    """One entry per seed group (runs whose settings differ in the seed only), in the order
    first seen: its finished runs' scores as mean and sample std, their mean seconds, how many
    distinct genotypes they found, and, where groups share a space, method and dataset, the
    settings that tell them apart (``variant``)."""
    by_settings: dict[tuple, list[Run]] = {}
    for r in runs:
        by_settings.setdefault(r.settings, []).append(r)
    out = []
    for settings, members in by_settings.items():
        done = [r for r in members if r.finished]
        names = list(dict.fromkeys(k for r in done for k in r.scores))
        scores = {k: mean_std([r.scores[k] for r in done if k in r.scores]) for k in names}
        seconds = mean_std([r.seconds for r in done if r.seconds is not None])[0]
        first = members[0]
        out.append({"kind": first.kind, "space": first.space, "what": first.what,
                    "dataset": first.dataset, "variant": _variant(settings, [
                        s for s, m in by_settings.items() if m[0].label == first.label]),
                    "seeds": sorted(r.seed for r in done), "runs": len(members),
                    "finished": len(done), "scores": scores, "seconds": seconds,
                    "genotypes": sorted({r.genotype for r in done if r.genotype is not None})})
    return out


def _variant(settings: tuple, alike: list[tuple]) -> str:
    """The settings in which a group differs from the others of its label, by their last name
    (``C=4, epochs=8``); empty when it has no such others. Settings that follow from others
    (the network a space's parameters build, image counts) and those one config lacks (written
    by an older version) are not named; when nothing else differs, "other settings"."""
    mine = dict(settings)
    others = [dict(s) for s in alike if s != settings]
    if not others:
        return ""
    differ = sorted({k for o in others for k in mine.keys() & o.keys() if mine[k] != o[k]
                     and not k.startswith(_DERIVED) and not k.endswith("_images")})
    last = [k.rsplit(".", 1)[-1] for k in differ]
    names = [k if last.count(n) > 1 else n for k, n in zip(differ, last)]
    return ", ".join(f"{n}={_plain(mine[k])}" for k, n in zip(differ, names)) or "other settings"


def _plain(value: str) -> str:
    """A flattened JSON value as a person writes it: ada, not "ada"."""
    v = json.loads(value)
    return v if isinstance(v, str) and v else value



def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None and math.isfinite(std) else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):                    # an NB201 string's "|" would end a markdown cell
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def format_report(runs: list[Run]) -> str:
    """Markdown: the seed groups (mean ± std over finished runs), then every run."""
    gs = groups(runs)
    score_names = list(dict.fromkeys(k for r in runs for k in r.scores))
    rows = []
    for g in gs:
        what = g["what"] + (f" ({g['variant']})" if g["variant"] else "")
        if g["kind"] == "train" and len(g["genotypes"]) == 1:
            what += f" of {g['genotypes'][0]}"
        rows.append([g["space"], what, g["dataset"],
                     f"{g['finished']}/{g['runs']}" + (f" (seeds {', '.join(map(str, g['seeds']))})"
                                                       if g["seeds"] else ""),
                     *[_pm(*g["scores"].get(k, (None, None))) for k in score_names],
                     "-" if g["seconds"] is None else f"{g['seconds'] / 60:.1f}",
                     str(len(g["genotypes"])) if g["kind"] == "search" else "-"])
    out = ["Seed groups (mean ± sample std over finished runs):", ""]
    out += _table(["space", "method", "dataset", "finished", *score_names, "minutes",
                   "distinct genotypes"], rows)
    run_rows = []
    for r in runs:
        state = "finished" if r.finished else f"{r.epochs}/{r.epochs_total or '?'} epochs"
        run_rows.append([str(r.path), r.what, str(r.seed), state,
                         *[f"{r.scores[k]:.2f}" if k in r.scores else "-" for k in score_names],
                         r.genotype or "-", "; ".join(r.notes)])
    out += ["", "Runs:", ""]
    out += _table(["run", "method", "seed", "state", *score_names, "genotype", "notes"],
                  run_rows)
    return "\n".join(out)
