"""Several searches in one process, taking turns (dslnas.search.lockstep, `search --seeds`)."""
from __future__ import annotations

import json
import random

import attrs
import numpy as np
import pytest
import torch

from dslnas import cli
from dslnas.ir.lower import compile_file
from dslnas.methods.spec import get_method
from dslnas.search import checkpoint as ckpt
from dslnas.search.lockstep import Lockstep

from test_search import NB201, TINY


# ---- the baton -----------------------------------------------------------------------------

def test_tasks_take_turns_one_iteration_each_and_the_shorter_ones_drop_out():
    log = []

    def task(name, n):
        def run(pass_baton):
            for k in range(n):
                log.append(f"{name}{k}")
                pass_baton()
            return name
        return run

    results = Lockstep().run([task("a", 3), task("b", 1), task("c", 2)])
    assert results == ["a", "b", "c"]
    assert log == ["a0", "b0", "c0", "a1", "c1", "a2"]


def test_a_failing_task_is_reported_and_the_others_finish():
    def bad(pass_baton):
        pass_baton()
        raise ValueError("diverged")

    def good(pass_baton):
        for _ in range(3):
            pass_baton()
        return 42

    results = Lockstep().run([bad, good])
    assert isinstance(results[0], ValueError) and str(results[0]) == "diverged"
    assert results[1] == 42


def test_each_task_keeps_its_own_random_streams():
    def draws(seed, pass_baton=None):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = []
        for _ in range(4):
            out.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
            if pass_baton is not None:
                pass_baton()
        return out

    alone = [draws(1), draws(2)]
    together = Lockstep().run([lambda p: draws(1, p), lambda p: draws(2, p)])
    assert together == alone
    assert alone[0] != alone[1]


# ---- whole searches ------------------------------------------------------------------------

def _task(tmp_path, name, method, seed, epochs=3):
    """A search (NB201 C=4 N=1, digits, ``epochs`` of 4 iterations) as a Lockstep task."""
    from dslnas.search.datasets import load_dataset
    from dslnas.search.loader import SearchData
    from dslnas.search.loop import search
    from dslnas.search.rundir import RunDir
    ir = compile_file(NB201, {"C": 4, "N": 1})
    spec = get_method(method).for_family("nb201")
    spec = attrs.evolve(spec, schedule=attrs.evolve(spec.schedule, epochs=epochs,
                                                    batch_size=16))
    data = SearchData.from_dataset(load_dataset("digits", None), batch_size=16, split="half",
                                   seed=seed, subset=128)
    run = RunDir.create(tmp_path / name, space="nb201", method=method, seed=seed)

    def task(pass_baton=None):
        with run:
            return search(ir, spec, data, run, seed=seed, deterministic=True, progress=False,
                          log=lambda line: None, after_iteration=pass_baton)
    return task


def _same_search(a, b):
    assert a.finished and b.finished and a.genotype == b.genotype
    for key in ("alphas", "train_loss", "train_acc", "val_loss", "val_acc", "step"):
        assert [r[key] for r in a.history] == [r[key] for r in b.history], key


def test_searches_in_lockstep_compute_what_they_compute_alone(tmp_path):
    # drnas samples from the global generator in every step: a search's draws must not be
    # taken by the other; darts-2nd and drnas run different numbers of kernels per step
    jobs = [("darts", 0), ("drnas", 1), ("drnas", 2), ("darts-2nd", 0)]
    alone = [_task(tmp_path, f"alone-{m}-{s}", m, s)() for m, s in jobs]
    together = Lockstep().run([_task(tmp_path, f"lock-{m}-{s}", m, s) for m, s in jobs])
    for a, b in zip(alone, together):
        assert not isinstance(b, BaseException), b
        _same_search(a, b)
    assert alone[1].alphas["cell"].tolist() != alone[2].alphas["cell"].tolist()
    for (m, s) in jobs:
        wa = ckpt.load(tmp_path / f"alone-{m}-{s}" / "checkpoint.pt")["supernet"]
        wb = ckpt.load(tmp_path / f"lock-{m}-{s}" / "checkpoint.pt")["supernet"]
        assert all(torch.equal(v, wb[k]) for k, v in wa.items())


# ---- the command line ----------------------------------------------------------------------

def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _metrics(run_dir):
    """metrics.jsonl without the timings."""
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "elapsed")} for r in lines]


def test_search_seeds_runs_each_seed_as_it_runs_alone(tmp_path, capsys):
    common = ["search", NB201, "--method", "drnas", "--epochs", 2, *TINY]
    code, out, err = _cli(capsys, *common, "--seeds", 0, 1, "--out", tmp_path / "lock-s{seed}")
    assert code == 0, err
    assert out.count("search finished") == 2
    assert "[lock-s0] " in err and "[lock-s1] " in err          # whose line it is
    for seed in (0, 1):
        code, _, err = _cli(capsys, *common, "--seed", seed, "--out", tmp_path / f"alone-{seed}")
        assert code == 0, err
        together = _metrics(tmp_path / f"lock-s{seed}")
        assert together == _metrics(tmp_path / f"alone-{seed}")
        assert json.loads((tmp_path / f"lock-s{seed}" / "config.json").read_text())["seed"] == seed
    assert _metrics(tmp_path / "lock-s0") != _metrics(tmp_path / "lock-s1")

    # stopped after one epoch, resumed together: the same runs again
    code, _, err = _cli(capsys, *common, "--seeds", 0, 1, "--stop-after", 1,
                        "--out", tmp_path / "part-s{seed}")
    assert code == 0, err
    assert [len(_metrics(tmp_path / f"part-s{s}")) for s in (0, 1)] == [1, 1]
    code, out, err = _cli(capsys, "search", "--resume", tmp_path / "part-s0",
                          tmp_path / "part-s1", "--no-progress")
    assert code == 0, err
    for seed in (0, 1):
        assert _metrics(tmp_path / f"part-s{seed}") == _metrics(tmp_path / f"alone-{seed}")


@pytest.mark.parametrize("extra, message", [
    (["--seeds", 0, 0], "a seed is given twice"),
    (["--seed", 1, "--seeds", 2, 3], "give --seed or --seeds, not both"),
    (["--seeds", 0, 1, "--out", "runs-x"], "needs {seed}"),
    (["--seeds", 0, -1, "--out", "runs-x-s{seed}"], "--seeds must be >= 0"),
])
def test_bad_seed_lists_exit_2_before_anything_is_written(tmp_path, capsys, extra, message):
    code, _, err = _cli(capsys, "search", NB201, "--method", "darts", *TINY,
                        *[tmp_path / a if str(a).startswith("runs-x") else a for a in extra])
    assert code == 2 and message in err
    assert not any(tmp_path.iterdir())


def test_a_failed_resume_of_several_runs_changes_none_of_them(tmp_path, capsys):
    code, _, err = _cli(capsys, "search", NB201, "--method", "darts", "--epochs", 2, *TINY,
                        "--stop-after", 1, "--out", tmp_path / "a")
    assert code == 0, err
    before = (tmp_path / "a" / "config.json").read_text()
    code, _, err = _cli(capsys, "search", "--resume", tmp_path / "a", tmp_path / "missing")
    assert code == 2 and "missing" in err
    assert (tmp_path / "a" / "config.json").read_text() == before     # no 'resumed' entry
    code, _, err = _cli(capsys, "search", "--resume", tmp_path / "a", "--no-progress")
    assert code == 0, err                                              # and it is unlocked


def test_a_space_after_seeds_is_named_as_the_mistake(capsys):
    with pytest.raises(SystemExit) as stop:           # argparse's own exit
        cli.main(["search", "--seeds", "0", "1", str(NB201), *map(str, TINY)])
    assert stop.value.code == 2
    assert "give the space before --seeds" in capsys.readouterr().err


def test_resume_refuses_a_run_named_twice(tmp_path, capsys):
    code, _, err = _cli(capsys, "search", "--resume", tmp_path / "a", tmp_path / "a")
    assert code == 2 and "named twice" in err


def test_lockstep_speed_script_counts_every_iteration(tmp_path, capsys):
    import importlib.util
    path = NB201.parents[1] / "benchmarks" / "lockstep_speed.py"
    spec = importlib.util.spec_from_file_location("lockstep_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "rows.json"
    assert mod.main(["--device", "cpu", "--set", "C=4", "--set", "N=1", "--ks", "1", "3",
                     "--iters", "2", "--warmup", "1", "--batch-size", "8",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["k"], r["iterations"]) for r in rows] == [(1, 3), (3, 9)]
    for r in rows:
        assert r["round_ms"] > 0 and r["iteration_ms"] == pytest.approx(r["round_ms"] / r["k"])
    assert rows[0]["throughput"] == 1.0
    assert "| 3 |" in capsys.readouterr().out


def test_compiled_cells_in_lockstep_threads_share_their_graphs_and_compute_as_alone():
    # torch.compile runs inside the searches' threads (one at a time, the baton's holder):
    # the cells of every searcher reuse the same compiled graphs, and the results are exact
    import torch._dynamo
    from torch._dynamo.utils import counters
    from dslnas.search.datasets import load_dataset
    from dslnas.search.loader import SearchData
    from dslnas.search.loop import Searcher
    ir = compile_file(NB201, {"C": 4, "N": 1, "in_channels": 3, "classes": 10})
    spec = get_method("darts").for_family("nb201")
    spec = attrs.evolve(spec, schedule=attrs.evolve(spec.schedule, batch_size=16))
    data = SearchData.from_dataset(load_dataset("digits", None, norm="nb201"), batch_size=16,
                                   split="half", seed=0, subset=96)
    batches = [(data.train.next(), data.val.next()) for _ in range(3)]

    def task(seed):
        def run(pass_baton=lambda: None):
            s = Searcher(ir, spec, seed=seed, compile_cells=True)
            s.supernet.train()
            for (xt, yt), (xv, yv) in batches:
                s.iteration(xt, yt, xv, yv, do_arch=True, frozen=False)
                pass_baton()
            return s.supernet.state_dict()
        return run

    torch._dynamo.reset()
    counters.clear()
    alone = [task(0)(), task(1)()]
    together = Lockstep().run([task(0), task(1)])
    assert counters["stats"]["unique_graphs"] == 6      # 3 cell shapes x weight/α step, once
    for a, b in zip(alone, together):
        assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert not torch.equal(alone[0]["alphas.cell"], alone[1]["alphas.cell"])


def test_abort_stops_every_task_at_its_next_turn():
    import threading
    turns = []

    def forever(pass_baton):
        while True:
            turns.append(1)
            pass_baton()

    lock = Lockstep()
    out = []
    runner = threading.Thread(target=lambda: out.append(lock.run([forever, forever])))
    runner.start()
    while len(turns) < 10:
        pass
    lock.abort()                        # what a second Ctrl-C does
    runner.join(10)
    assert not runner.is_alive()
    assert [type(r).__name__ for r in out[0]] == ["Aborted", "Aborted"]


def test_a_search_that_ends_first_leaves_the_determinism_flags_to_the_others(tmp_path):
    # each search sets the global flags for its run; the first to end must not reset them
    # while another in lockstep still runs
    seen = {}

    def tracked(name, epochs):
        task = _task(tmp_path, name, "darts", 0, epochs=epochs)

        def run(pass_baton):
            def hook():
                seen.setdefault(name, []).append(torch.are_deterministic_algorithms_enabled())
                pass_baton()
            return task(hook)
        return run

    before = torch.are_deterministic_algorithms_enabled()
    results = Lockstep().run([tracked("short", 1), tracked("long", 3)])
    assert not any(isinstance(r, BaseException) for r in results), results
    assert len(seen["long"]) == 3 * len(seen["short"]) and all(seen["long"]) and all(seen["short"])
    assert torch.are_deterministic_algorithms_enabled() == before     # restored at the end


def test_searches_that_sample_inside_their_graphs_take_turns_on_the_gpu_too():
    from types import SimpleNamespace

    from dslnas.search.commands import _serial_on_gpu

    def jobs(device, *methods):
        return [SimpleNamespace(device=device, method=get_method(m).for_family("nb201"))
                for m in methods]
    assert _serial_on_gpu(jobs("cuda", "darts", "drnas"))          # Dirichlet samples
    assert _serial_on_gpu(jobs("cuda", "drnas-progressive", "drnas-progressive"))
    assert not _serial_on_gpu(jobs("cuda", "darts", "rf-darts", "idarts-ift", "pc-darts"))
    assert not _serial_on_gpu(jobs("cpu", "drnas", "drnas"))       # no streams to overlap
