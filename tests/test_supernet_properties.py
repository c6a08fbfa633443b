"""Property tests: every generated space builds a supernet that runs, and every random alpha
derives a genotype whose child network builds and runs."""
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dslnas.dsl.printer import pretty
from dslnas.genotype import derive, validate
from dslnas.ir.lower import compile_file
from dslnas.supernet.network import build, build_child

from strategies import spaces

SPACES = Path(__file__).resolve().parents[1] / "spaces"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("nas")
    for p in SPACES.glob("*.nas"):
        shutil.copy(p, d / p.name)
    return d


def compile_text(workdir: Path, text: str):
    path = workdir / "gen.nas"
    path.write_text(text)
    return compile_file(path)


def input_for(ir, batch=2):
    # Every reduction halves the resolution and factorized reduces need even sizes: 4x the
    # total downsampling keeps every intermediate size even.
    scale = max(b.scale for b in ir.blocks)
    params = dict(ir.params)
    return torch.randn(batch, params["in_channels"], 4 * scale, 4 * scale), params["classes"]


def _blocked_after(ir, group: str) -> bool:
    """Whether a cell after the group's last cell ignores its inputs (only noise / none)."""
    cells = [i for i, b in enumerate(ir.blocks) if getattr(b, "cell", None)]
    last = max(i for i in cells if ir.cell(ir.blocks[i].cell).group == group)
    return any(all(set(e.candidates) <= {"noise", "none"} for e in ir.cell(ir.blocks[i].cell).edges)
               for i in cells if i > last)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(gen=spaces(), seed=st.integers(0, 2**16))
def test_generated_spaces_build_run_and_derive(workdir, gen, seed):
    torch.manual_seed(seed)
    ir = compile_text(workdir, pretty(gen.module))
    # Keep the activations small: the input is 4x the total downsampling, so bound both.
    assume(max(b.scale for b in ir.blocks) <= 8)
    assume(max(getattr(b, "C_out", 0) for b in ir.blocks) <= 256)
    x, classes = input_for(ir)

    net = build(ir)
    y = net(x)
    assert y.shape == (2, classes) and torch.isfinite(y).all()
    y.sum().backward()
    for g in ir.groups:
        # α reaches the output unless (a) the group has nothing but `none` (skipped: it adds
        # w·0), or (b) a later cell has only `noise`/`none`, whose outputs ignore their inputs
        grad = net.alphas[g.name].grad
        if all(set(e.candidates) == {"none"} for e in ir.cell(g.cell).edges):
            assert grad is None or not grad.any(), g.name
        elif not _blocked_after(ir, g.name):
            assert grad is not None, g.name

    alphas = {g.name: torch.randn(*g.shape) for g in ir.groups}
    genotype = validate(derive(ir, alphas), ir)
    child = build_child(ir, genotype)
    z = child(x)
    assert z.shape == (2, classes) and torch.isfinite(z).all()
