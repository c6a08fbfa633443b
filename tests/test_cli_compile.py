"""`dslnas compile` and `dslnas render` from the user's side."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dslnas.cli import main

SPACES = Path(__file__).resolve().parents[1] / "spaces"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_json_has_the_documented_keys(capsys):
    code, out, _ = run(capsys, "compile", SPACES / "nb201.nas", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["space"] == "nb201"
    assert data["architectures"] == 15625
    assert data["supernet_params"] == 1_692_826
    assert data["alpha_shapes"] == {"cell": [6, 5]}
    assert [e[:2] for e in data["cells"][0]["edges"]] == [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]
    assert data["cells"][0]["edges"][0][2] == ["none", "skip_connect", "nor_conv_1x1",
                                                "nor_conv_3x3", "avg_pool_3x3"]


def test_compile_set_overrides_a_parameter(capsys):
    code, out, _ = run(capsys, "compile", SPACES / "darts.nas", "--json", "--set", "C=36",
                       "--set", "L=20")
    data = json.loads(out)
    reductions = [b["index"] for b in data["network"] if b["kind"] == "cell" and b["stride"] == 2]
    assert code == 0 and reductions == [6, 13] and data["params"]["C"] == 36


def test_compile_report_shows_cells_network_and_counts(capsys):
    code, out, _ = run(capsys, "compile", SPACES / "s1.nas")
    assert code == 0
    assert "0 -> 2:  skip_connect, dil_conv_3x3" in out
    assert "stride 2" in out and "factorized_reduce(64->32)" in out
    assert "architectures: 2,123,366,400" in out
    assert "supernet weights: 405,146 parameters" in out


def test_compile_emits_json_and_dot(tmp_path, capsys):
    code, _, _ = run(capsys, "compile", SPACES / "darts.nas", "--emit", tmp_path / "ir.json")
    assert code == 0
    assert json.loads((tmp_path / "ir.json").read_text())["supernet_params"] == 1_930_618
    code, _, _ = run(capsys, "compile", SPACES / "darts.nas", "--emit", tmp_path / "ir.dot")
    dot = (tmp_path / "ir.dot").read_text()
    assert code == 0 and dot.startswith('digraph "darts"') and "cluster_reduce" in dot
    code, _, err = run(capsys, "compile", SPACES / "darts.nas", "--emit", tmp_path / "ir.txt")
    assert code == 2 and "unknown format" in err


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_compile_renders_every_supernet_cell(tmp_path, capsys):
    code, _, _ = run(capsys, "compile", SPACES / "nb201.nas", "--render", tmp_path)
    svg = (tmp_path / "cell.svg").read_text()
    assert code == 0 and "<svg" in svg and "nor_conv_3x3" in svg


def test_dsl_error_exits_2_with_position_line_and_caret(tmp_path, capsys):
    bad = tmp_path / "bad.nas"
    bad.write_text("space bad\nops [none, sep_conv_3x4]\n")
    code, out, err = run(capsys, "compile", bad)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{bad}:2:12: error: unknown op 'sep_conv_3x4'")
    assert "did you mean 'sep_conv_3x3'" in lines[0]
    assert lines[1].strip() == "ops [none, sep_conv_3x4]"
    assert lines[2].index("^") == lines[1].index("sep_conv_3x4")


@pytest.mark.parametrize("argv, message", [
    (["compile", "missing.nas"], "no such file"),
    (["compile", "SPACES/nb201.nas", "--set", "C"], "NAME=VALUE"),
    (["compile", "SPACES/nb201.nas", "--set", "C=x"], "expected an integer"),
    (["compile", "SPACES/nb201.nas", "--set", "Q=3"], "no parameter 'Q'"),
])
def test_bad_command_lines_exit_2_without_traceback(argv, message):
    argv = [a.replace("SPACES", str(SPACES)) for a in argv]
    p = subprocess.run([sys.executable, "-m", "dslnas.cli", *argv], capture_output=True, text=True)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr


def test_compile_render_without_graphviz_writes_every_cells_dot_and_goes_on(tmp_path, capsys,
                                                                           monkeypatch):
    from dslnas import render
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    code, out, err = run(capsys, "compile", SPACES / "darts.nas", "--render", tmp_path)
    assert code == 0 and "space darts" in out                     # the report still printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normal.dot", "reduce.dot"]
    assert "`dot` program was not found" in err


def test_an_output_path_through_a_file_says_so(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for argv in (["compile", SPACES / "nb201.nas", "--render", tmp_path / "f" / "cells"],
                 ["compile", SPACES / "nb201.nas", "--emit", tmp_path / "f" / "x.json"],
                 ["render", "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                  "skip_connect~1|skip_connect~2|", "-o", tmp_path / "f" / "x.dot"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and f"{tmp_path / 'f'} is a file, not a folder" in err, argv


def test_an_output_path_in_a_folder_we_may_not_enter_exits_2(tmp_path, capsys, monkeypatch):
    import errno
    import os
    import pathlib
    locked = tmp_path / "locked"
    locked.mkdir()
    stat = pathlib.Path.stat

    def no_entry(self, **kwargs):   # what os.stat says below a folder without x permission
        if locked in self.parents:  # (simulated: root may enter any folder)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return stat(self, **kwargs)
    monkeypatch.setattr(pathlib.Path, "stat", no_entry)
    for argv, target in (
            (["compile", SPACES / "nb201.nas", "--emit", locked / "sub" / "x.json"], "x.json"),
            (["render", "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
              "skip_connect~1|skip_connect~2|", "-o", locked / "sub" / "x.dot"], "x.dot")):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert f"cannot write {locked / 'sub' / target}: Permission denied" in err, err


def test_binary_files_where_text_is_expected_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(128, 256)) * 2)
    arch = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|" \
           "skip_connect~2|"
    table = tmp_path / "t.csv"
    table.write_bytes(b"arch,cifar10\n" + arch.encode() + b",\xff50\n")
    for argv, message in (
            (["render", junk, "-o", tmp_path / "x.dot"], "not a UTF-8 text file"),
            (["evaluate", arch, "--benchmark", junk], "not a text CSV file"),
            (["evaluate", arch, "--benchmark", table], "not a text CSV file"),
            (["search", SPACES / "nb201.nas", "--method-file", junk], "not a UTF-8 text file")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, argv


def test_out_of_memory_is_a_message_not_a_traceback(capsys, monkeypatch):
    import dslnas.ir.lower as lower

    def huge(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "120000000000 bytes")
    monkeypatch.setattr(lower, "compile_file", huge)
    code, _, err = run(capsys, "compile", SPACES / "nb201.nas")
    assert code == 2 and err.startswith("error: not enough memory (DefaultCPUAllocator")

    def bug(*a, **k):
        raise RuntimeError("some other failure")
    monkeypatch.setattr(lower, "compile_file", bug)
    with pytest.raises(RuntimeError, match="some other failure"):   # not swallowed
        run(capsys, "compile", SPACES / "nb201.nas")


def test_out_of_memory_on_resume_hints_only_what_resume_takes(tmp_path, capsys, monkeypatch):
    from dslnas.search.rundir import RunDir

    def huge(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(RunDir, "open", huge)
    code, _, err = run(capsys, "search", "--resume", tmp_path)
    assert code == 2 and err.startswith("error: not enough memory (CUDA out of memory"), err
    # --resume refuses --batch-size and --set: they are for a new search
    assert "keeps its network and batch size" in err and "start a new search with" in err
    assert "try a smaller network" not in err


def test_compile_counts_a_huge_supernet_without_allocating_it(capsys):
    code, out, _ = run(capsys, "compile", SPACES / "nb201.nas", "--set", "C=100000", "--json")
    small = json.loads(run(capsys, "compile", SPACES / "nb201.nas", "--set", "C=16",
                           "--json")[1])["supernet_params"]
    big = json.loads(out)["supernet_params"]
    assert code == 0 and small == 1_692_826 and big > 6e13    # ~ (100000/16)^2 x the convs
