"""The run directory of a search: everything a run writes, in one folder.

::

    runs/<space>-<method>-s<seed>-<YYYYmmdd-HHMMSS>/   (or --out DIR)
      config.json      space IR, method spec (resolved schedule), overrides, versions, seed, data
      metrics.jsonl    one JSON object per epoch
      tb/              TensorBoard events (skipped when tensorboard is not importable)
      checkpoint.pt    the latest epoch, or a step inside the next one (every --checkpoint-minutes,
                       and on Ctrl-C or SIGTERM), written atomically (dslnas.search.checkpoint)
      genotype.json    the final genotype, JSON
      genotype.txt     the final genotype in every format that applies (JSON, NB201, DARTS)
      genotype.svg     the final cell(s), drawn by graphviz (genotype.dot when `dot` is missing)

Only ``RunDir`` writes into the folder; the loop hands it plain dicts.
"""
from __future__ import annotations

import errno
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_NAME

__all__ = ["RunDir", "RunDirError", "default_run_name", "versions"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"              # held (flock) by the search that writes the folder


class RunDirError(Exception):
    """A run directory that cannot be created or is not a dslnas run."""


def default_run_name(space: str, method: str, seed: int, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{space}-{method}-s{seed}-{stamp}"


def versions() -> dict[str, str]:
    import numpy
    import torch

    try:
        from importlib.metadata import version
        dslnas_version = version("dslnas")
    except Exception:                                   # noqa: BLE001 - not installed
        dslnas_version = "unknown"
    return {"dslnas": dslnas_version, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "cuda": torch.version.cuda or "none", "platform": platform.platform()}


def _jsonable(x: Any) -> Any:
    """Plain JSON: tuples become lists, non-finite floats become null, tensors become lists."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):                            # tensors, numpy arrays and scalars
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return x


class RunDir:
    """A run folder. ``create`` starts a new run, ``open`` an existing one (for ``--resume``)."""

    def __init__(self, path: str | os.PathLike, tensorboard: bool = True):
        self.path = Path(path)
        self._tensorboard = tensorboard
        self._writer = None
        self._writer_failed = False
        self._purge_step: int | None = None
        self._lock = None

    # ---- lifecycle ------------------------------------------------------------------------
    @staticmethod
    def check_free(out: str | os.PathLike) -> None:
        """Raise RunDirError unless ``out`` is absent or an empty folder."""
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            hint = (" (it holds a run: continue it with --resume)"
                    if (path / CHECKPOINT_NAME).exists() else
                    " (it holds a run that stopped before its first checkpoint: delete it "
                    "or choose another --out)"
                    if (path / CONFIG).exists() else "")
            raise RunDirError(f"--out {path}: exists and is not an empty folder{hint}")

    @classmethod
    def create(cls, out: str | os.PathLike | None, *, space: str, method: str, seed: int,
               root: str | os.PathLike = "runs", tensorboard: bool = True) -> "RunDir":
        """A fresh folder: ``out`` if given (must be empty or absent), else a new timestamped
        folder under ``root``."""
        if out is not None:
            path = Path(out)
            cls.check_free(path)
        else:
            base = Path(root) / default_run_name(space, method, seed)
            path, n = base, 1
            while path.exists():
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {path}: {e.strerror or e}") from None
        return cls(path, tensorboard)

    @classmethod
    def open(cls, path: str | os.PathLike, tensorboard: bool = True) -> "RunDir":
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"--resume {path}: no such run directory")
        if not (path / CONFIG).is_file():
            raise RunDirError(f"--resume {path}: not a dslnas run directory (no {CONFIG})")
        return cls(path, tensorboard)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def lock(self) -> None:
        """Hold the folder for this process until ``close`` (or its end): two searches writing
        one run would interleave its metrics and checkpoints. RunDirError if one holds it."""
        try:
            import fcntl
        except ImportError:                             # not POSIX: no lock
            return
        try:
            f = open(self.path / LOCK, "a")
        except OSError as e:
            raise RunDirError(f"cannot lock {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                # a filesystem without locks (some NFS, FUSE): run unguarded, as off POSIX
                print(f"note: {self.path} cannot be locked ({e.strerror}); make sure no other "
                      f"search writes it", file=sys.stderr)
                return
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(f"{self.path} is in use by another search (wait for it to "
                                  f"end, or stop it)") from None
            raise RunDirError(f"cannot lock {self.path / LOCK}: {e.strerror or e}") from None
        self._lock = f

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()                          # releases the lock
            self._lock = None
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:                           # noqa: BLE001 - never fail the run
                pass
            self._writer = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- config ---------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        self._write_text(CONFIG, json.dumps(_jsonable(config), indent=2) + "\n")

    def read_config(self) -> dict:
        try:
            return json.loads((self.path / CONFIG).read_text())
        except (OSError, ValueError) as e:       # ValueError: bad JSON, or not UTF-8
            raise RunDirError(f"cannot read {self.path / CONFIG}: {e}") from None

    # ---- metrics --------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        line = json.dumps(_jsonable(record), allow_nan=False)
        try:
            with open(self.path / METRICS, "a") as f:
                f.write(line + "\n")
                f.flush()
        except OSError as e:
            raise RunDirError(f"cannot write {self.path / METRICS}: {e.strerror or e}") from None

    def read_metrics(self, name: str = METRICS) -> list[dict]:
        p = self.path / name
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break                                   # a line cut by a kill: drop the rest
        return out

    def truncate_metrics(self, epochs: int) -> list[dict]:
        """Keep the records of epochs 1..``epochs`` (those a checkpoint covers); return them."""
        kept = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= epochs]
        self.write_metrics(kept)
        self._purge_step = epochs + 1
        if self._writer is not None:    # reopened with the purge (a DARTS-ADA rollback goes
            self._writer.close()        # back within one process)
            self._writer = None
        return kept

    def write_metrics(self, records: list[dict], name: str = METRICS) -> None:
        """Replace ``name`` with ``records``, atomically."""
        self._write_text(name, "".join(json.dumps(_jsonable(r)) + "\n" for r in records))

    # ---- TensorBoard ----------------------------------------------------------------------
    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        w = self._tb()
        if w is None:
            return
        try:
            for tag, v in values.items():
                if v is not None and math.isfinite(v):
                    w.add_scalar(tag, v, step)
            w.flush()
        except Exception as e:                          # noqa: BLE001 - never fail the run
            self._tb_failed(e)

    def _tb(self):
        if not self._tensorboard or self._writer_failed:
            return None
        if self._writer is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                kwargs = {} if self._purge_step is None else {"purge_step": self._purge_step}
                self._writer = SummaryWriter(str(self.path / "tb"), **kwargs)
            except Exception as e:                      # noqa: BLE001 - optional dependency
                self._tb_failed(e)
                return None
        return self._writer

    def _tb_failed(self, e: Exception) -> None:
        self._writer_failed = True
        self._writer = None
        print(f"note: TensorBoard logging disabled ({type(e).__name__}: {e})", file=sys.stderr)

    # ---- final outputs --------------------------------------------------------------------
    def write_genotype(self, genotype, ir=None, stem: str = "genotype") -> dict[str, Path]:
        """STEM.json, STEM.txt (every format that applies) and a drawing (.svg, or .dot when
        graphviz is missing). Drawing problems are reported, never raised."""
        from ..genotype import GenotypeError, to_darts_text, to_json, to_nb201_string
        from ..render import RenderError, genotype_dot, render_genotype

        written = {}
        self._write_text(f"{stem}.json", to_json(genotype, indent=2) + "\n")
        written["json"] = self.path / f"{stem}.json"
        lines = [f"# genotype of space {genotype.space}", "", "json:", to_json(genotype), ""]
        for name, fmt in (("nb201", to_nb201_string), ("darts", to_darts_text)):
            try:
                text = fmt(genotype)
            except GenotypeError:
                continue
            lines += [f"{name}:", text, ""]
        self._write_text(f"{stem}.txt", "\n".join(lines))
        written["txt"] = self.path / f"{stem}.txt"
        svg = self.path / f"{stem}.svg"
        try:
            written["svg"] = render_genotype(genotype, svg)
        except RenderError as e:
            dot = e.dot_path or self.path / f"{stem}.dot"
            if not dot.exists():
                try:
                    self._write_text(dot.name, genotype_dot(genotype))
                except RunDirError:
                    dot = None
            if dot is not None:
                written["dot"] = dot
            print(f"note: {e}", file=sys.stderr)
        except Exception as e:                          # noqa: BLE001 - a drawing never fails a run
            try:
                self._write_text(f"{stem}.dot", genotype_dot(genotype))
                written["dot"] = self.path / f"{stem}.dot"
            except RunDirError:
                pass
            print(f"note: could not draw the genotype ({type(e).__name__}: {e}); wrote "
                  f"{stem}.dot instead", file=sys.stderr)
        return written

    def write_summary(self, summary: dict) -> None:
        self._write_text("summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")

    # ---- helpers --------------------------------------------------------------------------
    def _write_text(self, name: str, text: str) -> None:
        target = self.path / name
        tmp = target.with_name(f".{name}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, target)
        except OSError as e:
            raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None
