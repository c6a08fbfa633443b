"""CUDA graphs for the search iteration (dslnas/search/graphs.py), the parts that run on CPU.

The capture itself needs a GPU (benchmarks/graph_check.py). Here: the factored iteration with a
tensor lr is bit-identical to the plain eager path, the lr tensor follows the cosine schedule,
and asking for graphs where there are none falls back cleanly with a reason.
NB201 at C=4, N=1 on the offline digits set, so every test is quick.
"""
from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
import torch

from dslnas.ir.lower import compile_file
from dslnas.methods.spec import METHODS, Part, get_method
from dslnas.search.datasets import load_dataset
from dslnas.search.graphs import (Batch, GraphedStep, GraphUnsupported, TensorLr, _same,
                                  _signature, attach_graphs, graph_safety)
from dslnas.search.loader import SearchData
from dslnas.search.loop import Searcher, search
from dslnas.search.rundir import RunDir

NB201 = Path(__file__).resolve().parents[1] / "spaces" / "nb201.nas"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", norm="nb201")


@pytest.fixture(scope="module")
def ir():
    return compile_file(NB201, {"C": 4, "N": 1, "in_channels": 3, "classes": 10})


def spec(name: str, **schedule):
    m = get_method(name).for_family("nb201")
    return attrs.evolve(m, schedule=attrs.evolve(m.schedule, **schedule))


def data_for(ds, method, subset=72, seed=0):
    # 72 images: 36 train / 36 val, batches 16, 16, 4 -- the partial batch runs eagerly
    return SearchData.from_dataset(ds, batch_size=method.schedule.batch_size, split="half",
                                   seed=seed, subset=subset)


def run_epochs(s: Searcher, data, epochs: int) -> list[dict]:
    """What search() does per epoch, without the run directory."""
    out = []
    for _ in range(epochs):
        s.begin_epoch()
        s.train_epoch(data)
        s.scheduler.step()
        s.epoch += 1
        out.append(s.epoch_metrics())
    return out


def tensors(s: Searcher) -> dict[str, torch.Tensor]:
    """Every tensor the search changes: weights, α and extras, buffers, optimiser states."""
    out = {f"param/{k}": v for k, v in s.supernet.named_parameters()}
    out.update({f"buffer/{k}": v for k, v in s.supernet.named_buffers()})
    out.update({f"extra/{k}": v for k, v in s.extra.items()})
    for name, opt in (("w_opt", s.w_opt), ("a_opt", s.a_opt)):
        for i, p in enumerate(q for g in opt.param_groups for q in g["params"]):
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    out[f"{name}/{i}/{k}"] = v
    return out


def assert_identical(a: Searcher, b: Searcher) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


# ---- (a) the factored iteration is the eager path ------------------------------------------

@pytest.mark.parametrize("method, schedule", [
    ("darts", {}),                                   # softmax, weights first (NB201 family)
    ("darts", {"order": "arch_first"}),              # the arch step before the weight step
    ("pc-darts", {"warmup_epochs": 1}),              # softmax_beta + partial channels, frozen α
    ("drnas", {}),                                   # Dirichlet samples: the RNG stream matches
    ("darts-2nd", {}),                               # unrolled: tensor lr and FD radius, arch
                                                     # first (before the first weight step)
    ("darts-2nd", {"order": "weights_first"}),       # unrolled after the weight step
    ("amended-darts", {}),                           # double backward (H·u), tensor η
    ("idarts-ift", {"warmup_epochs": 1}),            # the inner loop: weights-only and arch-only
])                                                   # kinds, Neumann's HVPs, frozen α at first
def test_factored_iteration_with_tensor_lr_matches_the_eager_path_exactly(digits, ir, method,
                                                                           schedule):
    m = spec(method, epochs=3, batch_size=16, **schedule)
    eager = Searcher(ir, m, seed=3)
    m_eager = run_epochs(eager, data_for(digits, m), 3)

    twin = Searcher(ir, m, seed=3)
    twin.graphed = GraphedStep(twin, capture=False)    # the graph step's eager twin
    m_twin = run_epochs(twin, data_for(digits, m), 3)

    assert m_twin == m_eager                         # loss / accuracy sums and sample counts
    T = m.schedule.inner_steps                       # 3 batches (16, 16, 4) per epoch
    assert twin.global_step == eager.global_step == (9 if T == 1 else 9 * T)
    assert_identical(eager, twin)
    assert twin.lr == eager.lr and isinstance(twin.w_opt.param_groups[0]["lr"], float)
    assert twin.graphed.static is not None and twin.graphed.static.x_train.shape[0] == 16


def test_factored_iteration_matches_across_a_drnas_stage_switch(digits, ir):
    # progressive: prune + widen after epoch 1 replaces parameters and carries momentum buffers
    m = attrs.evolve(spec("drnas-progressive", epochs=2, batch_size=16), transforms=(
        Part("progressive", {"K": [4, 2], "keep": [5, 3], "epochs": [1, 1], "warmup": 0}),))
    eager = Searcher(ir, m, seed=5)
    m_eager = run_epochs(eager, data_for(digits, m), 2)
    twin = Searcher(ir, m, seed=5)
    twin.graphed = GraphedStep(twin, capture=False)
    m_twin = run_epochs(twin, data_for(digits, m), 2)
    assert eager.transforms[0].stage == twin.transforms[0].stage == 1
    assert m_twin == m_eager
    assert_identical(eager, twin)


def test_keep_grads_iteration_matches_the_plain_steps(ir):
    m = spec("pc-darts", batch_size=8)
    g = torch.Generator().manual_seed(0)
    def pair():
        return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    batches = [Batch(*pair(), *pair()) for _ in range(4)]
    a, b = Searcher(ir, m, seed=1), Searcher(ir, m, seed=1)
    lr = TensorLr(b.w_opt, b.device)
    for x in batches:
        a.arch_step((x.x_train, x.y_train), (x.x_val, x.y_val))     # PC-DARTS: arch first
        a.weight_step(x.x_train, x.y_train)
        with lr.swapped():
            b.iteration(*x, do_arch=True, frozen=False, keep_grads=True)
        assert_identical(a, b)
    assert torch.equal(a._sums, b._sums)


# ---- (b) the lr tensor follows the cosine schedule ------------------------------------------

@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_lr_tensor_follows_the_cosine_schedule_once_per_epoch(ir):
    m = spec("darts", epochs=5, w_lr=0.025, w_lr_min=0.001)
    s = Searcher(ir, m)
    lr = TensorLr(s.w_opt, s.device)
    assert lr.tensors[0].dtype == torch.float32 and lr.tensors[0].dim() == 0
    for epoch in range(5):
        lr.sync()
        want = 0.001 + (0.025 - 0.001) * (1 + math.cos(math.pi * epoch / 5)) / 2
        assert s.lr == pytest.approx(want, rel=1e-12, abs=1e-15)
        assert lr.tensors[0].item() == torch.tensor(want, dtype=torch.float32).item()
        with lr.swapped():
            assert s.w_opt.param_groups[0]["lr"] is lr.tensors[0]
        assert isinstance(s.w_opt.param_groups[0]["lr"], float)     # scheduler, checkpoints
        s.scheduler.step()
    state = s.w_opt.state_dict()
    assert all(isinstance(g["lr"], float) for g in state["param_groups"])


def test_graphed_step_writes_the_epoch_lr_before_each_epoch(digits, ir):
    m = spec("darts", epochs=3, batch_size=16)
    s = Searcher(ir, m)
    s.graphed = GraphedStep(s, capture=False)
    data = data_for(digits, m)
    seen = []
    for _ in range(3):
        s.begin_epoch()
        s.train_epoch(data, on_step=lambda: seen.append(s.graphed._lr.tensors[0].item()))
        assert seen[-1] == torch.tensor(s.lr, dtype=torch.float32).item()
        s.scheduler.step()
        s.epoch += 1
        s.epoch_metrics()
    assert len(seen) == 9 and seen[0] > seen[3] > seen[6]


def test_graphs_are_dropped_when_the_state_they_captured_changes(ir):
    s = Searcher(ir, spec("darts", batch_size=8))
    g = GraphedStep(s, capture=False)
    g.begin_epoch()
    x = Batch(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)),
              torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    g.step(x, do_arch=True, frozen=False)            # creates the optimiser states
    sig = _signature(s, g._lr)
    assert _same(sig, _signature(s, g._lr))
    g._graphs[(True, False)] = (None, sig)           # stand-ins for captured graphs
    g._graphs[(False, True)] = (None, sig[:-1])
    g.begin_epoch()
    assert list(g._graphs) == [(True, False)]        # a stale one goes, a current one stays
    lr = g._lr
    s.rebuild_optimisers()                           # new optimisers (as on resume)
    assert not _same(sig, _signature(s, lr))
    g.begin_epoch()
    assert g._graphs == {} and g._lr is not lr and g._lr.optimizer is s.w_opt


# ---- (c) where graphs cannot be, they say why and stay out ----------------------------------

def test_graphed_step_on_cpu_raises_with_the_reason(ir):
    s = Searcher(ir, spec("darts"))
    with pytest.raises(GraphUnsupported, match="CUDA graphs need a CUDA device; this search "
                                                "runs on cpu"):
        GraphedStep(s)
    assert s.graphed is None


def test_attach_graphs_on_cpu_falls_back_and_logs_once_when_asked(ir):
    s = Searcher(ir, spec("darts"))
    lines: list[str] = []
    assert attach_graphs(s, True, log=lines.append) is None and s.graphed is None
    assert lines == ["cuda graphs: off (CUDA graphs need a CUDA device; this search runs on cpu)"]
    lines.clear()
    assert attach_graphs(s, None, log=lines.append) is None       # default: quietly eager
    assert attach_graphs(s, False, log=lines.append) is None
    assert lines == [] and s.graphed is None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_shipped_method_is_graph_safe(ir, name):
    s = Searcher(ir, get_method(name).for_family("nb201"))
    assert graph_safety(s, device=False) is None
    assert graph_safety(s) is not None                              # on CPU, never


def test_an_unknown_relaxation_is_not_graphed(ir):
    s = Searcher(ir, spec("darts"))
    s.relaxation = object()
    assert graph_safety(s, device=False).startswith("relaxation softmax is not known")


def test_search_with_cuda_graphs_on_cpu_is_the_eager_search(tmp_path, digits, ir):
    m = spec("drnas", epochs=2, batch_size=16)
    results, logs = [], []
    for i, flag in enumerate((None, True)):
        lines: list[str] = []
        with RunDir.create(tmp_path / str(i), space=ir.name, method=m.name, seed=0,
                           tensorboard=False) as run:
            results.append(search(ir, m, data_for(digits, m), run, seed=0, progress=False,
                                  log=lines.append, cuda_graphs=flag))
        logs.append([l for l in lines if l.startswith("cuda graphs")])
    assert logs == [[], ["cuda graphs: off (CUDA graphs need a CUDA device; this search runs "
                         "on cpu)"]]
    a, b = results
    assert all(torch.equal(a.alphas[k], b.alphas[k]) for k in a.alphas)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "elapsed")} for r in
             (*a.history, *b.history)]
    assert strip[:2] == strip[2:]


@pytest.mark.parametrize("frozen", [False, True])
def test_graph_check_drives_the_inner_loop_step_kinds_of_the_search(ir, digits, frozen):
    # benchmarks/graph_check.py must replay idarts-ift's epoch as the search runs it, or its
    # GPU comparison would never capture the weights-only / architecture-only / val-only graphs
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "graph_check.py"
    mod_spec = importlib.util.spec_from_file_location("graph_check", path)
    graph_check = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(graph_check)
    method = spec("idarts-ift", batch_size=16)
    T = int(method.schedule.inner_steps)
    s = Searcher(ir, method, seed=0)
    data = data_for(digits, method)
    kinds = []
    s._inner_loop_epoch(data, T, frozen, lambda *b, **kind: kinds.append(kind), None)
    assert T > 1 and len(data.val) == 3 and len(kinds) == 3 * (T + 1)
    everything_frozen = len(kinds) if frozen else 0
    assert kinds == [graph_check.iteration_kind(i, everything_frozen, T)
                     for i in range(len(kinds))]
