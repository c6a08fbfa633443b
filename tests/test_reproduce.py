"""benchmarks/reproduce_nb201.py: the NB201 reproduction runner, --collect, `record`, `report`.

Real searches run on the CPU with the offline `digits` set and NB201 at C=4, N=1 on a 64-image
subset (2 steps per epoch), against a fake NB201 table written here (the real one may be absent).
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce_nb201",
                                               ROOT / "benchmarks" / "reproduce_nb201.py")
rn = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rn
_spec.loader.exec_module(rn)

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
TINY = "--set C=4 --set N=1 --subset 64 --batch-size 16"
COLLECTED = {"metrics.jsonl", "config.json", "reproduce.json", "genotype.json"}


def arch_string(ops) -> str:
    a = ops
    return f"|{a[0]}~0|+|{a[1]}~0|{a[2]}~1|+|{a[3]}~0|{a[4]}~1|{a[5]}~2|"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A fake NB201 table of all 15,625 architectures: (path, arch -> (c10, c100, in16))."""
    path = tmp_path_factory.mktemp("bench") / "nb201.csv"
    values, rows = {}, ["arch,cifar10,cifar100,ImageNet16-120"]
    for i, ops in enumerate(itertools.product(OPS, repeat=6)):
        v = (50 + (i % 97) * 0.5, 20 + (i % 89) * 0.5, 10 + (i % 83) * 0.25)
        values[arch_string(ops)] = v
        rows.append(f"{arch_string(ops)},{v[0]},{v[1]},{v[2]}")
    path.write_text("\n".join(rows) + "\n")
    return path, values


def run_args(runs, data, bench, *extra, epochs=2) -> argparse.Namespace:
    argv = ["run", "--runs", str(runs), "--data", str(data), "--benchmark", str(bench),
            "--device", "cpu", "--dataset", "digits", "--poll", "0.1",
            f"--search-args={TINY} --epochs {epochs}", *extra]
    return rn.build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, table):
    """`run` with 2 methods x 1 seed, K=2, 2 epochs each, --collect: (runs, lines, collected)."""
    runs = tmp_path_factory.mktemp("repro") / "runs"
    collected = runs.parent / "OUT"
    lines: list[str] = []
    args = run_args(runs, runs.parent, table[0], "--methods", "darts", "rf-darts", "--seeds",
                    "0", "--parallel", "2", "--collect", str(collected))
    code = rn.cmd_run(args, out=lines.append)
    assert code == 0, "\n".join(lines)
    return runs, lines, collected


# ---- run ------------------------------------------------------------------------------------

def test_run_finishes_both_searches_at_once_and_skips_them_next_time(two_runs, table):
    runs, lines, _ = two_runs
    text = "\n".join(lines)
    first_end = min(i for i, l in enumerate(lines) if ": finished" in l)
    assert sum(": start (fresh)" in l for l in lines[:first_end]) == 2, text   # K=2: both ran
    for m in ("darts", "rf-darts"):
        d = runs / f"{m}-s0"
        st = rn.run_state(d)
        assert (st.status, st.epochs, st.total) == ("finished", 2, 2), text
        log = (runs / f"{m}-s0.log").read_text()
        assert "=== reproduce_nb201" in log and "search finished" in log
        side = json.loads((d / "reproduce.json").read_text())
        (session,) = side["sessions"]
        assert session["parallel"] == 2 and session["mode"] == "fresh"
        assert session["outcome"] == "finished" and session["epochs_after"] == 2
        assert f"--method {m} --seed 0" in side["search_command"]
        config = json.loads((d / "config.json").read_text())
        assert config["benchmark"] == str(table[0].resolve())
    assert not list(runs.glob(".*")), "temp files left behind"
    assert "finished:  2  darts-s0, rf-darts-s0" in text

    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    again: list[str] = []
    args = run_args(runs, runs.parent, table[0], "--methods", "darts", "rf-darts", "--seeds",
                    "0", "--parallel", "2")
    assert rn.cmd_run(args, out=again.append) == 0
    assert any(l.startswith("skip darts-s0: finished") for l in again)
    assert any(l.startswith("skip rf-darts-s0: finished") for l in again)
    assert not any("start" in l for l in again if not l.startswith("skip"))
    assert stamps == {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}


def test_budget_stop_keeps_the_checkpoint_and_the_next_call_resumes_it(tmp_path, table):
    bench, values = table
    runs, collected = tmp_path / "runs", tmp_path / "OUT"
    d = runs / "darts-s1"
    job = ["--methods", "darts", "--seeds", "1"]

    # 6 epochs: the search must still be running when the hook sees its first checkpoint
    def stop_after_first_checkpoint(runner):
        # the budget's own path: move its deadline to now once an epoch is checkpointed
        if (d / "checkpoint.pt").exists() and rn.read_metrics(d):
            runner.kill_at = time.monotonic()

    lines: list[str] = []
    args = run_args(runs, tmp_path, bench, *job, "--budget", "600", "--margin", "0",
                    "--collect", str(collected), epochs=6)
    assert rn.cmd_run(args, hook=stop_after_first_checkpoint, out=lines.append) == 0
    st = rn.run_state(d)
    assert st.status == "partial" and 1 <= st.epochs < 6, "\n".join(lines)
    assert any("darts-s1: stopped at the budget" in l for l in lines)
    assert any(l.startswith("partial:") and "darts-s1 (" in l for l in lines)
    assert not (d / "genotype.json").exists()
    # collected after the budget stop too: the small files, no genotype, no checkpoint
    assert {p.name for p in (collected / "darts-s1").iterdir()} == COLLECTED - {"genotype.json"}
    said: list[str] = []
    rn.cmd_record(argparse.Namespace(runs=[collected], out=tmp_path / "rec"), out=said.append)
    assert said == [f"not recorded (unfinished): darts-s1 ({st.epochs}/6 epochs)"]

    more: list[str] = []
    args = run_args(runs, tmp_path, bench, *job, epochs=6)
    assert rn.cmd_run(args, out=more.append) == 0, "\n".join(more)
    assert any(f"darts-s1: start (resume at epoch {st.epochs})" in l for l in more)
    done = rn.run_state(d)
    assert (done.status, done.epochs) == ("finished", 6), "\n".join(more)
    assert json.loads((d / "config.json").read_text())["resumed"][0]["at_epoch"] == st.epochs

    metrics = rn.read_metrics(d)
    assert [r["epoch"] for r in metrics] == [1, 2, 3, 4, 5, 6]
    for r in metrics:                              # the lookups went on after the resume
        assert r["benchmark"]["cifar10"] == values[r["nb201"]][0]
    from dslnas.genotype import from_json, to_nb201_string
    final = to_nb201_string(from_json((d / "genotype.json").read_text()))
    assert final == metrics[-1]["nb201"]
    side = json.loads((d / "reproduce.json").read_text())
    assert [(s["mode"], s["outcome"]) for s in side["sessions"]] == \
        [("fresh", "stopped"), ("resume", "finished")]
    log = (runs / "darts-s1.log").read_text()
    assert log.count("=== reproduce_nb201") == 2 and "--resume" in log


def test_a_collected_checkpoint_resumes_in_another_checkout(tmp_path, table):
    # the device's next call: the folder comes back through $OUT with its checkpoint, is carried
    # into a fresh checkout (other absolute paths) and the search resumes there
    bench, _ = table
    runs, collected = tmp_path / "runs", tmp_path / "OUT"
    d = runs / "darts-s2"

    def stop_after_first_checkpoint(runner):
        if (d / "checkpoint.pt").exists() and rn.read_metrics(d):
            runner.kill_at = time.monotonic()

    job = ["--methods", "darts", "--seeds", "2"]
    args = run_args(runs, tmp_path, bench, *job, "--budget", "600", "--margin", "0",
                    "--collect", str(collected), "--collect-checkpoints", epochs=6)
    assert rn.cmd_run(args, hook=stop_after_first_checkpoint, out=[].append) == 0
    done_before = rn.run_state(d).epochs
    assert {p.name for p in (collected / "darts-s2").iterdir()} == \
        COLLECTED - {"genotype.json"} | {"checkpoint.pt"}

    elsewhere = tmp_path / "next-call"
    shutil.copytree(collected, elsewhere / "runs")
    moved_bench = elsewhere / "table.csv"
    shutil.copy(bench, moved_bench)
    config_path = elsewhere / "runs" / "darts-s2" / "config.json"
    config = json.loads(config_path.read_text())
    config["space_file"] = "/gone/spaces/nb201.nas"          # the other machine's checkout
    config["benchmark"] = "/gone/table.csv"
    config_path.write_text(json.dumps(config))

    lines: list[str] = []
    args = run_args(elsewhere / "runs", tmp_path, moved_bench, *job, epochs=6)
    assert rn.cmd_run(args, out=lines.append) == 0, "\n".join(lines)
    assert any(f"darts-s2: start (resume at epoch {done_before})" in l for l in lines)
    st = rn.run_state(elsewhere / "runs" / "darts-s2")
    assert (st.status, st.epochs) == ("finished", 6), "\n".join(lines)
    config = json.loads(config_path.read_text())
    assert config["benchmark"] == str(moved_bench.resolve())
    assert Path(config["space_file"]).is_file()


def test_no_search_starts_without_min_start_seconds_left(tmp_path, table):
    lines: list[str] = []
    args = run_args(tmp_path / "runs", tmp_path, table[0], "--methods", "darts", "--seeds", "0",
                    "--budget", "30", "--margin", "20", "--min-start", "60")
    t = time.monotonic()
    assert rn.cmd_run(args, out=lines.append) == 0
    assert time.monotonic() - t < 5
    assert any("starting no more searches" in l for l in lines)
    assert any(l.startswith("pending:") and "darts-s0" in l for l in lines)
    assert not (tmp_path / "runs" / "darts-s0").exists()


def test_lockstep_runs_a_methods_seeds_in_one_process_and_resumes_them_together(tmp_path,
                                                                                 table):
    bench, _ = table
    runs = tmp_path / "runs"
    job = ["--methods", "darts", "--seeds", "0", "1", "--lockstep"]
    dirs = [runs / "darts-s0", runs / "darts-s1"]

    def stop_after_first_checkpoints(runner):
        if all((d / "checkpoint.pt").exists() and rn.read_metrics(d) for d in dirs):
            runner.kill_at = time.monotonic()

    lines: list[str] = []
    args = run_args(runs, tmp_path, bench, *job, "--budget", "600", "--margin", "0", epochs=4)
    assert rn.cmd_run(args, hook=stop_after_first_checkpoints, out=lines.append) == 0
    text = "\n".join(lines)
    assert "darts-s0: start (fresh, in lockstep with 1 more)" in text
    assert "darts-s1: start (fresh, in lockstep with 1 more)" in text
    log = (runs / "darts-s0-1.log").read_text()          # one process, one log
    assert log.count("=== reproduce_nb201") == 1 and "--seeds 0 1" in log
    assert f"--out {shlex.quote(str(runs / 'darts-s{seed}'))}" in log
    assert all(rn.run_state(d).status == "partial" for d in dirs), text

    more: list[str] = []
    args = run_args(runs, tmp_path, bench, *job, epochs=4)
    assert rn.cmd_run(args, out=more.append) == 0, "\n".join(more)
    log = (runs / "darts-s0-1.log").read_text()
    assert log.count("=== reproduce_nb201") == 2
    assert f"--resume {dirs[0]} {dirs[1]}" in log
    for d in dirs:
        assert rn.run_state(d).status == "finished"
        side = json.loads((d / "reproduce.json").read_text())
        assert [(s["mode"], s["lockstep"]) for s in side["sessions"]] == \
            [("fresh", 2), ("resume", 2)]

    # each seed searched what it searches alone
    alone = tmp_path / "alone"
    args = run_args(alone, tmp_path, bench, "--methods", "darts", "--seeds", "1", epochs=4)
    assert rn.cmd_run(args, out=[].append) == 0
    drop = ("seconds", "elapsed")
    strip = lambda d: [{k: v for k, v in r.items() if k not in drop} for r in rn.read_metrics(d)]  # noqa: E731
    assert strip(alone / "darts-s1") == strip(dirs[1])


# ---- pieces ---------------------------------------------------------------------------------

def test_queue_is_seed_major(tmp_path, table):
    lines: list[str] = []
    args = run_args(tmp_path / "runs", tmp_path, table[0], "--methods", "darts", "rf-darts",
                    "--seeds", "0", "1", "--dry-run")
    assert rn.cmd_run(args, out=lines.append) == 0
    order = [l.split("--method ")[1].split(" --out")[0] for l in lines]
    assert order == ["darts --seed 0", "rf-darts --seed 0", "darts --seed 1", "rf-darts --seed 1"]
    assert not (tmp_path / "runs" / "darts-s0").exists()


def test_commands_fresh_and_resume(tmp_path):
    args = rn.build_parser().parse_args([
        "run", "--runs", str(tmp_path), "--data", str(tmp_path / "d"), "--benchmark",
        str(tmp_path / "t.csv"), "--search-args=--set C=8 --epochs 3"])
    job = rn.Job("pc-darts", 2, tmp_path / "pc-darts-s2", mode="fresh")
    cmd = rn.search_command(job, args)
    assert cmd[1:4] == ["-m", "dslnas.cli", "search"]
    text = rn.shown_command(cmd)
    assert text.startswith("python -m dslnas.cli search spaces/nb201.nas --method pc-darts "
                           "--seed 2 --out ")
    assert text.endswith(f"--benchmark {tmp_path / 't.csv'} --device cuda --dataset cifar10 "
                         "--no-download --no-progress --set C=8 --epochs 3")
    job.mode = "resume"
    assert rn.search_command(job, args)[4:] == [
        "--resume", str(job.run_dir), "--data", str(tmp_path / "d"), "--device", "cuda",
        "--no-progress", "--no-download"]


def test_a_budget_stop_signals_a_lockstep_process_once(tmp_path, table, monkeypatch):
    # a second SIGTERM tells a search to stop at once, without its step's checkpoint; signals
    # sent at once may merge in the kernel, so the test counts what stop_all sends
    class Proc:
        pid, returncode = 4242, None

        def poll(self):
            return self.returncode

        def wait(self):
            return self.returncode

    sent = []

    def killpg(pid, sig):
        sent.append((pid, sig))
        proc.returncode = -sig
    monkeypatch.setattr(rn.os, "killpg", killpg)
    proc = Proc()
    args = run_args(tmp_path / "runs", tmp_path, table[0], "--lockstep")
    runner = rn.Runner([], args, out=[].append)
    jobs = [rn.Job("darts", s, tmp_path / "runs" / f"darts-s{s}") for s in (0, 1, 2)]
    for job in jobs:
        job.proc, job.log_file, job.started = proc, open(tmp_path / "log", "ab"), time.monotonic()
        job.group = [j.seed for j in jobs]
        runner.running.append(job)
    runner.stop_all()
    assert sent == [(4242, rn.signal.SIGTERM)]
    assert [j.killed for j in jobs] == ["at the budget"] * 3 and not runner.running


def test_lockstep_groups_and_commands(tmp_path):
    args = rn.build_parser().parse_args([
        "run", "--runs", str(tmp_path), "--data", str(tmp_path / "d"), "--benchmark",
        str(tmp_path / "t.csv")])
    jobs = [rn.Job(m, s, tmp_path / f"{m}-s{s}") for s in (0, 1) for m in ("darts", "drnas")]
    (tmp_path / "drnas-s1").mkdir()
    (tmp_path / "drnas-s1" / "checkpoint.pt").write_bytes(b"x")      # partial: resumed
    groups = rn.lockstep_groups(jobs, True)
    assert [[j.name for j in g] for g in groups] == \
        [["darts-s0", "darts-s1"], ["drnas-s0"], ["drnas-s1"]]
    assert [[j.name] for j in jobs] == [[j.name for j in g] for g in rn.lockstep_groups(jobs, False)]
    for j in groups[0]:
        j.mode = "fresh"
    text = rn.shown_command(rn.search_command(groups[0], args))
    assert f"--method darts --seeds 0 1 --out {shlex.quote(str(tmp_path / 'darts-s{seed}'))} " \
        in text
    for j in groups[0]:
        j.mode = "resume"
    assert rn.search_command(groups[0], args)[4:7] == [
        "--resume", str(tmp_path / "darts-s0"), str(tmp_path / "darts-s1")]


def test_a_mean_without_std_is_marked():
    assert rn._fmt_ms(93.5, None) == "93.50 ± —"


def test_fresh_start_clears_an_aborted_run_but_nothing_foreign(tmp_path):
    d = tmp_path / "darts-s0"
    (d / "tb").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    rn.clear_for_fresh_start(d)
    assert not d.exists()
    d.mkdir()
    (d / "notes.md").write_text("mine")
    with pytest.raises(RuntimeError, match="notes.md"):
        rn.clear_for_fresh_start(d)


def test_collect_copies_the_small_files_and_record_report_read_them(two_runs, table, tmp_path):
    runs, lines, collected = two_runs
    bench, values = table
    assert any(l.startswith(f"collected 8 file(s) into {collected}") for l in lines)
    assert not any("WARNING" in l for l in lines)
    assert sorted(p.name for p in collected.iterdir()) == ["darts-s0", "rf-darts-s0"]
    for m in ("darts", "rf-darts"):
        c = collected / f"{m}-s0"
        assert {p.name for p in c.iterdir()} == COLLECTED        # no checkpoint.pt, no tb/
        assert (runs / f"{m}-s0" / "checkpoint.pt").is_file()
        for name in COLLECTED:
            assert (c / name).read_bytes() == (runs / f"{m}-s0" / name).read_bytes()
        assert rn.run_state(c).status == "finished"             # without a checkpoint

    # record from the collected folder == record from the run folders
    from_runs, from_out = tmp_path / "a", tmp_path / "b"
    for src, dest in ((runs, from_runs), (collected, from_out)):
        assert rn.cmd_record(argparse.Namespace(runs=[src], out=dest), out=lambda s: None) == 0
    names = sorted(p.name for p in from_out.iterdir())
    assert names == ["darts-s0.json", "rf-darts-s0.json"]
    for n in names:
        assert (from_out / n).read_text() == (from_runs / n).read_text()
    rec = json.loads((from_out / "darts-s0.json").read_text())
    assert rec["parallel"] == [2] and rec["device_name"] is not None

    out: list[str] = []
    ns = argparse.Namespace(runs=[collected], benchmark=bench, json=True)
    assert rn.cmd_report(ns, out=out.append) == 0
    rep = json.loads(out[0])
    assert [r["method"] for r in rep["runs"]] == ["darts", "rf-darts"]
    assert rep["runs"][0]["accuracy"]["cifar10"] == values[rec["nb201"]][0]

    # more than $OUT brings back: a warning
    said: list[str] = []
    rn.collect_small_files([runs / "darts-s0", runs / "rf-darts-s0", runs / "darts-s0"],
                           tmp_path / "OUT", out=said.append)
    assert said[0].startswith("collected 12 file(s)") and "WARNING" in said[1]


# ---- record and report ----------------------------------------------------------------------

def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_record_then_report_mean_and_std(two_runs, table, tmp_path):
    runs, _, _ = two_runs
    bench, values = table
    results = tmp_path / "results" / "nb201"
    said: list[str] = []
    ns = argparse.Namespace(runs=[runs], out=results)
    assert rn.cmd_record(ns, out=said.append) == 0
    assert sorted(p.name for p in results.iterdir()) == ["darts-s0.json", "rf-darts-s0.json"]
    found = {}
    for m in ("darts", "rf-darts"):
        rec = json.loads((results / f"{m}-s0.json").read_text())
        run = runs / f"{m}-s0"
        metrics = rn.read_metrics(run)
        assert rec["format"] == rn.RECORD_FORMAT and (rec["method"], rec["seed"]) == (m, 0)
        assert rec["nb201"] == metrics[-1]["nb201"] and rec["epochs"] == 2
        assert rec["search_seconds"] == pytest.approx(metrics[-1]["elapsed"], abs=1e-3)
        assert rec["seconds_per_epoch"] == pytest.approx(
            statistics.fmean(r["seconds"] for r in metrics), abs=1e-3)
        assert rec["parallel"] == [2] and rec["device"] == "cpu" and rec["sessions"] == 1
        assert rec["command"].startswith("python -m dslnas.cli search ")
        assert f"--method {m} --seed 0" in rec["command"]
        assert rec["versions"]["torch"] and rec["versions"]["dslnas"]
        # no accuracies: no such keys, and none of the table's values for this architecture
        rn._no_accuracy(rec)
        accs = set(values[rec["nb201"]])
        assert not accs & set(_numbers(rec))
        found[m] = rec["nb201"]

    # two more darts seeds as records (as if searched elsewhere), with known architectures
    extra = {1: arch_string(["nor_conv_3x3"] * 6), 2: arch_string(["skip_connect"] * 6)}
    base = json.loads((results / "darts-s0.json").read_text())
    for seed, arch in extra.items():
        (results / f"darts-s{seed}.json").write_text(json.dumps(
            {**base, "seed": seed, "nb201": arch, "search_seconds": 60.0 * seed,
             "device_name": "Some CPU" if seed == 2 else base["device_name"]}))
    out: list[str] = []
    # the run folder and the records overlap (darts-s0, rf-darts-s0): each run counts once
    ns = argparse.Namespace(runs=[runs, results], benchmark=bench, json=True)
    assert rn.cmd_report(ns, out=out.append) == 0
    rep = json.loads(out[0])
    darts = rep["methods"]["darts"]
    assert darts["seeds"] == [0, 1, 2]
    for i, key in enumerate(rn.DATASETS):
        want = [values[found["darts"]][i], values[extra[1]][i], values[extra[2]][i]]
        assert darts["accuracy"][key]["mean"] == pytest.approx(statistics.fmean(want))
        assert darts["accuracy"][key]["std"] == pytest.approx(statistics.stdev(want))
        assert darts["accuracy"][key]["n"] == 3
    want_min = statistics.fmean([base["search_seconds"] / 60, 1.0, 2.0])
    assert darts["search_minutes"] == pytest.approx(want_min)
    # and per device: a CPU search is not averaged with GPU ones
    gpu = statistics.fmean([base["search_seconds"] / 60, 1.0])
    assert darts["search_minutes_by_device"] == {base["device_name"] or "?": pytest.approx(gpu),
                                                 "Some CPU": pytest.approx(2.0)}
    rf = rep["methods"]["rf-darts"]
    assert rf["seeds"] == [0] and rf["accuracy"]["cifar10"]["std"] is None
    assert rf["accuracy"]["cifar10"]["mean"] == values[found["rf-darts"]][0]
    assert darts["published"]["protocol"] == "A" and darts["parallel"] == [2]
    assert len(rep["runs"]) == 4 and rep["unfinished"] == []

    md: list[str] = []
    ns = argparse.Namespace(runs=[results], benchmark=bench, json=False)   # records alone
    assert rn.cmd_report(ns, out=md.append) == 0
    text = md[0]
    c10 = [values[found["darts"]][0], values[extra[1]][0], values[extra[2]][0]]
    row = next(l for l in text.splitlines() if l.startswith("| darts |"))
    assert "| 3 (0, 1, 2) |" in row
    assert f"{statistics.fmean(c10):.2f} ± {statistics.stdev(c10):.2f}" in row
    assert "54.30±0.00 / 15.61±0.00 / 16.32±0.00 (A)" in row
    rf_row = next(l for l in text.splitlines() if l.startswith("| rf-darts |"))
    assert f"{values[found['rf-darts']][0]:.2f} ± —" in rf_row and "94.27 / 72.94 / ? (?)" in rf_row
    cell = extra[1].replace("|", "\\|")             # escaped inside a table cell
    assert f"| darts | 1 | `{cell}` |" in text             # one line per run
    assert f"{gpu:.1f} ({base['device_name'] or '?'}); 2.0 (Some CPU)" in row
    assert next(l for l in text.splitlines() if l.startswith("| darts | 2 |")).endswith("| Some CPU |")


def test_report_lists_unfinished_runs(two_runs, table, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(two_runs[0] / "darts-s0", runs / "darts-s0")
    (runs / "darts-s0" / "genotype.json").unlink()
    out: list[str] = []
    ns = argparse.Namespace(runs=[runs], benchmark=table[0], json=False)
    assert rn.cmd_report(ns, out=out.append) == 0
    assert "Unfinished: darts-s0 (2/2 epochs)" in out[0]
    assert "| darts | 0; unfinished s0 (2/2) |" in out[0]


def test_compile_cache_is_restored_handed_to_the_searches_and_packed_back(tmp_path, table):
    # a cache from an earlier call: a nested file as TorchInductor writes them
    earlier = tmp_path / "earlier"
    (earlier / "fxgraph" / "ab").mkdir(parents=True)
    (earlier / "fxgraph" / "ab" / "entry").write_bytes(b"\x00graph\xff" * 100)
    archive = tmp_path / "carried" / "compile-cache.tgz"
    said: list[str] = []
    assert rn.pack_compile_cache(earlier, archive, out=said.append) == archive
    assert said[-1].startswith(f"compile cache: wrote {archive}")

    runs, out_dir = tmp_path / "runs", tmp_path / "OUT"
    args = run_args(runs, tmp_path, table[0], "--methods", "darts", "--seeds", "0",
                    "--compile-cache", str(archive), "--collect", str(out_dir), epochs=1)
    seen_env = []
    lines: list[str] = []
    assert rn.cmd_run(args, hook=lambda r: seen_env.append(r.env.get("TORCHINDUCTOR_CACHE_DIR")),
                      out=lines.append) == 0, "\n".join(lines)
    cache = runs / rn.COMPILE_CACHE
    assert set(seen_env) == {str(cache.absolute())}
    assert (cache / "fxgraph" / "ab" / "entry").read_bytes() == b"\x00graph\xff" * 100
    # packed back beside the collected files
    back = out_dir / "compile-cache.tgz"
    assert any(l.startswith(f"compile cache: wrote {back}") for l in lines)
    again = tmp_path / "again"
    rn.restore_compile_cache(back, again, out=said.append)
    assert (again / "fxgraph" / "ab" / "entry").read_bytes() == b"\x00graph\xff" * 100
    assert any(l.startswith(f"collected 4 file(s) into {out_dir}") for l in lines)
    # the cache folder is no run: record and report ignore it
    finished, unfinished = rn.gather([runs])
    assert [rn.run_name(r) for r in finished] == ["darts-s0"] and not unfinished

    # the next call: a truncated archive only means compiling cold, and the search finished
    # before is not collected again
    data = back.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    shutil.rmtree(out_dir)
    lines.clear()
    assert rn.cmd_run(args, out=lines.append) == 0, "\n".join(lines)
    assert any(l.startswith(f"compile cache: {archive} is unreadable") for l in lines)
    assert any(l.startswith("skip darts-s0: finished") for l in lines)
    assert any(l.startswith(f"collected 0 file(s) into {out_dir}") for l in lines)


def test_compile_cache_starts_cold_without_an_archive_and_warns_past_the_out_limit(
        tmp_path, monkeypatch):
    said: list[str] = []
    rn.restore_compile_cache(tmp_path / "none.tgz", tmp_path / "cache", out=said.append)
    assert said == [f"compile cache: {tmp_path / 'none.tgz'} not found, compiling cold"]
    assert rn.pack_compile_cache(tmp_path / "cache", tmp_path / "x.tgz") is None
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "kernel.bin").write_bytes(bytes(range(256)) * 64)
    monkeypatch.setattr(rn, "OUT_MAX_BYTES", 100)
    rn.pack_compile_cache(tmp_path / "cache", tmp_path / "x.tgz", out=said.append)
    assert "WARNING" in said[-1] and "x.tgz" in said[-1]
    # the archive counts towards the 8 files $OUT brings back: 2 finished searches + it = 9
    runs = []
    for name in ("a-s0", "b-s0"):
        (tmp_path / name).mkdir()
        for f in rn.COLLECT_FILES:
            (tmp_path / name / f).write_text("{}")
        runs.append(tmp_path / name)
    said.clear()
    rn.collect_small_files(runs, tmp_path / "OUT", out=said.append, others=0)
    assert len(said) == 1
    rn.collect_small_files(runs, tmp_path / "OUT", out=said.append, others=1)
    assert said[-1].startswith("WARNING: 9 files")
