"""`dslnas report`: runs side by side, mean ± sample std over the seeds of each study."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from dslnas.runs import mean_std

from test_search import NB201, TINY, run, table  # noqa: F401 - table is a fixture

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def study(tmp_path_factory, table):  # noqa: F811
    """Seeds 0 and 1 of a 1-epoch search, seed 0 of a 2-epoch one, an unfinished one, and
    two seeds training one cell."""
    root = tmp_path_factory.mktemp("study")
    import dslnas.cli as cli
    base = ["search", str(NB201), "--method", "darts", *TINY, "--benchmark", str(table)]
    assert cli.main([*base, "--epochs", "1", "--seeds", "0", "1",
                     "--out", str(root / "one-s{seed}")]) == 0
    assert cli.main([*base, "--epochs", "2", "--out", str(root / "two-s0")]) == 0
    assert cli.main([*base, "--epochs", "3", "--stop-after", "1", "--out",
                     str(root / "cut-s0")]) == 0
    for seed in (0, 1):
        assert cli.main(["train", ARCH, "--space", str(NB201), "--dataset", "digits", "--set",
                         "C=4", "--set", "N=1", "--epochs", "1", "--subset", "64", "--seed",
                         str(seed), "--out", str(root / f"train-s{seed}"), "--no-progress"]) == 0
    return root


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_groups_are_the_seeds_of_one_setting_with_mean_and_sample_std(study, capsys):
    runs = [study / n for n in ("one-s0", "one-s1", "two-s0", "cut-s0", "train-s0", "train-s1")]
    code, out, err = run(capsys, "report", *runs, "--json")
    assert code == 0, err
    rep = json.loads(out)
    by = {(g["what"], g["variant"]): g for g in rep["groups"]}
    one = by[("darts", "epochs=1")]
    assert one["seeds"] == [0, 1] and one["finished"] == one["runs"] == 2
    c10 = [summary(study / n)["benchmark"]["cifar10"] for n in ("one-s0", "one-s1")]
    assert one["scores"]["cifar10"] == pytest.approx([statistics.fmean(c10),
                                                      statistics.stdev(c10)])
    two = by[("darts", "epochs=2")]
    assert two["seeds"] == [0] and two["scores"]["cifar10"][1] is None    # one seed: no std
    cut = by[("darts", "epochs=3")]
    assert cut["runs"] == 1 and cut["finished"] == 0 and cut["scores"] == {}
    trained = [g for g in rep["groups"] if g["kind"] == "train"]
    assert len(trained) == 1 and trained[0]["seeds"] == [0, 1]
    acc = [summary(study / f"train-s{s}")["test_acc"] for s in (0, 1)]
    assert trained[0]["scores"]["test_acc"][0] == pytest.approx(statistics.fmean(acc))
    states = {Path(r["path"]).name: (r["finished"], r["epochs"]) for r in rep["runs"]}
    assert states["cut-s0"] == (False, 1) and states["two-s0"] == (True, 2)


def test_the_markdown_table_escapes_genotypes_and_marks_unfinished_runs(study, capsys):
    code, out, err = run(capsys, "report", study / "one-s0", study / "one-s1",
                         study / "cut-s0")
    assert code == 0, err
    # every row has as many cells as its table's header: an NB201 string's bars are escaped
    tables = [[re.split(r"(?<!\\)\|", line) for line in block.splitlines()
               if line.startswith("|")] for block in out.split("\n\n") if block.startswith("|")]
    assert len(tables) == 2 and all(len({len(row) for row in t}) == 1 for t in tables)
    assert "1/3 epochs" in out and "2/2 (seeds 0, 1)" in out
    assert re.search(r"\\\|\w+~0\\\|\+", out)          # an escaped NB201 string


def test_a_folder_stands_for_the_runs_under_it_and_a_run_counts_once(study, tmp_path, capsys):
    import shutil
    shutil.copytree(study / "two-s0", tmp_path / "outer" / "inner" / "two-s0")
    code, out, err = run(capsys, "report", study, tmp_path / "outer", study / "one-s0", "--json")
    assert code == 0, err
    paths = [Path(r["path"]) for r in json.loads(out)["runs"]]
    assert [p.name for p in paths] == ["cut-s0", "one-s0", "one-s1", "train-s0", "train-s1",
                                       "two-s0", "two-s0"]
    assert paths[-1].parent.name == "inner"


def test_a_resumed_or_older_run_stays_in_its_seed_group(study, tmp_path, capsys):
    import shutil
    older = tmp_path / "one-s1"
    shutil.copytree(study / "one-s1", older)
    config = json.loads((older / "config.json").read_text())
    config["resumed"] = [{"at_epoch": 0}]                       # what --resume adds
    del config["method"]["schedule"]["lanczos_steps"]           # written before the field
    config["method"]["schedule"]["early_stop"] = False          # ... and before the modes
    (older / "config.json").write_text(json.dumps(config))
    code, out, err = run(capsys, "report", study / "one-s0", older, "--json")
    assert code == 0, err
    assert [g["seeds"] for g in json.loads(out)["groups"]] == [[0, 1]]


def test_an_unfinished_runs_scores_show_without_a_finished_one(study, capsys):
    code, out, err = run(capsys, "report", study / "cut-s0")
    assert code == 0, err
    assert "| cifar10 | cifar100 |" in out and "1/3 epochs" in out


def test_benchmark_looks_up_runs_that_did_not(study, tmp_path, capsys, table):  # noqa: F811
    plain = tmp_path / "plain"
    assert run(capsys, "search", NB201, "--method", "darts", "--epochs", "1", *TINY,
               "--out", plain)[0] == 0
    code, out, _ = run(capsys, "report", plain, "--json")
    assert json.loads(out)["runs"][0]["scores"] == {}
    code, out, err = run(capsys, "report", plain, "--benchmark", table, "--json")
    assert code == 0, err
    assert set(json.loads(out)["runs"][0]["scores"]) == {"cifar10", "cifar100"}


def test_not_a_run_directory_exits_2(study, tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("[1, 2]")
    (tmp_path / "empty").mkdir()
    for bad, message in ((tmp_path / "empty", "nor a folder of run directories"),
                         (tmp_path / "none", "not a run directory (no config.json)"),
                         (tmp_path / "broken", "not a JSON object")):
        code, _, err = run(capsys, "report", bad)
        assert code == 2 and message in err and "Traceback" not in err
    code, _, err = run(capsys, "report", tmp_path, "--benchmark", tmp_path / "none.csv")
    assert code == 2 and "does not exist" in err
    damaged = tmp_path / "damaged"
    import shutil
    shutil.copytree(study / "one-s0", damaged)
    (damaged / "summary.json").write_text('{"finished": true, "epochs": null}')
    code, _, err = run(capsys, "report", damaged)
    assert code == 2 and "run files are damaged" in err and "Traceback" not in err


def test_mean_std_is_the_sample_std():
    assert mean_std([]) == (None, None)
    assert mean_std([93.5]) == (93.5, None)
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(statistics.stdev([1, 2, 4]))
