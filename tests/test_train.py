"""`dslnas train`: recipes, cutout, drop-path, the training loop, resume and bad input.

Everything runs on the CPU on the offline `digits` set (16x16) with small networks.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dslnas import cli
from dslnas.genotype import known_genotype
from dslnas.ir.lower import compile_file
from dslnas.search import checkpoint as ckpt
from dslnas.search.datasets import load_dataset
from dslnas.search.loader import DeviceBatches, eval_batches
from dslnas.search.rundir import RunDir
from dslnas.supernet.cells import DropPath
from dslnas.train.recipes import RECIPES, default_recipe
from dslnas.train.trainer import Trainer, cosine_lr, train

SPACES = Path(__file__).resolve().parents[1] / "spaces"
NB201, DARTS = SPACES / "nb201.nas", SPACES / "darts.nas"
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
# DARTS_V2 in a small network on digits: reductions at 16 -> 8 -> 4 px, so no auxiliary head
SMALL_DARTS = ["--dataset", "digits", "--set", "C=4", "--set", "L=3", "--set", "auxiliary=0",
               "--subset", "96", "--batch-size", "32", "--no-progress"]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- recipes -------------------------------------------------------------------------------

def test_darts_recipe_is_the_reference_evaluation_and_builds_the_3_3m_network():
    r = RECIPES["darts"]
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay) == (600, 96, 0.025, 0.9, 3e-4)
    assert (r.grad_clip, r.cutout, r.drop_path, r.auxiliary) == (5.0, 16, 0.2, 0.4)
    assert r.network == {"C": 36, "L": 20} and not r.nesterov
    ir = compile_file(DARTS, r.network)
    with torch.device("meta"):
        t = Trainer(ir, known_genotype("DARTS_V2"), r, device="meta")
    # reference/spaces.md 1.8: 3,349,342 without the auxiliary head, 3,825,768 with it
    assert t.parameters_count == 3_349_342
    assert sum(p.numel() for p in t.params) == 3_825_768
    assert default_recipe("darts") == "darts" and default_recipe("nb201") == "nb201"


def test_cosine_lr_starts_at_lr_and_falls_to_lr_min():
    r = RECIPES["darts"]
    lrs = [cosine_lr(r, e) for e in range(r.epochs)]
    assert lrs[0] == r.lr and lrs[300] == pytest.approx(r.lr / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and 0 < lrs[-1] < 1e-6


# ---- cutout --------------------------------------------------------------------------------

def _darts_cutout_mask(h, w, length, cy, cx):
    """DARTS utils.Cutout's mask for a given centre (numpy, as the reference computes it)."""
    mask = np.ones((h, w), np.float32)
    y1, y2 = np.clip(cy - length // 2, 0, h), np.clip(cy + length // 2, 0, h)
    x1, x2 = np.clip(cx - length // 2, 0, w), np.clip(cx + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return mask


@pytest.mark.parametrize("size,length", [(32, 16), (8, 6), (16, 5)])
def test_cutout_zeroes_darts_squares_after_normalising(size, length):
    b = 200
    images = torch.full((b, 3, size, size), 200, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(3)
    stream = DeviceBatches(images, torch.zeros(b, dtype=torch.int64), b, mean=(0.1,) * 3,
                           std=(0.5,) * 3, crop=False, flip=False, shuffle=False,
                           cutout=length, generator=gen)
    x, _ = stream.next()
    value = (200 / 255 - 0.1) / 0.5
    replay = torch.Generator().manual_seed(3)                 # the same centres, drawn again
    cy = torch.randint(0, size, (b, 1), generator=replay)
    cx = torch.randint(0, size, (b, 1), generator=replay)
    for i in range(b):
        want = _darts_cutout_mask(size, size, length, int(cy[i]), int(cx[i])) * value
        for c in range(3):
            np.testing.assert_allclose(x[i, c].numpy(), want, rtol=1e-6)
    clipped = ((cy < length // 2) | (cy + length // 2 > size)).sum()
    assert clipped > 0                                        # borders were exercised


def test_cutout_off_leaves_batches_as_they_were():
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)
    a = DeviceBatches(images, labels, 8, mean=(0.5,) * 3, std=(0.2,) * 3, seed=1)
    b = DeviceBatches(images, labels, 8, mean=(0.5,) * 3, std=(0.2,) * 3, seed=1, cutout=0)
    for _ in range(6):
        assert torch.equal(a.next()[0], b.next()[0])


# ---- drop-path -----------------------------------------------------------------------------

def test_drop_path_probability_is_a_buffer_that_compiled_code_reads_without_retracing():
    from torch._dynamo.testing import CompileCounter
    drop = DropPath().train()
    x = torch.ones(20_000, 1, 1, 1)
    drop.set(0.0)
    assert torch.equal(drop(x), x)
    counter = CompileCounter()
    fn = torch.compile(drop, backend=counter)
    for p in (0.1, 0.25, 0.4):
        drop.set(p)
        y = fn(x).flatten()
        assert ((y == 0) | torch.isclose(y, torch.tensor(1 / (1 - p)))).all()
        assert abs((y == 0).float().mean().item() - p) < 0.02
    assert counter.frame_count == 1
    with pytest.raises(ValueError):
        drop.set(1.0)


# ---- the loop ------------------------------------------------------------------------------

def test_train_learns_digits_from_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", ARCH, "--space", NB201, "--dataset", "digits",
                            "--set", "C=8", "--set", "N=1", "--epochs", "6", "--batch-size",
                            "64", "--out", out, "--no-progress")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, 7))
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert summary["test_acc"] == metrics[-1]["test_acc"] > 60.0      # chance is 10 %
    assert summary["finished"] and summary["recipe"] == "nb201"
    assert f"test accuracy {summary['test_acc']:.2f}%" in stdout
    model = ckpt.load(out / "model.pt")
    assert model["format"] == "dslnas-model" and model["recipe"]["epochs"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "train" and config["network"]["C"] == 8
    assert [m["lr"] for m in metrics] == [cosine_lr(RECIPES["nb201"].__class__(
        **{**RECIPES["nb201"].to_dict(), "epochs": 6}), e) for e in range(6)]


def test_svhn_search_then_train_picks_the_8_cell_recipe(tmp_path, capsys, monkeypatch):
    """S3 searched on SVHN (R-DARTS' setting); its run trains on SVHN with `rdarts`."""
    from test_data import make_fake_svhn

    make_fake_svhn(tmp_path / "svhn", monkeypatch, n=40, n_test=8)
    search = tmp_path / "search"
    small = ["--set", "C=4", "--set", "L=3", "--no-progress"]
    code, _, err = run(capsys, "search", SPACES / "s3.nas", "--method", "darts", "--epochs", "1",
                       "--dataset", "svhn", "--data", tmp_path / "svhn", "--batch-size", "8",
                       "--out", search, *small)
    assert code == 0, err
    out = tmp_path / "train"
    code, stdout, err = run(capsys, "train", search, "--epochs", "1", "--batch-size", "8",
                            "--out", out, *small)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["name"] == "rdarts" and config["recipe"]["auxiliary"] == 0.4
    assert config["dataset"]["name"] == "svhn" and config["dataset"]["train_images"] == 40
    assert config["dataset"]["root"] == str((tmp_path / "svhn").resolve())
    assert default_recipe("darts", "cifar100", "s1") == "rdarts"
    assert default_recipe("darts", "cifar10", "s3") == "darts"
    assert default_recipe("darts", "svhn", "darts") == "darts"      # DARTS' own space: 20 cells
    assert default_recipe("nb201", "svhn", "nb201") == "nb201"


def test_render_and_evaluate_read_a_training_runs_genotype(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", ARCH, "--space", NB201, "--dataset", "digits", "--set",
                       "C=4", "--set", "N=1", "--epochs", "1", "--subset", "64", "--out", out,
                       "--no-progress")
    assert code == 0 and "recipe nb201 (1 epoch, batch 256; network C=4, N=1)" in err
    code, _, err = run(capsys, "render", out, "-o", tmp_path / "cell.dot")
    assert code == 0, err
    assert "nor_conv_3x3" in (tmp_path / "cell.dot").read_text()
    table = tmp_path / "t.csv"
    table.write_text(f"arch,cifar10\n{ARCH},93.5\n")
    code, stdout, err = run(capsys, "evaluate", out, "--benchmark", table)
    assert code == 0 and "93.5" in stdout, err


def test_a_search_run_directory_trains_its_genotype_in_its_space(tmp_path, capsys):
    search = tmp_path / "search"
    code, searched, err = run(capsys, "search", NB201, "--method", "darts", "--epochs", "1",
                              "--dataset", "digits", "--set", "C=4", "--set", "N=1", "--subset",
                              "64", "--batch-size", "16", "--out", search, "--no-progress")
    assert code == 0, err
    assert f"train it:  dslnas train {search}" in searched
    out = tmp_path / "train"
    code, stdout, err = run(capsys, "train", search, "--set", "C=4", "--set", "N=1",
                            "--epochs", "1", "--subset", "64", "--out", out, "--no-progress")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    searched_data = json.loads((search / "config.json").read_text())["dataset"]
    assert config["dataset"]["name"] == "digits"              # the dataset it searched on
    assert config["dataset"]["root"] == searched_data["root"] and \
        Path(searched_data["root"]).is_absolute()
    searched = json.loads((search / "genotype.json").read_text())
    assert config["genotype"] == searched
    assert config["space_file"] == json.loads((search / "config.json").read_text())["space_file"]


def _train_args(out):
    return ["train", "DARTS_V2", "--space", DARTS, *SMALL_DARTS, "--epochs", "3",
            "--set", "drop_path=0.3", "--set", "cutout=6", "--deterministic", "--out", out]


def _final_state(out: Path):
    return ckpt.load(out / "model.pt")["model"], \
        [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path):
    (wa, ma), (wb, mb) = _final_state(a), _final_state(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "elapsed")}  # noqa: E731
                        for m in ms]
    assert strip(ma) == strip(mb)


def test_resume_after_an_epoch_is_bit_identical(tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run(capsys, *_train_args(whole))[0] == 0
    # epoch 2 draws drop-path masks from the global generator (epoch 1 has p = 0)
    code, _, err = run(capsys, *_train_args(parts), "--stop-after", "2")
    assert code == 0 and "continue with: dslnas train --resume" in err
    assert not (parts / "model.pt").exists()
    code, _, err = run(capsys, "train", "--resume", parts, "--no-progress")
    assert code == 0, err
    _assert_same_run(whole, parts)


def test_a_stop_inside_an_epoch_saves_there_and_resumes_exactly(tmp_path, capsys):
    """What Ctrl-C or SIGTERM does: a checkpoint after the current step; --resume goes on."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run(capsys, *_train_args(whole))[0] == 0
    from dslnas.train import commands
    steps = {"n": 0}

    def stop_at_step_5():
        steps["n"] += 1
        return "SIGTERM" if steps["n"] == 5 else None

    args = cli.build_parser().parse_args([str(a) for a in _train_args(parts)])
    job = commands._fresh(args, 0, {})
    with job.run:
        result = train(job.ir, job.genotype, job.recipe, job.train, job.test, job.run,
                       seed=job.seed, deterministic=True, progress=False,
                       should_stop=stop_at_step_5, log=lambda line: None)
    assert result.interrupted == "SIGTERM" and result.epochs == 1     # 3 steps per epoch
    assert ckpt.load(parts / "checkpoint.pt")["in_epoch"]["iterations"] == 2
    code, _, err = run(capsys, "train", "--resume", parts, "--no-progress")
    assert code == 0, err
    _assert_same_run(whole, parts)


def test_compiled_training_matches_eager(tmp_path):
    """torch.compile of the whole network (the CUDA default) computes the same training."""
    ir = compile_file(NB201, {"C": 4, "N": 1, "in_channels": 3, "classes": 10})
    ds = load_dataset("digits")
    recipe = RECIPES["nb201"].__class__(**{**RECIPES["nb201"].to_dict(), "epochs": 1,
                                           "batch_size": 32})
    torch.set_default_dtype(torch.float64)
    try:
        results = []
        for compiled in (False, True):
            stream = DeviceBatches(ds.train_x[:96], ds.train_y[:96], 32, mean=ds.mean,
                                   std=ds.std, seed=0, dtype=torch.float64)
            t = Trainer(ir, known_genotype_nb201(), recipe, compile_model=compiled)
            t.begin_epoch()
            for x, y in stream:
                t.step(x, y)
            results.append([p.detach().clone() for p in t.params])
        assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(*results))
    finally:
        torch.set_default_dtype(torch.float32)


def known_genotype_nb201():
    from dslnas.genotype import from_nb201_string
    return from_nb201_string(ARCH)


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["DARTS_V2", "--space", DARTS, "--recipe", "dart"], "unknown recipe 'dart' (did you mean 'darts'?)"),
    (["DARTS_V2", "--space", DARTS, "--set", "lr=fast"], "--set lr: expected float"),
    (["DARTS_V2", "--space", DARTS, "--set", "drop_pth=0.3"], "did you mean 'drop_path'?"),
    (["DARTS_V2", "--space", DARTS, "--set", "drop_path=1"], "drop_path must be in [0, 1)"),
    (["DARTS_V2", "--space", DARTS, "--epochs", "0"], "epochs must be >= 1"),
    (["DARTS_V2", "--space", DARTS, "--stop-after", "0"], "--stop-after must be >= 1"),
    (["DARTS_V2", "--space", DARTS, "--seeds", "1", "-2"], "--seeds must be >= 0, got -2"),
    (["DARTS_V2", "--space", DARTS, "--batch-size", "1"], "needs batch_size >= 2"),
    (["DARTS_V2", "--space", NB201, "--dataset", "digits"], "is not a cell of space 'nb201'"),
    (["DARTS_V2"], "give --space SPACE.nas"),
    (["DARTS_V2", "--space", DARTS, "--set", "lr=inf"], "lr must be a finite number >= 0"),
    (["DARTS_V2", "--space", DARTS, "--set", "lr_min=0.5"], "lr_min (0.5) must not exceed lr"),
    ([ARCH, "--space", NB201, "--recipe", "darts"], "sizes its network by L"),
    ([ARCH, "--space", NB201, "--dataset", "digits", "--set", "C=4", "--set", "N=1", "--set",
      "auxiliary=0.4"], "needs a reduction cell to attach to"),
    ([], "give a GENOTYPE"),
    (["DARTS_V2", "--space", DARTS, "--dataset", "digits", "--set", "C=4", "--set", "L=3"],
     "try --set auxiliary=0"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "train", *argv, "--out", tmp_path / "run")
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_resume_refuses_other_options_and_search_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", ARCH, "--space", NB201, "--dataset", "digits", "--set", "C=4",
               "--set", "N=1", "--epochs", "1", "--subset", "64", "--out", out,
               "--no-progress")[0] == 0
    code, _, err = run(capsys, "train", "--resume", out, "--epochs", "5")
    assert code == 2 and "do not combine it with --epochs" in err
    code, _, err = run(capsys, "search", "--resume", out)
    assert code == 2 and "a training run; continue it with dslnas train --resume" in err
    code, _, err = run(capsys, "train", out, "--out", tmp_path / "again")
    assert code == 2 and "is a training run" in err
    search = tmp_path / "search"
    search.mkdir()
    RunDir(search).write_config({"space_file": str(NB201)})
    (search / "checkpoint.pt").write_bytes(b"")
    code, _, err = run(capsys, "train", "--resume", search)
    assert code == 2 and "not a training run" in err
    code, _, err = run(capsys, "train", search, "--dataset", "digits")
    assert code == 2 and "no genotype.json" in err


def test_benchmark_shows_the_tables_accuracy_beside_the_trained_one(tmp_path, capsys):
    table = tmp_path / "nb201.csv"
    table.write_text(f"arch,cifar10,cifar100\n{ARCH},93.5,70.25\n")
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", ARCH, "--space", NB201, "--dataset", "digits",
                            "--set", "C=4", "--set", "N=1", "--epochs", "1", "--subset", "64",
                            "--benchmark", table, "--out", out, "--no-progress")
    assert code == 0, err
    assert "NB201 table (its own 200-epoch training): cifar10 93.50, cifar100 70.25" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == {"cifar10": 93.5, "cifar100": 70.25}
    other = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    code, _, err = run(capsys, "train", other, "--space", NB201, "--dataset", "digits",
                       "--benchmark", table, "--out", tmp_path / "other")
    assert code == 2 and "--benchmark:" in err and not (tmp_path / "other").exists()


def test_bf16_autocast_trains_with_fp32_weights(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", ARCH, "--space", NB201, "--dataset", "digits",
                       "--set", "C=8", "--set", "N=1", "--epochs", "3", "--batch-size", "64",
                       "--precision", "bf16", "--out", out, "--no-progress")
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] and metrics[-1]["test_acc"] > 30
    weights = ckpt.load(out / "model.pt")["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"


def test_train_speed_benchmark_prints_a_row_per_config(tmp_path, capsys):
    """benchmarks/train_speed.py (run on the GPU through the device scripts) on a tiny network."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("train_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "rows.json"
    assert mod.main(["--recipe", "darts", "--set", "C=4", "--set", "L=3", "--set", "batch_size=8",
                     "--device", "cpu", "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| eager |" in printed and "batch 8" in printed
    row, = json.loads(out.read_text())["rows"]
    assert row["config"] == "eager" and row["ms_per_step"] > 0
    assert row["epoch_s"] == pytest.approx(math.ceil(50_000 / 8) * row["ms_per_step"] / 1000)


# ---- what one step and one epoch do (each of these fails if the recipe's part is dropped) ----

def _small_darts(recipe_changes: dict, C=4, L=5):
    ir = compile_file(DARTS, {"C": C, "L": L, "in_channels": 3, "classes": 10})
    recipe = RECIPES["darts"].__class__(**{**RECIPES["darts"].to_dict(), **recipe_changes})
    return ir, recipe


def test_begin_epoch_sets_lr_and_drop_path_on_every_non_identity_op():
    ir, recipe = _small_darts({})
    t = Trainer(ir, known_genotype("DARTS_V2"), recipe)
    t.epoch = 300
    lr, drop = t.begin_epoch()
    assert drop == pytest.approx(0.1) and lr == cosine_lr(recipe, 300)
    drops = [m for m in t.model.modules() if isinstance(m, DropPath)]
    assert drops and all(m.p.item() == pytest.approx(0.1) and m.active for m in drops)
    assert all(g["lr"] == lr for g in t.optimizer.param_groups)
    assert t.model.training
    opt = t.optimizer.param_groups[0]
    assert (opt["momentum"], opt["weight_decay"], opt["nesterov"]) == (0.9, 3e-4, False)
    nb = Trainer(compile_file(NB201, {"C": 4, "N": 1}), known_genotype_nb201(), RECIPES["nb201"])
    opt = nb.optimizer.param_groups[0]
    assert (opt["momentum"], opt["weight_decay"], opt["nesterov"]) == (0.9, 5e-4, True)


def test_the_rate_is_constant_within_an_epoch_as_in_darts_and_autodl(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", ARCH, "--space", NB201, "--dataset", "digits", "--set", "C=4",
               "--set", "N=1", "--epochs", "4", "--subset", "100", "--batch-size", "25",
               "--stop-after", "2", "--out", out, "--no-progress")[0] == 0
    state = ckpt.load(out / "checkpoint.pt")
    recipe = RECIPES["nb201"].__class__(**{**RECIPES["nb201"].to_dict(), "epochs": 4})
    # 4 steps in epoch 1 (0-based), all at that epoch's rate
    assert state["optimizer"]["param_groups"][0]["lr"] == cosine_lr(recipe, 1)


def test_the_training_stream_cuts_out_as_the_recipe_says_and_drops_a_batch_of_one():
    from dslnas.train.commands import _batches
    ds = load_dataset("digits")
    recipe = RECIPES["darts"]
    train_b, test_b = _batches(ds, recipe, "cpu", 0, 100, False)
    assert train_b.cutout == 16 and train_b.crop and train_b.flip and not train_b.drop_last
    assert len(train_b) == 2 and test_b.num_samples == len(ds.test_x)
    for n, batches in ((97, 1), (193, 2)):                         # one image left over
        train_b, _ = _batches(ds, recipe, "cpu", 0, n, False)
        assert train_b.drop_last and len(train_b) == batches


def test_a_step_descends_main_plus_weighted_auxiliary_loss_with_clipped_gradients():
    import torch.nn.functional as F
    ir, recipe = _small_darts({"lr": 0.0, "drop_path": 0.0, "grad_clip": 0.0}, C=4, L=6)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    t = Trainer(ir, known_genotype("DARTS_V2"), recipe)
    t.begin_epoch()
    t.step(x, y)
    got = [p.grad.clone() for p in t.params]
    t.model.zero_grad()
    logits, aux = t.model(x)
    (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()
    want = [p.grad for p in t.params]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))
    assert any(p.grad.abs().sum() > 0 for p in t.model.aux_head.parameters())
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in got]))
    assert norm > 0.5
    ir, clipped = _small_darts({"lr": 0.0, "drop_path": 0.0, "grad_clip": 0.5}, C=4, L=6)
    t = Trainer(ir, known_genotype("DARTS_V2"), clipped)
    t.begin_epoch()
    t.step(x, y)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad)
                                                 for p in t.params]))
    assert norm == pytest.approx(0.5, rel=1e-4)


def test_the_auxiliary_head_leaves_the_main_output_alone():
    """The head taps the last reduction cell; at L=3 that output feeds the classifier directly."""
    from dslnas.supernet.network import build_child
    ir = compile_file(DARTS, {"C": 4, "L": 3})
    torch.manual_seed(0)
    net = build_child(ir, known_genotype("DARTS_V2"), auxiliary=True).train()
    x = torch.randn(4, 3, 32, 32)
    logits, _ = net(x)
    head, net.aux_head = net.aux_head, None
    assert torch.equal(net(x), logits)


def test_evaluate_tests_in_eval_mode():
    ir, recipe = _small_darts({"drop_path": 0.8})
    t = Trainer(ir, known_genotype("DARTS_V2"), recipe)
    t.epoch = recipe.epochs - 1
    t.begin_epoch()                                            # drop-path 0.8, training mode
    ds = load_dataset("digits")
    images = torch.nn.functional.interpolate(ds.test_x[:64].float(), size=32).to(torch.uint8)
    test_b = eval_batches(attrs_evolve_test(ds, images, ds.test_y[:64]), batch_size=32)
    first, second = t.evaluate(test_b), t.evaluate(test_b)
    assert first == second
    t.model.eval()
    with torch.no_grad():
        logits = torch.cat([t.model(x) for x, _ in test_b])
    assert first["test_acc"] == pytest.approx(100 * (logits.argmax(1) == ds.test_y[:64])
                                              .float().mean().item())


def attrs_evolve_test(ds, images, labels):
    import attrs
    return attrs.evolve(ds, test_x=images, test_y=labels)


def test_evaluate_points_a_non_nb201_genotype_to_train(tmp_path, capsys):
    table = tmp_path / "nb201.csv"
    table.write_text(f"arch,cifar10\n{ARCH},93.5\n")
    code, _, err = run(capsys, "evaluate", "DARTS_V2", "--benchmark", table)
    assert code == 2 and "not an NB201 architecture" in err and "dslnas train" in err


def test_several_seeds_train_in_lockstep_exactly_as_alone_and_report_mean_and_std(tmp_path,
                                                                                    capsys):
    # drop-path draws from the global generator in epoch 2, which lockstep swaps per run
    common = ["train", "DARTS_V2", "--space", DARTS, *SMALL_DARTS, "--epochs", "2",
              "--set", "drop_path=0.5", "--set", "cutout=4"]
    code, stdout, err = run(capsys, *common, "--seeds", "3", "5", "--out", tmp_path / "s{seed}")
    assert code == 0, err
    assert "[s3] epoch 2/2" in err and "[s5] epoch 2/2" in err
    for seed in (3, 5):
        assert run(capsys, *common, "--seed", seed, "--out", tmp_path / f"alone{seed}")[0] == 0
        _assert_same_run(tmp_path / f"s{seed}", tmp_path / f"alone{seed}")
    accs = [json.loads((tmp_path / f"s{seed}" / "summary.json").read_text())["test_acc"]
            for seed in (3, 5)]
    import statistics
    assert (f"test accuracy over 2 seeds: {statistics.mean(accs):.2f} ± "
            f"{statistics.stdev(accs):.2f} %") in stdout
    code, _, err = run(capsys, *common, "--seeds", "1", "2", "--out", tmp_path / "same")
    assert code == 2 and "needs {seed}" in err


def test_resuming_several_runs_checks_them_all_before_changing_any(tmp_path, capsys):
    common = ["train", ARCH, "--space", NB201, "--dataset", "digits", "--set", "C=4", "--set",
              "N=1", "--epochs", "2", "--subset", "64", "--stop-after", "1", "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(capsys, *common, "--out", a)[0] == 0
    assert run(capsys, *common, "--out", b, "--deterministic")[0] == 0
    before = (a / "config.json").read_text()
    code, _, err = run(capsys, "train", "--resume", a, tmp_path / "nothere", "--precision", "bf16")
    assert code == 2 and "no such run directory" in err
    code, _, err = run(capsys, "train", "--resume", a, b)
    assert code == 2 and "the runs differ in deterministic" in err
    assert (a / "config.json").read_text() == before          # untouched by the failed resumes
    code, stdout, err = run(capsys, "train", "--resume", a, a / ".." / "a")
    assert code == 2 and "named twice" in err


def test_resume_refuses_a_changed_space(tmp_path, capsys):
    space = tmp_path / "nb201.nas"
    space.write_text(NB201.read_text())
    out = tmp_path / "run"
    assert run(capsys, "train", ARCH, "--space", space, "--dataset", "digits", "--set", "C=4",
               "--set", "N=1", "--epochs", "2", "--subset", "64", "--stop-after", "1",
               "--out", out, "--no-progress")[0] == 0
    space.write_text(NB201.read_text().replace("avg_pool_3x3", "max_pool_3x3"))
    code, _, err = run(capsys, "train", "--resume", out)
    assert code == 2 and "has changed since the run started" in err
