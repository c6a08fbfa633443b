"""NAS-Bench-201 lookups from a CSV table: architecture string -> accuracy per dataset.

The file has a header row ``arch,<dataset>,<dataset>,...`` and one row per architecture: its NB201
string, then one accuracy (%) per dataset. Keys are canonical NB201 strings, so a genotype or any
spelling of the same string finds its row.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterator

import attrs

from ..genotype import (CellGenotype, Genotype, GenotypeError, canonical_nb201, is_canonical_nb201,
                        to_nb201_string)

__all__ = ["BenchmarkError", "BenchmarkTable"]

ARCH_COLUMNS = ("arch", "arch_str", "architecture")


class BenchmarkError(ValueError):
    """A benchmark table that cannot be read, or a query it cannot answer."""


def _dataset_key(name: str) -> str:
    """Dataset names match ignoring case and separators: CIFAR-10 = cifar10."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


@attrs.frozen
class BenchmarkTable:
    datasets: tuple[str, ...]                         # column order of the file
    rows: dict[str, tuple[float, ...]] = attrs.field(repr=False)   # canonical arch -> accuracies
    source: str = ""

    # ---- loading --------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "BenchmarkTable":
        path = Path(path)
        try:
            f = path.open(newline="")
        except FileNotFoundError:
            raise BenchmarkError(f"benchmark table {path} does not exist") from None
        except OSError as e:
            raise BenchmarkError(f"cannot read benchmark table {path}: {e.strerror}") from None
        with f:
            reader = csv.reader(f)
            rows: dict[str, tuple[float, ...]] = {}
            try:
                header = next(reader, None)      # reading it decodes the file's first block
                datasets = cls._check_header(header, path)
                width = len(datasets) + 1
                for line, rec in enumerate(reader, start=2):
                    if not rec:
                        continue
                    if len(rec) != width:
                        raise BenchmarkError(f"{path}:{line}: expected {width} fields, "
                                             f"got {len(rec)}")
                    arch = rec[0]
                    key = arch if is_canonical_nb201(arch) else _canonical(arch, f"{path}:{line}")
                    try:
                        values = tuple(map(float, rec[1:]))
                    except ValueError:
                        raise BenchmarkError(f"{path}:{line}: accuracies must be numbers, got "
                                             f"{rec[1:]}") from None
                    if not all(math.isfinite(v) for v in values):
                        raise BenchmarkError(f"{path}:{line}: accuracies must be finite, got "
                                             f"{rec[1:]}")
                    if key in rows:
                        raise BenchmarkError(f"{path}:{line}: architecture {arch} appears twice")
                    rows[key] = values
            except UnicodeDecodeError as e:
                raise BenchmarkError(f"{path}: not a text CSV file ({e.reason})") from None
            except csv.Error as e:
                raise BenchmarkError(f"{path}: malformed CSV ({e})") from None
        if not rows:
            raise BenchmarkError(f"benchmark table {path} has a header but no rows")
        return cls(datasets, rows, str(path))

    @staticmethod
    def _check_header(header: list[str] | None, path: Path) -> tuple[str, ...]:
        if not header:
            raise BenchmarkError(f"benchmark table {path} is empty (expected a header row "
                                 f"'arch,<dataset>,...')")
        first = header[0].strip().lstrip("\ufeff").lower()
        names = tuple(h.strip() for h in header[1:])
        keys = [_dataset_key(n) for n in names]
        if first not in ARCH_COLUMNS or not names or not all(names) or len(set(keys)) != len(keys):
            raise BenchmarkError(f"benchmark table {path}: bad header {','.join(header)!r}; "
                                 f"expected 'arch,<dataset>,<dataset>,...' with distinct, "
                                 f"non-empty dataset names")
        return names

    # ---- queries --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __contains__(self, arch: object) -> bool:
        try:
            return self.key(arch) in self.rows          # type: ignore[arg-type]
        except BenchmarkError:
            return False

    def key(self, arch: str | Genotype | CellGenotype) -> str:
        """The canonical NB201 string of ``arch``."""
        try:
            if isinstance(arch, (Genotype, CellGenotype)):
                return to_nb201_string(arch)
            if isinstance(arch, str):
                return arch if arch in self.rows else canonical_nb201(arch)
        except GenotypeError as e:
            raise BenchmarkError(f"not an NB201 architecture: {e}") from None
        raise BenchmarkError(f"cannot look up {type(arch).__name__} {arch!r}; give an NB201 "
                             f"string or a genotype")

    def lookup(self, arch: str | Genotype | CellGenotype) -> dict[str, float]:
        """Dataset -> accuracy of ``arch``."""
        key = self.key(arch)
        try:
            values = self.rows[key]
        except KeyError:
            raise BenchmarkError(f"architecture {key} is not in the benchmark table "
                                 f"{self.source or ''}".rstrip()) from None
        return dict(zip(self.datasets, values))

    __getitem__ = lookup

    def accuracy(self, arch: str | Genotype | CellGenotype, dataset: str) -> float:
        return self.lookup(arch)[self.dataset(dataset)]

    def dataset(self, name: str) -> str:
        """The table's spelling of ``name`` (ignoring case, '-', '_' and spaces)."""
        wanted = _dataset_key(name)
        for d in self.datasets:
            if _dataset_key(d) == wanted:
                return d
        raise BenchmarkError(f"unknown dataset {name!r}; the table has "
                             f"{', '.join(self.datasets)}")

    def best(self, dataset: str) -> tuple[str, float]:
        """``(arch, accuracy)`` with the highest accuracy on ``dataset`` (first row on a tie)."""
        col = self.datasets.index(self.dataset(dataset))
        best_arch, best_acc = None, -math.inf
        for arch, values in self.rows.items():
            if values[col] > best_acc:
                best_arch, best_acc = arch, values[col]
        return best_arch, best_acc            # type: ignore[return-value]


def _canonical(arch: str, where: str) -> str:
    try:
        return canonical_nb201(arch)
    except GenotypeError as e:
        raise BenchmarkError(f"{where}: {e}") from None
