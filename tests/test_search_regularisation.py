"""RobustDARTS' search-time regularisation: drop-path on every edge and cutout, both ramped."""
from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch

from dslnas.ir.lower import compile_file
from dslnas.methods.spec import get_method
from dslnas.search.curvature import arch_hessian
from dslnas.search.datasets import load_dataset
from dslnas.search.loader import DeviceBatches, SearchData
from dslnas.search.loop import Searcher
from dslnas.supernet.cells import EdgeDropPath
from dslnas.supernet.partial import partial_edge

from test_fused import pair
from test_search import TINY, run

SPACES = Path(__file__).resolve().parents[1] / "spaces"
NB201 = SPACES / "nb201.nas"


def test_edge_masks_drop_at_rate_p_and_rescale_the_rest():
    d = EdgeDropPath(edges=14)
    x = torch.zeros(4000, 1, 1, 1)
    assert d.masks(x) is None                       # inactive: no draw, nothing changes
    d.set(0.3, active=True)
    m = d.masks(x)
    assert m.shape == (14, 4000, 1, 1, 1)
    assert torch.unique(m).tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert (m == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    d.eval()
    assert d.masks(x) is None                       # training only
    d.train()
    d.set(0.0, active=True)                         # the first epoch of a ramp: keeps all
    assert bool((d.masks(x) == 1).all())
    with pytest.raises(ValueError):
        d.set(1.0, active=True)


@pytest.mark.parametrize("name, edge_cls, overrides", [
    ("nb201", None, {"C": 4, "N": 2}),
    ("darts", None, {"C": 4, "L": 3}),
    ("darts", partial_edge(2), {"C": 4, "L": 3}),
])
def test_fused_cells_drop_the_same_paths_as_plain_cells(name, edge_cls, overrides):
    """Drawn as (edges, batch) masks in α-row order, the plain and the fused cell drop the same
    edges of the same samples: the same outputs and edge-weight gradients (float64), which
    differ from those without drop-path; eval mode drops nothing."""
    plain, fused = pair(name, edge_cls, **overrides)
    plain.double(), fused.double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    weights = {k: torch.rand(a.shape, generator=g, dtype=torch.float64)
               for k, a in plain.alphas.items()}

    def forward(net, p):
        net.set_drop_path(p, active=True)
        torch.manual_seed(7)
        w = {k: t.clone().requires_grad_() for k, t in weights.items()}
        y = net(x, w)
        y.square().sum().backward()
        return y.detach(), [w[k].grad for k in sorted(w)]

    (yp, gp), (yf, gf) = forward(plain, 0.4), forward(fused, 0.4)
    torch.testing.assert_close(yp, yf, atol=1e-10, rtol=1e-8)
    for a, b in zip(gp, gf):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    y0, _ = forward(fused, 0.0)
    assert not torch.allclose(y0, yf)
    fused.eval()
    with torch.no_grad():
        fused.set_drop_path(0.4, active=True)
        dropping = fused(x, weights)
        fused.set_drop_path(0.0, active=False)
        torch.testing.assert_close(fused(x, weights), dropping, atol=0, rtol=0)


def test_cutout_probability_cuts_that_share_of_images_and_one_keeps_the_stream():
    imgs = torch.full((400, 3, 16, 16), 200, dtype=torch.uint8)
    labels = torch.zeros(400, dtype=torch.long)

    def batch(prob):
        b = DeviceBatches(imgs, labels, 400, mean=(0.0,) * 3, std=(1.0,) * 3, crop=False,
                          flip=False, shuffle=False, cutout=8, seed=3)
        b.cutout_prob = prob
        return b.next()[0]

    cut = lambda x: (x == 0).flatten(1).any(1)     # noqa: E731  images with a zeroed pixel
    assert not cut(batch(0.0)).any()
    assert cut(batch(1.0)).all()
    assert cut(batch(0.5)).float().mean().item() == pytest.approx(0.5, abs=0.08)
    always = DeviceBatches(imgs, labels, 400, mean=(0.0,) * 3, std=(1.0,) * 3, crop=False,
                           flip=False, shuffle=False, cutout=8, seed=3)
    assert torch.equal(always.next()[0], batch(1.0))    # DARTS' always-on cutout as before
    ds = load_dataset("digits")
    data = SearchData.from_dataset(ds, batch_size=32, cutout=4)
    assert data.train.cutout == data.val.cutout == 4     # R-DARTS cuts the val batches too


def test_regularised_search_ramps_records_and_resumes_exactly(tmp_path, capsys):
    args = ["--method", "darts", "--epochs", 3, "--deterministic", "--set", "drop_path=0.3",
            "--set", "cutout=4", *TINY]
    assert run(capsys, "search", NB201, *args, "--out", tmp_path / "a")[0] == 0
    code, out, _ = run(capsys, "search", NB201, *args, "--out", tmp_path / "b",
                       "--stop-after", 1)
    assert code == 0 and "--resume" in out
    assert run(capsys, "search", "--resume", tmp_path / "b", "--no-progress")[0] == 0
    a, b = ([json.loads(l) for l in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("a", "b"))
    assert [r["drop_path"] for r in a] == pytest.approx([0.0, 0.15, 0.3])  # R-DARTS' ramp
    assert [r["cutout_prob"] for r in a] == pytest.approx([0.0, 0.5, 1.0])
    for ra, rb in zip(a, b):
        assert ra["alphas"] == rb["alphas"] and ra["train_loss"] == rb["train_loss"]
    # drop-path alone changes the search (the loop really sets it on the supernet)
    dp, plain = tmp_path / "dp", tmp_path / "plain"
    assert run(capsys, "search", NB201, *args[:5], "--set", "drop_path=0.3", *TINY,
               "--out", dp)[0] == 0
    assert run(capsys, "search", NB201, *args[:5], *TINY, "--out", plain)[0] == 0
    d, p = ([json.loads(l) for l in (r / "metrics.jsonl").read_text().splitlines()]
            for r in (dp, plain))
    assert [r["drop_path"] for r in d] == pytest.approx([0.0, 0.15, 0.3])
    assert d[2]["train_loss"] != p[2]["train_loss"] and "drop_path" not in p[0]


def test_the_ramp_stops_at_its_final_value():
    ir = compile_file(NB201, {"C": 4, "N": 1})
    spec = get_method("darts").for_family("nb201")
    s = Searcher(ir, attrs.evolve(spec, schedule=attrs.evolve(spec.schedule, epochs=3)))
    ramp = []
    for s.epoch in range(6):                        # bench --epoch may ask past the last
        ramp.append(s.ramp(0.4))
    assert ramp == pytest.approx([0.0, 0.2, 0.4, 0.4, 0.4, 0.4])


def test_measuring_the_curvature_drops_no_path():
    ir = compile_file(NB201, {"C": 4, "N": 1})
    s = Searcher(ir, get_method("darts").for_family("nb201"))
    s.supernet.set_drop_path(0.5, active=True)
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    rng = torch.get_rng_state()
    h = arch_hessian(s, batch)
    assert torch.equal(h, arch_hessian(s, batch)) and torch.equal(torch.get_rng_state(), rng)
    assert all(d.active for d in s.supernet._edge_drops())


@pytest.mark.parametrize("sets, message", [
    (["--set", "drop_path=1"], "drop_path must be in [0, 1)"),
    (["--set", "cutout=-2"], "cutout must be >= 0"),
    (["--set", "cutout_prob=1.5"], "cutout_prob must be in [0, 1]"),
])
def test_bad_regularisation_settings_exit_2(tmp_path, capsys, sets, message):
    code, _, err = run(capsys, "search", NB201, "--method", "darts", *sets, *TINY,
                       "--out", tmp_path / "r")
    assert code == 2 and message in err and "Traceback" not in err
