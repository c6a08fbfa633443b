"""The search loop, run directory, checkpoints and the `search`/`methods`/`evaluate` commands.

Everything runs on CPU with the offline `digits` set and NB201 at C=4, N=1 on a 64-image subset
(2 steps per epoch at batch 16), so the whole file stays fast.
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import attrs
import pytest
import torch

from dslnas import cli
from dslnas.genotype import from_json, to_nb201_string
from dslnas.ir.lower import compile_file
from dslnas.methods.spec import METHODS, get_method
from dslnas.search import checkpoint as ckpt

SPACES = Path(__file__).resolve().parents[1] / "spaces"
NB201 = SPACES / "nb201.nas"
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
TINY = ["--dataset", "digits", "--set", "C=4", "--set", "N=1", "--subset", "64",
        "--batch-size", "16", "--no-progress"]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def search(capsys, out_dir, *extra, method="darts", epochs=1):
    return run(capsys, "search", NB201, "--method", method, "--epochs", epochs, *TINY,
               "--out", out_dir, *extra)


@pytest.fixture(scope="session")
def table(tmp_path_factory) -> Path:
    """A fake NB201 table with every one of the 15,625 architectures."""
    path = tmp_path_factory.mktemp("bench") / "nb201.csv"
    rows = ["arch,cifar10,cifar100"]
    for i, ops in enumerate(itertools.product(OPS, repeat=6)):
        a = ops
        arch = f"|{a[0]}~0|+|{a[1]}~0|{a[2]}~1|+|{a[3]}~0|{a[4]}~1|{a[5]}~2|"
        rows.append(f"{arch},{i % 100 + 0.5},{i % 50 + 0.25}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def two_epoch_run(tmp_path_factory, table):
    """One 2-epoch search with a benchmark table, shared by the run-directory tests."""
    out = tmp_path_factory.mktemp("runs") / "run"
    code = cli.main(["search", str(NB201), "--method", "darts", "--epochs", "2", *TINY,
                     "--benchmark", str(table), "--out", str(out)])
    assert code == 0
    return out


# ---- the run directory ----------------------------------------------------------------------

def test_run_directory_has_every_file_with_the_right_structure(two_epoch_run):
    run = two_epoch_run
    config = json.loads((run / "config.json").read_text())
    assert config["space"]["space"] == "nb201" and config["space"]["params"]["C"] == 4
    assert config["method"]["name"] == "darts"
    assert config["method"]["schedule"]["epochs"] == 2            # the resolved schedule
    assert config["method"]["schedule"]["w_nesterov"] is True     # NB201 family defaults
    assert config["overrides"]["network"] == {"in_channels": 3, "classes": 10, "C": 4, "N": 1}
    assert set(config["versions"]) >= {"torch", "python", "dslnas"}
    assert config["seed"] == 0 and config["dataset"]["name"] == "digits"
    assert config["dataset"]["train_images"] == 32 and config["device"] == "cpu"

    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "alphas", "genotype",
                "nb201", "benchmark", "seconds"} <= set(r)
        assert len(r["alphas"]["cell"]) == 6 and len(r["alphas"]["cell"][0]) == 5
        assert 0 <= r["train_acc"] <= 100 and r["train_loss"] > 0
        assert set(r["benchmark"]) == {"cifar10", "cifar100"}
        assert r["nb201"] == to_nb201_string(from_json(r["genotype"]))
    assert lines[1]["lr"] < lines[0]["lr"]                        # cosine annealing

    assert list((run / "tb").glob("events.out.tfevents.*"))
    g = from_json((run / "genotype.json").read_text())
    assert to_nb201_string(g) == lines[-1]["nb201"]
    txt = (run / "genotype.txt").read_text()
    assert "json:" in txt and "nb201:" in txt and lines[-1]["nb201"] in txt
    assert (run / "genotype.svg").exists() or (run / "genotype.dot").exists()
    state = ckpt.load(run / "checkpoint.pt")
    assert state["epoch"] == 2 and state["method"] == "darts"
    assert torch.equal(state["supernet"]["alphas.cell"], torch.tensor(lines[-1]["alphas"]["cell"]))


def test_summary_names_genotype_benchmark_and_run_dir(tmp_path, capsys, table):
    code, out, err = search(capsys, tmp_path / "r", "--benchmark", table)
    assert code == 0
    assert "genotype:  |" in out and "benchmark: cifar10" in out and str(tmp_path / "r") in out
    assert "epoch 1/1 | train" in err                 # one plain line per epoch off a terminal


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_finishes_an_epoch(tmp_path, capsys, method):
    extra = ["--set", "batches=1"] if method == "idarts-nn" else []
    code, out, err = search(capsys, tmp_path / "r", *extra, method=method)
    assert code == 0, err
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert rec["epoch"] == 1 and rec["nb201"].startswith("|")
    assert (tmp_path / "r" / "genotype.json").exists()


# ---- resume ---------------------------------------------------------------------------------

def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, capsys):
    # DrNAS: Dirichlet samples make the run depend on every RNG state being restored
    args = ["--method", "drnas", "--epochs", 4, "--deterministic"]
    assert run(capsys, "search", NB201, *args, *TINY, "--out", tmp_path / "a")[0] == 0
    code, out, _ = run(capsys, "search", NB201, *args, *TINY, "--out", tmp_path / "b",
                       "--stop-after", 2)
    assert code == 0 and "stopped after epoch 2" in out and "--resume" in out
    assert not (tmp_path / "b" / "genotype.json").exists()
    code, out, _ = run(capsys, "search", "--resume", tmp_path / "b")
    assert code == 0 and "search finished" in out

    a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["alphas"] == rb["alphas"] and ra["train_loss"] == rb["train_loss"]
    assert (tmp_path / "a" / "genotype.json").read_text() == \
        (tmp_path / "b" / "genotype.json").read_text()
    sa, sb = ckpt.load(tmp_path / "a" / "checkpoint.pt"), ckpt.load(tmp_path / "b" / "checkpoint.pt")
    for k, v in sa["supernet"].items():
        assert torch.equal(v, sb["supernet"][k]), k


def _search_process(tmp_path, epochs: int, **popen):
    """A deterministic search run to the end in tmp/a, and the same search started as a process
    writing tmp/b: (the process, tmp/b/metrics.jsonl)."""
    import subprocess
    import sys
    args = [sys.executable, "-m", "dslnas.cli", "search", str(NB201), "--method", "darts",
            "--epochs", str(epochs), "--deterministic", "--dataset", "digits", "--set", "C=4",
            "--set", "N=1", "--subset", "512", "--batch-size", "16", "--no-progress"]
    subprocess.run([*args, "--out", str(tmp_path / "a")], check=True, capture_output=True)
    return subprocess.Popen([*args, "--out", str(tmp_path / "b")], **popen), \
        tmp_path / "b" / "metrics.jsonl"


def _wait_for(proc, ready, what: str) -> None:
    import time
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, f"the run finished before it could be {what}"


def _resume_matches_the_uninterrupted_run(tmp_path, epochs: int) -> None:
    import subprocess
    import sys
    assert not (tmp_path / "b" / "genotype.json").exists()
    p = subprocess.run([sys.executable, "-m", "dslnas.cli", "search", "--resume",
                        str(tmp_path / "b"), "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    a, b = ([json.loads(l) for l in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("a", "b"))
    assert [r["epoch"] for r in b] == list(range(1, epochs + 1))
    for key in ("alphas", "train_loss"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert (tmp_path / "a" / "genotype.json").read_text() == \
        (tmp_path / "b" / "genotype.json").read_text()


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real search process mid-run, resume it, compare with an uninterrupted run."""
    import signal
    import subprocess
    proc, metrics = _search_process(tmp_path, 8, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    _wait_for(proc, lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2,
              "killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(metrics.read_text().splitlines()) < 8
    _resume_matches_the_uninterrupted_run(tmp_path, 8)


def test_truncated_or_corrupt_checkpoint_exits_2_with_a_clear_message(tmp_path, capsys,
                                                                     two_epoch_run):
    run_dir = tmp_path / "run"
    shutil.copytree(two_epoch_run, run_dir)
    ck = run_dir / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    code, out, err = run(capsys, "search", "--resume", run_dir)
    assert code == 2 and "truncated" in err and "Traceback" not in err

    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    ck.write_bytes(bytes(flipped))
    code, _, err = run(capsys, "search", "--resume", run_dir)
    assert code == 2 and "corrupt" in err

    ck.unlink()
    code, _, err = run(capsys, "search", "--resume", run_dir)
    assert code == 2 and "stopped before its first checkpoint" in err
    # and --out on that folder does not send the user to --resume
    code, _, err = run(capsys, "search", NB201, "--method", "darts", *TINY, "--out", run_dir)
    assert code == 2 and "stopped before its first checkpoint: delete it" in err


def test_a_malformed_in_epoch_entry_exits_2_with_a_clear_message(tmp_path, capsys,
                                                                 two_epoch_run):
    run_dir = tmp_path / "run"
    shutil.copytree(two_epoch_run, run_dir)
    good = ckpt.load(run_dir / "checkpoint.pt")
    whole = {"iterations": 1, "seconds": 1.0, "sums": torch.zeros(4), "counts": [16, 16]}
    for entry, says in (("junk", "in_epoch entry is malformed (str"),
                        ({k: v for k, v in whole.items() if k != "iterations"},
                         "in_epoch entry lacks 'iterations'"),
                        ({**whole, "counts": ["x", 1]}, "in_epoch entry is malformed"),
                        ({**whole, "sums": [0.0] * 4}, "in_epoch entry is malformed")):
        ckpt.save({**good, "in_epoch": entry}, run_dir / "checkpoint.pt")
        code, _, err = run(capsys, "search", "--resume", run_dir)
        assert code == 2 and says in err and "Traceback" not in err, (entry, err)


def test_resume_refuses_run_options_even_when_they_look_like_defaults(capsys, two_epoch_run):
    for extra in (["--seed", "0"], ["--epochs", "0"], ["--fused"]):
        code, _, err = run(capsys, "search", "--resume", two_epoch_run, *extra)
        assert code == 2 and f"do not combine it with {extra[0]}" in err, extra
    code, _, err = run(capsys, "search", "--resume", two_epoch_run, "--stop-after", "-5")
    assert code == 2 and "--stop-after must be >= 1, got -5" in err
    with pytest.raises(SystemExit) as info:                    # argparse's own exit
        run(capsys, "search", NB201, "--method", "darts", *TINY, "--seed", str(2 ** 64))
    assert info.value.code == 2 and "--seed is too large" in capsys.readouterr().err


def test_checkpoint_save_is_atomic_and_load_checks_the_header(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save({"x": torch.arange(3), "rng": ckpt.rng_state()}, path)
    ckpt.save({"x": torch.arange(4)}, path)               # replaces, leaves no temp file
    assert torch.equal(ckpt.load(path)["x"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all, no")
    with pytest.raises(ckpt.CheckpointError, match="not a dslnas checkpoint"):
        ckpt.load(tmp_path / "bad.pt")


# ---- user errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--method", "dartz"], "unknown method 'dartz' (did you mean 'darts'?)"),
    (["--method", "darts", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--method", "darts", "--epochs", "-1"], "--epochs must be >= 1"),
    (["--method", "darts", "--set", "w_lr=fast"], "schedule field w_lr: expected float"),
    (["--method", "darts", "--set", "W=3"], "--set W: not a schedule field"),
    (["--method", "pc-darts", "--set", "K=3"], "does not fit space 'nb201'"),
    (["--method", "darts", "--dataset", "cifar10", "--no-download"], "CIFAR-10"),
    (["--method", "darts", "--resume", "x"], "do not combine"),
    (["--method", "idarts-ift", "--set", "K=2.5"],
     "hypergradient 'neumann': K must be an integer >= 0, got 2.5"),
    (["--method", "darts-2nd", "--set", "hypergradient.eps=inf"],
     "eps must be a finite number > 0, got 'inf'"),
    (["--method", "darts", "--set", "a_lr=inf"], "a_lr must be a finite number >= 0, got inf"),
])
def test_bad_values_exit_2_with_a_message(tmp_path, capsys, argv, message):
    argv = [a if a != "x" else str(tmp_path) for a in argv]
    extra = ["--data", tmp_path / "nodata"] if "cifar10" in argv else ["--dataset", "digits"]
    if "--dataset" in argv and "cifar10" not in argv:
        extra = []
    code, _, err = run(capsys, "search", NB201, *argv, "--set", "C=4", "--set", "N=1",
                       "--out", tmp_path / "r", *extra)
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()                  # refused before the run folder


def test_out_dir_that_holds_a_run_is_refused(capsys, two_epoch_run):
    code, _, err = search(capsys, two_epoch_run)
    assert code == 2 and "--resume" in err


# ---- methods, evaluate ---------------------------------------------------------------------

def test_methods_lists_all_ten_with_parts_and_defaults(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")
             and not line.startswith("families")]
    assert names == list(METHODS) and len(names) == 10
    assert "hypergradient neumann(K=2)" in out and "partial_channels(K=4)" in out
    code, out, _ = run(capsys, "methods", "--json")
    data = json.loads(out)
    assert data["idarts-ift"]["nb201"]["schedule"]["epochs"] == 30
    assert data["pc-darts"]["darts"]["schedule"]["warmup_epochs"] == 15


def test_nb201_step_order_follows_autodl_v1_for_first_order_and_v2_for_second_order():
    order = {name: get_method(name).for_family("nb201").schedule.order for name in METHODS}
    for name in ("darts", "rf-darts", "idarts-nn"):                     # DARTS-V1
        assert order[name] == "weights_first", name
    for name in ("darts-2nd", "amended-darts"):                         # DARTS-V2
        assert order[name] == "arch_first", name
    assert {get_method(n).for_family("darts").schedule.order for n in METHODS} == {"arch_first"}


def test_evaluate_looks_a_genotype_up(tmp_path, capsys, table, two_epoch_run):
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    code, out, _ = run(capsys, "evaluate", arch, "--benchmark", table, "--json")
    assert code == 0 and set(json.loads(out)["accuracy"]) == {"cifar10", "cifar100"}
    code, out, _ = run(capsys, "evaluate", two_epoch_run, "--benchmark", table)
    assert code == 0 and "cifar10" in out
    code, _, err = run(capsys, "evaluate", "|conv~0|", "--benchmark", table)
    assert code == 2 and "not in the benchmark table" in err


# ---- --set rule and method files --------------------------------------------------------------

def test_set_rule_routes_schedule_network_and_part_options(capsys):
    from dslnas.search.commands import resolve_method
    params = {"C": 16, "N": 5, "classes": 10, "in_channels": 3}
    m, net, _ = resolve_method("pc-darts", None, ["w_lr=0.01", "C=8", "K=2", "w_nesterov=false"],
                               "nb201", params)
    assert m.schedule.w_lr == 0.01 and not m.schedule.w_nesterov and net == {"C": 8}
    assert m.transforms[0].options == {"K": 2}
    m, _, _ = resolve_method("idarts-ift", None, ["hypergradient.K=3", "a_betas=0.9,0.99"],
                             "nb201", params, epochs=7)
    assert m.hypergradient.options["K"] == 3 and m.schedule.a_betas == (0.9, 0.99)
    assert m.schedule.epochs == 7 and m.schedule.inner_steps == 4


def test_method_file_combines_parts(tmp_path, capsys):
    from dslnas.search.commands import resolve_method
    spec = tmp_path / "mine.toml"
    spec.write_text('relaxation = "softmax_beta"\n'
                    'hypergradient = {name = "neumann", K = 1}\n'
                    'transforms = [{name = "partial_channels", K = 2}]\n'
                    '[schedule]\nepochs = 3\nw_lr = 0.05\n')
    params = {"C": 16, "N": 5}
    m, _, _ = resolve_method(None, str(spec), ["warmup_epochs=1"], "nb201", params)
    assert m.name == "mine" and m.relaxation.name == "softmax_beta"
    assert m.hypergradient.options == {"K": 1} and m.transforms[0].options == {"K": 2}
    assert (m.schedule.epochs, m.schedule.w_lr, m.schedule.warmup_epochs) == (3, 0.05, 1)
    with pytest.raises(cli.UserError, match="several parts have option 'K'"):
        resolve_method(None, str(spec), ["K=4"], "nb201", params)
    spec.write_text("relaxations = 'softmax'\n")
    with pytest.raises(cli.UserError, match="unknown key"):
        resolve_method(None, str(spec), [], "nb201", params)


def test_a_custom_method_file_searches(tmp_path, capsys):
    spec = tmp_path / "mine.toml"
    spec.write_text('hypergradient = {name = "amended", damping = 0.1}\n'
                    'transforms = ["node_norm"]\n')
    code, out, err = run(capsys, "search", NB201, "--method-file", spec, "--epochs", 1, *TINY,
                         "--out", tmp_path / "r")
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["method"]["name"] == "mine"
    assert config["method"]["hypergradient"] == {"name": "amended", "options": {"damping": 0.1}}


# ---- the steps themselves -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["darts-2nd", "pc-darts"])
def test_weight_step_leaves_alphas_and_arch_step_leaves_weights(method):
    from dslnas.search.loop import Searcher
    ir = compile_file(NB201, {"C": 4, "N": 1})
    spec = get_method(method).for_family("nb201")
    s = Searcher(ir, attrs.evolve(spec, schedule=attrs.evolve(spec.schedule, warmup_epochs=0)))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    s.weight_step(x, y)                                    # momentum buffers exist from here on

    arch = [p.detach().clone() for p in s.arch]
    weights = [p.detach().clone() for p in s.weights]
    s.weight_step(x, y)
    assert all(torch.equal(a, p) for a, p in zip(arch, s.arch))
    assert not all(torch.equal(w, p) for w, p in zip(weights, s.weights))

    weights = [p.detach().clone() for p in s.weights]
    s.arch_step((x, y), (x, y))
    assert all(torch.equal(w, p) for w, p in zip(weights, s.weights))
    assert not all(torch.equal(a, p) for a, p in zip(arch, s.arch))
    assert len(s.arch) == (2 if method == "pc-darts" else 1)       # α, and PC-DARTS' β


def test_warmup_freezes_the_architecture(tmp_path, capsys):
    code, _, _ = search(capsys, tmp_path / "r", "--set", "warmup_epochs=1", epochs=2)
    assert code == 0
    a, b = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert a["arch_frozen"] and not b["arch_frozen"]
    init = ckpt.load(tmp_path / "r" / "checkpoint.pt")
    assert init["epoch"] == 2 and a["alphas"] != b["alphas"]


def test_cli_parser_registers_the_search_commands():
    """dslnas/cli.py must call dslnas.search.commands.add_commands on its subparsers."""
    real = cli.build_parser()
    sub = next(a for a in real._actions if a.dest == "command")
    assert {"search", "methods", "evaluate"} <= set(sub.choices)


def test_idarts_ift_epoch_is_the_inner_loop_one_alpha_step_per_val_batch():
    """Reference §7a: per val batch, T weight steps on train batches, then the α step with H and
    M on one more, fresh train batch; an epoch is one pass over the val stream."""
    from dslnas.search.datasets import load_dataset
    from dslnas.search.loader import SearchData
    from dslnas.search.loop import Searcher
    ir = compile_file(NB201, {"C": 4, "N": 1})
    spec = get_method("idarts-ift").for_family("nb201")
    T = spec.schedule.inner_steps
    assert T == 4
    ds = load_dataset("digits", None)

    def data():   # 32 train / 32 val images in batches of 8: 4 val batches per epoch
        return SearchData.from_dataset(ds, batch_size=8, split="half", seed=1, subset=64)

    s, d = Searcher(ir, spec, seed=0), data()
    steps = []
    weight_step, arch_step = s.weight_step, s.arch_step
    s.weight_step = lambda x, y, **kw: (steps.append(("w", x, None)), weight_step(x, y, **kw))
    s.arch_step = lambda tb, vb, **kw: (steps.append(("a", tb[0], vb[0])),
                                        arch_step(tb, vb, **kw))
    assert s.iterations(d) == len(d.val) == 4
    s.begin_epoch()
    s.train_epoch(d)

    assert "".join(k for k, _, _ in steps) == ("w" * T + "a") * 4
    assert s.global_step == 4 * T                       # weight steps
    twin = data()                                       # the same streams, drawn in order
    for i, (kind, x, xv) in enumerate(steps):
        assert torch.equal(x, twin.train.next()[0]), i      # the α step's batch is the next one
        if kind == "a":
            assert torch.equal(xv, twin.val.next()[0])
    assert d.val.epoch == 1 and d.train.epoch == 5 and d.train.pos == 0   # (T + 1) x 4 = 20


def test_hypergradient_inner_steps_is_not_an_option(tmp_path, capsys):
    code, _, err = search(capsys, tmp_path / "r", "--set", "hypergradient.inner_steps=1",
                          method="idarts-ift")
    assert code == 2 and "inner_steps" in err


# ---- checkpoints inside an epoch ----------------------------------------------------------------

def _small_search(tmp_path, name, method, **kwargs):
    """NB201 C=4 N=1 on 128 digits images (64/64, batches of 16): 4 iterations per epoch."""
    from dslnas.search.datasets import load_dataset
    from dslnas.search.loader import SearchData
    from dslnas.search.loop import search
    from dslnas.search.rundir import RunDir
    ir = compile_file(NB201, {"C": 4, "N": 1})
    spec = get_method(method).for_family("nb201")
    spec = attrs.evolve(spec, schedule=attrs.evolve(spec.schedule, epochs=3, batch_size=16))
    data = SearchData.from_dataset(load_dataset("digits", None), batch_size=16, split="half",
                                   seed=0, subset=128)
    path = tmp_path / name
    resume = kwargs.pop("resume", False)
    run = RunDir(path) if resume else RunDir.create(path, space="nb201", method=method, seed=0)
    state = ckpt.load(run.checkpoint_path) if resume else None
    with run:
        return search(ir, spec, data, run, deterministic=True, progress=False,
                      resume_state=state, log=lambda line: None, **kwargs), run


@pytest.mark.parametrize("method", ["darts", "idarts-ift"])     # the plain and the inner loop
def test_a_stop_inside_an_epoch_saves_there_and_resumes_exactly(tmp_path, method):
    a, _ = _small_search(tmp_path, "a", method)
    asked = []

    def should_stop():              # asked after iterations 1-3 and at the end of each epoch
        asked.append(1)
        return "SIGTERM" if len(asked) >= 6 else None      # epoch 2, after its 2nd iteration

    b, run = _small_search(tmp_path, "b", method, should_stop=should_stop)
    assert b.interrupted == "SIGTERM" and not b.finished and b.epochs == 1
    saved = ckpt.load(run.checkpoint_path)
    assert saved["in_epoch"]["iterations"] == 2 and saved["epoch"] == 1
    assert saved["in_epoch"]["counts"][0] == 2 * 16 * (4 if method == "idarts-ift" else 1)

    c, _ = _small_search(tmp_path, "b", method, resume=True)
    assert c.finished and c.interrupted is None
    assert [r["alphas"] for r in c.history] == [r["alphas"] for r in a.history]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "step"):
        assert [r[key] for r in c.history] == [r[key] for r in a.history], key
    sa, sc = ckpt.load(tmp_path / "a" / "checkpoint.pt"), ckpt.load(run.checkpoint_path)
    assert "in_epoch" not in sc
    for k, v in sa["supernet"].items():
        assert torch.equal(v, sc["supernet"][k]), k


def test_periodic_checkpoints_inside_an_epoch(tmp_path, monkeypatch):
    saves = []
    save = ckpt.save
    monkeypatch.setattr(ckpt, "save", lambda state, path: (saves.append(state.get("in_epoch")),
                                                           save(state, path)))
    result, _ = _small_search(tmp_path, "a", "darts", checkpoint_every=1e-9)
    assert result.finished
    # per epoch: after iterations 1-3 (not the last: the epoch's end saves then), then the end
    assert [s and s["iterations"] for s in saves] == [1, 2, 3, None] * 3


def test_sigterm_stops_a_search_after_its_step_and_resume_finishes_it(tmp_path):
    import signal
    import subprocess
    proc, metrics = _search_process(tmp_path, 4, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
    _wait_for(proc, metrics.exists, "stopped")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopping after the current step" in err and "stopped (SIGTERM)" in err
    assert "search stopped (SIGTERM)" in out and "--resume" in out
    _resume_matches_the_uninterrupted_run(tmp_path, 4)


def _open_fds_to(path: Path) -> list[str]:
    import os
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                fds.append(fd)
        except OSError:                                   # the listing's own fd, now closed
            pass
    return fds


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("code", ["ENOLCK", "EOPNOTSUPP", "EIO"])
def test_a_lock_that_fails_says_why_and_closes_its_file(tmp_path, monkeypatch, capsys, code):
    import errno
    import fcntl
    import os
    from dslnas.search.rundir import LOCK, RunDir, RunDirError
    number = getattr(errno, code)

    def flock(f, op):
        raise OSError(number, os.strerror(number))
    monkeypatch.setattr(fcntl, "flock", flock)
    run_dir = RunDir(tmp_path)
    if code == "EIO":                                     # a real error: say which
        with pytest.raises(RunDirError, match=f"cannot lock {tmp_path / LOCK}: "
                                              f"{os.strerror(number)}"):
            run_dir.lock()
    else:                                                 # no locks here: go on, unguarded
        run_dir.lock()
        err = capsys.readouterr().err
        assert "cannot be locked" in err and os.strerror(number) in err
        assert "in use" not in err
    assert _open_fds_to(tmp_path / LOCK) == []


def test_a_run_folder_is_held_by_one_search_at_a_time(tmp_path, capsys, two_epoch_run):
    from dslnas.search.rundir import RunDir, RunDirError
    run_dir = tmp_path / "run"
    shutil.copytree(two_epoch_run, run_dir)
    holder = RunDir.open(run_dir)
    holder.lock()
    with pytest.raises(RunDirError, match="in use by another search"):
        RunDir.open(run_dir).lock()
    code, _, err = run(capsys, "search", "--resume", run_dir)
    assert code == 2 and "in use by another search" in err
    holder.close()                                        # released: the resume goes ahead
    code, out, _ = run(capsys, "search", "--resume", run_dir)
    assert code == 0 and "search finished" in out


def test_drnas_progressive_searches_fused_cells_and_resumes_across_a_stage_switch(tmp_path, capsys):
    """DrNAS' progressive search on fused cells, stopped after its stage switch (pruned to 3 ops
    per edge, widened to C/2) and resumed, ends exactly where the uninterrupted run does."""
    args = ["--method", "drnas-progressive", "--epochs", 4, "--deterministic", *TINY,
            "--set", "progressive.epochs=[2, 2]", "--set", "progressive.warmup=0"]
    assert run(capsys, "search", NB201, *args, "--out", tmp_path / "a")[0] == 0
    assert run(capsys, "search", NB201, *args, "--out", tmp_path / "b", "--stop-after", 3)[0] == 0
    state = ckpt.load(tmp_path / "b" / "checkpoint.pt")
    assert state["fused"] and state["stages"] == [1]
    active = [v for k, v in state["supernet"].items() if k.endswith(".active")]
    assert active and all(bool((a.sum(1) == 3).all()) for a in active)
    code, out, _ = run(capsys, "search", "--resume", tmp_path / "b")
    assert code == 0 and "search finished" in out
    a, b = ([json.loads(l) for l in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in "ab")
    assert [r["alphas"] for r in a] == [r["alphas"] for r in b]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert (tmp_path / "a" / "genotype.json").read_text() == \
        (tmp_path / "b" / "genotype.json").read_text()
