"""Tests for dslnas.bench: the NB201 accuracy table."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED

from dslnas.bench import BenchmarkError, BenchmarkTable
from dslnas.genotype import from_nb201_string, known_genotype

ALL_SKIP = ("|skip_connect~0|+|skip_connect~0|skip_connect~1|"
            "+|skip_connect~0|skip_connect~1|skip_connect~2|")
CONV = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
MIXED = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
         "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
REAL_TABLE = SHARED / "data/nb201-test-accuracy.csv"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def table(tmp_path):
    return BenchmarkTable.load(write(tmp_path, (
        "arch,cifar10,cifar100,imagenet16_120\n"
        f"{ALL_SKIP},54.30,15.61,16.32\n"
        f"{CONV},93.50,70.00,44.00\n"
        f"{MIXED},93.66,70.29,44.03\n")))


def test_lookup(table):
    assert len(table) == 3
    assert table.datasets == ("cifar10", "cifar100", "imagenet16_120")
    assert table.lookup(ALL_SKIP) == {"cifar10": 54.30, "cifar100": 15.61, "imagenet16_120": 16.32}
    assert table[CONV]["cifar100"] == 70.00
    # any spelling of the same architecture, or a genotype, finds the row
    messy = "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+ |skip_connect~2|nor_conv_3x3~1|skip_connect~0|"
    assert table.lookup(messy) == table.lookup(MIXED)
    assert table.lookup(from_nb201_string(MIXED)) == table.lookup(MIXED)
    assert table.lookup(from_nb201_string(MIXED).cells[0])["cifar10"] == 93.66
    assert MIXED in table and messy in table and "nonsense" not in table
    assert table.accuracy(ALL_SKIP, "CIFAR-10") == 54.30
    assert table.accuracy(ALL_SKIP, "ImageNet16-120") == 16.32
    assert sorted(table) == sorted([ALL_SKIP, CONV, MIXED])


def test_best(table):
    assert table.best("cifar10") == (MIXED, 93.66)
    assert table.best("cifar100") == (MIXED, 70.29)
    with pytest.raises(BenchmarkError, match="unknown dataset 'svhn'; the table has cifar10"):
        table.best("svhn")


def test_best_tie_keeps_first_row(tmp_path):
    t = BenchmarkTable.load(write(tmp_path, f"arch,c10\n{CONV},90\n{MIXED},90\n{ALL_SKIP},50\n"))
    assert t.best("c10") == (CONV, 90.0)


def test_query_errors(table):
    unknown = ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(BenchmarkError, match=r"is not in the benchmark table"):
        table.lookup(unknown)
    with pytest.raises(BenchmarkError, match="not an NB201 architecture"):
        table.lookup("|skip_connect~1|")
    with pytest.raises(BenchmarkError, match="not an NB201 architecture"):
        table.lookup(known_genotype("darts_v2"))
    with pytest.raises(BenchmarkError, match="cannot look up int"):
        table.lookup(3)
    with pytest.raises(BenchmarkError, match="unknown dataset"):
        table.accuracy(ALL_SKIP, "mnist")
    assert issubclass(BenchmarkError, ValueError)


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("name,cifar10\n" + ALL_SKIP + ",1\n", "bad header"),
    ("arch\n" + ALL_SKIP + "\n", "bad header"),
    ("arch,cifar10,CIFAR-10\n" + ALL_SKIP + ",1,2\n", "bad header"),
    ("arch,cifar10,\n" + ALL_SKIP + ",1,2\n", "bad header"),
    ("arch,cifar10\n", "no rows"),
    ("arch,cifar10\n" + ALL_SKIP + ",1,2\n", r"t.csv:2: expected 2 fields, got 3"),
    ("arch,cifar10\n" + ALL_SKIP + ",high\n", "t.csv:2: accuracies must be numbers"),
    ("arch,cifar10\n" + ALL_SKIP + ",1\n|skip_connect~1|,2\n", "t.csv:3: NB201 string"),
    ("arch,cifar10\n" + ALL_SKIP + ",1\n" + ALL_SKIP + ",2\n", "t.csv:3: .* appears twice"),
])
def test_load_errors(tmp_path, text, message):
    with pytest.raises(BenchmarkError, match=message):
        BenchmarkTable.load(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(BenchmarkError, match="does not exist"):
        BenchmarkTable.load(tmp_path / "nope.csv")


def test_non_canonical_rows_are_canonicalised(tmp_path):
    swapped = "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    t = BenchmarkTable.load(write(tmp_path, f"arch_str,acc\n\"{swapped}\",12.5\n\n"))
    assert list(t) == [MIXED]
    assert t.accuracy(MIXED, "acc") == 12.5


@pytest.mark.skipif(not REAL_TABLE.is_file(), reason=f"NB201 table not found at {REAL_TABLE}")
def test_real_nb201_table():
    t = BenchmarkTable.load(REAL_TABLE)
    assert len(t) == 15625 == 5 ** 6
    assert "cifar10" in t.datasets
    assert t.accuracy(ALL_SKIP, "cifar10") == pytest.approx(54.30, abs=0.01)
    arch, acc = t.best("cifar10")
    assert acc == pytest.approx(94.37, abs=0.01)
    assert t.accuracy(arch, "cifar10") == acc
