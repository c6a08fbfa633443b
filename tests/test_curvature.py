"""RobustDARTS' curvature diagnostic (the dominant eigenvalue of ∇²_α L_val) and DARTS-ES."""
from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dslnas.ir.lower import compile_file
from dslnas.methods.hypergrad import hessian
from dslnas.methods.spec import get_method
from dslnas.search import checkpoint as ckpt
from dslnas.search.curvature import (arch_eigenvalue, arch_hessian, darts_es,
                                     dominant_eigenvalue, es_ratio, first_decision,
                                     lanczos_max, measured_at)
from dslnas.search.loop import Searcher
from dslnas.supernet.network import masked_softmax

from test_search import TINY, run

SPACES = Path(__file__).resolve().parents[1] / "spaces"
NB201, S1 = SPACES / "nb201.nas", SPACES / "s1.nas"


# ---- the Hessian ---------------------------------------------------------------------------

def test_hessian_of_selected_entries_equals_autograds_dense_one():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)   # held constant
    mask = torch.tensor([[True, False, True], [True, True, False]])

    def loss_of(a_, b_):
        return (torch.sin(a_ @ w).sum() * b_.pow(2).sum() + (a_.exp() * a_).sum()
                + torch.tanh(b_).prod())

    h = hessian(lambda: loss_of(a, b), [a, b], [mask, None], hold=[w])
    flat = torch.cat([a.detach()[mask], b.detach()])

    def of_flat(v):
        full = a.detach().clone()
        full[mask] = v[:4]
        return loss_of(full, v[4:])

    want = torch.autograd.functional.hessian(of_flat, flat)
    assert h.shape == (8, 8)
    torch.testing.assert_close(h, want, rtol=1e-10, atol=1e-12)
    assert w.requires_grad and w.grad is None           # held, then given back as it was


@pytest.mark.parametrize("method", ["darts", "pc-darts"])
def test_arch_hessian_is_the_validation_losss_and_changes_nothing(method):
    """H over α (and PC-DARTS' β) equals autograd's dense Hessian of the val loss as a function
    of the live entries, plus the α weight decay on the diagonal; the supernet's weights,
    α, BN statistics and the random stream are as before."""
    torch.manual_seed(0)
    ir = compile_file(S1, {"C": 4, "L": 3}) if method == "pc-darts" else \
        compile_file(NB201, {"C": 4, "N": 1})
    spec = get_method(method).for_family("darts" if method == "pc-darts" else "nb201")
    if method == "pc-darts":
        spec = attrs.evolve(spec, transforms=(attrs.evolve(spec.transforms[0], options={"K": 2}),))
    s = Searcher(ir, spec)
    s.supernet.double()
    for p in s.extra.values():                          # PC-DARTS' β lives beside the supernet
        p.data = p.data.double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    state = {k: v.clone() for k, v in s.supernet.state_dict().items()}
    extra = [p.detach().clone() for p in s.arch]
    rng = torch.get_rng_state()
    s.supernet.eval()
    flags = [p.requires_grad for p in s.supernet.parameters()]

    h = arch_hessian(s, (x, y))
    assert not s.supernet.training                      # its mode, flags and .grad as they were
    assert [p.requires_grad for p in s.supernet.parameters()] == flags
    assert all(p.grad is None for p in [*s.supernet.parameters(), *s.arch])
    s.supernet.train()                                  # the reference: batch statistics too

    masks = [s.supernet.mask(grp) for grp in s.supernet.alphas] + \
        [torch.ones_like(p, dtype=torch.bool) for p in s.arch[len(s.supernet.alphas):]]
    live = torch.cat([p.detach()[m] for p, m in zip(s.arch, masks)])

    def val_loss(v):        # an independent reference: the relaxation written out, then autograd
        parts, offset = [], 0
        for p in s.arch:
            parts.append(v[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        groups = list(s.supernet.alphas)
        probs = {grp: masked_softmax(a, s.supernet.mask(grp)) for grp, a in zip(groups, parts)}
        if method == "pc-darts":
            beta = s.relaxation.edge_weights(s.supernet, dict(zip(s.extra, parts[len(groups):])))
            probs = {grp: p * beta[grp].unsqueeze(-1) for grp, p in probs.items()}
        return F.cross_entropy(s.supernet(x, probs), y)

    assert all(bool(m.all()) for m in masks)            # these spaces pad no row
    want = torch.autograd.functional.hessian(val_loss, live)
    want = want + s.schedule.a_weight_decay * torch.eye(len(live), dtype=want.dtype)
    assert h.shape == (len(live), len(live)) and len(live) == (56 + 28 if method == "pc-darts" else 30)
    torch.testing.assert_close(h, want, rtol=1e-9, atol=1e-12)
    assert (h - h.diag().diag()).abs().max() > 10 * s.schedule.a_weight_decay   # real curvature
    torch.testing.assert_close(h, h.T)
    assert dominant_eigenvalue(h) == pytest.approx(float(np.linalg.eigvalsh(want.numpy()).max()))

    s.supernet.load_state_dict(state)       # the reference pass moved BN statistics; ours not
    h2 = arch_hessian(s, (x, y))
    assert torch.equal(h, h2)
    for k, v in s.supernet.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(torch.equal(p, e) for p, e in zip(s.arch, extra))
    assert torch.equal(torch.get_rng_state(), rng)


def test_lanczos_finds_the_largest_eigenvalue_from_below():
    """Ritz values lie inside the spectrum and grow with the steps; n steps are exact, and a
    spectrum with a gap at the top converges long before."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(60, 60, dtype=torch.float64, generator=g))
    spectrum = torch.cat([torch.tensor([3.0, 2.0]), torch.rand(58, dtype=torch.float64,
                                                               generator=g) * 1.5 - 0.5])
    h = q @ torch.diag(spectrum) @ q.T
    calls = []

    def matvec(v):
        calls.append(1)
        return h @ v

    top = [lanczos_max(matvec, 60, k) for k in (1, 2, 5, 10, 20, 60)]
    assert all(a <= b + 1e-12 for a, b in zip(top, top[1:])) and top[-1] <= 3.0 + 1e-12
    assert top[-1] == pytest.approx(3.0, abs=1e-12) and top[3] == pytest.approx(3.0, rel=1e-6)
    assert len(calls) == 1 + 2 + 5 + 10 + 20 + 60                   # one product per step
    assert lanczos_max(lambda v: 2.5 * v, 7, 20) == pytest.approx(2.5)   # stops at once


def test_the_lanczos_eigenvalue_is_the_dense_one():
    torch.manual_seed(0)
    s = Searcher(compile_file(NB201, {"C": 4, "N": 1}), get_method("darts").for_family("nb201"))
    s.supernet.double()
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64),
             torch.randint(0, 10, (8,), generator=g))
    dense = dominant_eigenvalue(arch_hessian(s, batch))
    assert arch_eigenvalue(s, batch) == dense
    assert arch_eigenvalue(s, batch, lanczos_steps=30) == pytest.approx(dense, rel=1e-10)
    assert arch_eigenvalue(s, batch, lanczos_steps=12) == pytest.approx(dense, rel=1e-3)


def test_the_hessian_stays_on_the_searchers_device(monkeypatch):
    """The weight-decay diagonal is made where the products are (on a GPU: CUDA; here the
    shape-only "meta" device stands in for it)."""
    from types import SimpleNamespace
    import dslnas.search.curvature as curvature
    monkeypatch.setattr(curvature, "_arch_operator", lambda s, batch, use: use(
        3, lambda v: torch.zeros(3, device="meta")))
    s = SimpleNamespace(schedule=SimpleNamespace(a_weight_decay=1e-3),
                        relaxation=SimpleNamespace(arch_weight_decay=lambda wd: wd))
    assert arch_hessian(s, None).device.type == "meta"


def test_a_sampling_relaxation_has_no_curvature_to_track(capsys, tmp_path):
    code, _, err = run(capsys, "search", NB201, "--method", "drnas", "--epochs", "1",
                       "--early-stop", *TINY, "--out", tmp_path / "r")
    assert code == 2 and "samples the edge weights" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# ---- DARTS-ES ------------------------------------------------------------------------------

class Tracker:
    """R-DARTS' stateful local-average tracker, as its code behaves (utils.EVLocalAvg):
    eigenvalues arrive every ``freq`` (0-based) epochs; from the ceil(window/2)-th on, each
    arrival appends one local average (the mean of all so far until the window is full, then
    of the sliding window) centred ``freq * floor(window/2)`` epochs back."""

    def __init__(self, window, freq, epochs):
        self.window, self.freq, self.epochs = window, freq, epochs
        self.ev, self.la, self.la_epoch, self.start = [], [], {}, 0
        self.stop = None

    def update(self, epoch, ev):
        self.ev.append(ev)
        if len(self.ev) >= math.ceil(self.window / 2) and epoch < self.epochs - 1:
            if len(self.ev) < self.window:
                self.la.append(float(np.mean(self.ev)))
            else:
                self.la.append(float(np.mean(self.ev[self.start:self.start + self.window])))
                self.start += 1
            self.la_epoch[epoch] = epoch - self.freq * (self.window // 2)
        else:
            self.la_epoch[epoch] = -1

    def early_stop(self, epoch, factor, start_epoch, delta):
        if self.la_epoch[epoch] - self.freq * delta >= start_epoch:
            if self.la[-1] / self.la[-1 - delta] > factor:
                self.stop = (self.la_epoch[epoch] - self.freq * delta, self.la[-1] / self.la[-1 - delta])


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(0.05, 5.0), min_size=1, max_size=26),
       freq=st.sampled_from([1, 2, 3]), window=st.sampled_from([1, 3, 5, 7]),
       delta=st.integers(1, 5), factor=st.sampled_from([1.05, 1.3, 2.0]),
       start=st.integers(0, 12))
def test_darts_es_decides_as_r_darts_tracker_does(values, freq, window, delta, factor, start):
    epochs = freq * len(values) + 2         # the tracker stops averaging at the last epoch
    tracker = Tracker(window, freq, epochs)
    ours = []
    for k, ev in enumerate(values):
        epoch = k * freq                        # R-DARTS' 0-based epochs
        assert measured_at(epoch + 1, freq, epochs)
        tracker.update(epoch, ev)
        ours.append((epoch + 1, ev))            # ours count from 1
        tracker.early_stop(epoch, factor, start, delta)
        got = darts_es(ours, window=window, delta=delta, factor=factor, start=start + 1)
        if tracker.stop is None:
            assert got is None
        else:
            assert got is not None and got[0] == tracker.stop[0] + 1
            assert got[1] == pytest.approx(tracker.stop[1])
            break


def test_darts_es_on_a_growing_curvature_returns_the_epoch_before_the_growth():
    # measured after epochs 1, 3, 5, ... (R-DARTS' scripts: every 2); flat, then rising
    evs = [(e, 0.1 if e <= 21 else 0.1 * 1.25 ** ((e - 21) / 2)) for e in range(1, 50, 2)]
    decisions = [darts_es(evs[:n]) for n in range(1, len(evs) + 1)]
    first = next(i for i, d in enumerate(decisions) if d is not None)
    epoch, ratio = decisions[first]
    # the newest local average is centred 2 values back, compared with 4 values before that
    assert evs[first][0] == epoch + 2 * (2 + 4) and ratio > 1.3
    assert decisions[first - 1] is None
    assert all(d is None for d in (darts_es(evs[:n], factor=100.0) for n in range(1, 26)))
    assert measured_at(1, 2, 50) and measured_at(49, 2, 50) and measured_at(50, 2, 50)
    # R-DARTS' settings on 50 epochs: averages centred 2 values back, compared 4 values before
    # that, from epoch 11 on: value 5 (epoch 11) is first compared after value 11 (epoch 23)
    assert first_decision(50, 2, window=5, delta=4, start=11) == 23
    assert first_decision(22, 2, window=5, delta=4, start=11) is None
    assert first_decision(4, 1, window=1, delta=1, start=1) == 2
    # epoch 23 (0.125) enters the newest window of five 0.1s: 0.105 / 0.1
    assert es_ratio(evs[:12]) == (11, pytest.approx(1.05)) and es_ratio(evs[:11]) is None
    assert not measured_at(2, 2, 50) and not measured_at(5, 0, 50)


# ---- the search ----------------------------------------------------------------------------

def test_measuring_the_curvature_leaves_the_search_bit_identical(tmp_path, capsys):
    args = ["--method", "darts", "--epochs", 3, "--deterministic", *TINY]
    assert run(capsys, "search", NB201, *args, "--out", tmp_path / "a")[0] == 0
    code, out, err = run(capsys, "search", NB201, *args, "--hessian-every", 2,
                         "--out", tmp_path / "b")
    assert code == 0, err
    a, b = ([json.loads(l) for l in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("a", "b"))
    for ra, rb in zip(a, b):
        assert ra["alphas"] == rb["alphas"] and ra["train_loss"] == rb["train_loss"]
    assert ["hessian_eig" in r for r in b] == [True, False, True]   # epochs 1, 3 (the last)
    assert all(r["hessian_eig"] > 0 and "hessian_eig" not in ra for r, ra in zip(b[::2], a))
    assert "λmax" in err
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["method"]["schedule"]["hessian_every"] == 2
    assert not config["method"]["schedule"]["early_stop"]
    # Lanczos: the same eigenvalues (30 steps span NB201's 30 entries), the same search
    assert run(capsys, "search", NB201, *args, "--hessian-every", 2, "--set",
               "lanczos_steps=30", "--out", tmp_path / "c")[0] == 0
    c = [json.loads(l) for l in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [r["alphas"] for r in c] == [r["alphas"] for r in a]
    eigs = [[r["hessian_eig"] for r in run_ if "hessian_eig" in r] for run_ in (b, c)]
    assert len(eigs[1]) == 2 and eigs[1] == pytest.approx(eigs[0], rel=1e-5)


def test_early_stop_returns_the_earlier_genotype_and_a_resume_keeps_it(tmp_path, capsys):
    # thresholds that stop as soon as the compared epoch may be returned, whatever the
    # curvature does; α frozen for 2 epochs, so epoch 3's genotype is the first it may return
    out_dir = tmp_path / "r"
    code, out, err = run(capsys, "search", NB201, "--method", "darts", "--epochs", 8,
                         "--early-stop", "--hessian-every", 1, "--set", "es_window=1",
                         "--set", "es_delta=2", "--set", "es_factor=1e-9", "--set", "es_start=1",
                         "--set", "warmup_epochs=2", "--set", "a_lr=0.05", *TINY,
                         "--out", out_dir)
    assert code == 0, err
    metrics = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2, 3, 4, 5]
    decision = metrics[-1]["early_stop"]
    assert decision["epoch"] == 5 and decision["genotype_epoch"] == 3
    assert decision["ratio"] == pytest.approx(metrics[4]["hessian_eig"] / metrics[2]["hessian_eig"])
    assert metrics[2]["genotype"] != metrics[4]["genotype"]     # so the test tells them apart
    genotype = json.loads((out_dir / "genotype.json").read_text())
    assert genotype == metrics[2]["genotype"]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["finished"] and summary["epochs"] == 5
    assert decision.pop("action") == "stop" and summary["early_stop"] == decision
    assert "DARTS-ES stopped it after epoch 5" in out and metrics[2]["nb201"] in out
    assert ckpt.load(out_dir / "checkpoint.pt")["early_stopped"]["genotype_epoch"] == 3

    assert [r.get("es_ratio") is not None for r in metrics] == [False] * 4 + [True]
    assert summary["darts_es"] and "the first possible stop is after epoch 5" in err

    code, out, err = run(capsys, "search", "--resume", out_dir, "--no-progress")
    assert code == 0, err
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == 5
    assert json.loads((out_dir / "genotype.json").read_text()) == genotype
    assert "DARTS-ES stopped it after epoch 5" in out


def test_the_decision_after_a_resume_needs_no_metrics_file(tmp_path, capsys):
    """The measurements live in the checkpoint: a resume decides as the uninterrupted search,
    even when metrics.jsonl was lost."""
    args = ["--method", "darts", "--epochs", 6, "--early-stop", "--hessian-every", 1,
            "--set", "es_window=1", "--set", "es_delta=2", "--set", "es_factor=1e-9",
            "--set", "es_start=1", "--deterministic", *TINY]
    assert run(capsys, "search", NB201, *args, "--out", tmp_path / "a")[0] == 0
    assert run(capsys, "search", NB201, *args, "--out", tmp_path / "b", "--stop-after", 2)[0] == 0
    (tmp_path / "b" / "metrics.jsonl").unlink()
    code, out, err = run(capsys, "search", "--resume", tmp_path / "b", "--no-progress")
    assert code == 0, err
    a, b = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("a", "b"))
    assert a["early_stop"] == b["early_stop"] and a["early_stop"]["genotype_epoch"] == 1
    assert (tmp_path / "a" / "genotype.json").read_text() == \
        (tmp_path / "b" / "genotype.json").read_text()


def test_a_search_too_short_for_darts_es_says_so(tmp_path, capsys):
    code, _, err = run(capsys, "search", NB201, "--method", "darts", "--epochs", 2,
                       "--early-stop", *TINY, "--out", tmp_path / "r")
    assert code == 0 and "DARTS-ES cannot stop this 2-epoch search" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["early_stop"] is None


def test_a_malformed_early_stop_entry_in_a_checkpoint_exits_2(tmp_path, capsys):
    out_dir = tmp_path / "r"
    assert run(capsys, "search", NB201, "--method", "darts", "--epochs", 2, "--stop-after", 1,
               *TINY, "--out", out_dir)[0] == 0
    state = ckpt.load(out_dir / "checkpoint.pt")
    state["early_stopped"] = {"epoch": 1}
    ckpt.save(state, out_dir / "checkpoint.pt")
    code, _, err = run(capsys, "search", "--resume", out_dir, "--no-progress")
    assert code == 2 and "early_stopped entry is malformed" in err and "Traceback" not in err


@pytest.mark.parametrize("sets, message", [
    (["--set", "es_window=4"], "es_window must be an odd number"),
    (["--early-stop", "--set", "hessian_every=0"], "needs hessian_every >= 1"),
    (["--set", "es_factor=nan"], "es_factor must be a finite number"),
    (["--hessian-every", "-1"], "hessian_every must be >= 0"),
    (["--set", "lanczos_steps=-2"], "lanczos_steps must be >= 0"),
])
def test_bad_curvature_settings_exit_2(tmp_path, capsys, sets, message):
    code, _, err = run(capsys, "search", NB201, "--method", "darts", *sets, *TINY,
                       "--out", tmp_path / "r")
    assert code == 2 and message in err and "Traceback" not in err
