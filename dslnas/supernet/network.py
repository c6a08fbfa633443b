"""``build(ir)``: the search supernet, and ``build_child(ir, genotype)``: a discrete network."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..ir.model import CellBlock, SpaceIR
from .cells import DiscreteCell, DropPath, SearchCell, real_candidates
from .fused import FusedSearchCell
from .mixed import MixedEdge
from .macro import MacroNetwork
from .partial import partial_edge, partial_K


class Supernet(nn.Module):
    """All candidates on every edge. Architecture parameters live apart from the weights:
    ``weight_parameters()`` and ``arch_parameters()`` never overlap, and ``forward`` takes
    the edge weights from outside (softmax, Dirichlet samples, ... are the method's business)."""

    def __init__(self, ir: SpaceIR, edge_cls=MixedEdge, node_norm: bool = False,
                 affine: bool | None = None, fused: bool = False):
        super().__init__()
        self.ir = ir
        bn = ir.bn_policy
        affine = bn["affine"] if affine is None else affine   # random features need affine BN
        track, pool_bn = bn["track_stats"], bn["pool_bn"]
        self._build_args = dict(edge_cls=edge_cls, node_norm=node_norm, affine=affine)
        # what changed the built supernet (methods.transforms' ``prepare``, e.g. BN without
        # running statistics): a plain twin must be changed alike to hold the same tensors
        self.prepared_by: list = []
        K = 1 if edge_cls is MixedEdge else partial_K(edge_cls)
        if fused and K is None:
            raise ValueError("the fused cell batches plain and partial-channel mixed edges only")

        def make_cell(b):
            if fused:
                return FusedSearchCell(ir.cell(b.cell), b, affine, track, pool_bn, node_norm, K)
            return SearchCell(ir.cell(b.cell), b, affine, track, pool_bn, edge_cls=edge_cls,
                              node_norm=node_norm)

        self.net = MacroNetwork(ir, make_cell)
        self.compiled_batch: int | None = None     # compile_cells() sets it
        self._eager_cells = False                  # eager_cells() sets it
        self.cell_groups = [ir.cell(name).group if kind == "cell" else None
                            for kind, name in zip(self.net.kinds, self.net.cell_names)]
        # One tensor per sharing group, 1e-3 * N(0, 1) as in DARTS and NB201.
        self.alphas = nn.ParameterDict(
            {g.name: nn.Parameter(1e-3 * torch.randn(*g.shape)) for g in ir.groups})
        for g in ir.groups:
            self.register_buffer(f"mask_{g.name}", real_candidates(ir.cell(g.cell), g.shape),
                                 persistent=False)

    @property
    def is_fused(self) -> bool:
        return any(isinstance(b, FusedSearchCell) for b in self.net.blocks)

    @torch.no_grad()
    def plain_twin(self) -> "Supernet":
        """This supernet with plain (per-edge) search cells holding the same weights, BN
        statistics, α and masks, in the same mode: the same function, for what needs each
        edge's own modules (the decorrelation discretizer hooks every op's output), without
        search drop-path. Itself when its cells are plain. Built with the CPU generator
        forked, so the search's random stream is not moved; a fresh copy each call (the
        weights it copies change every step)."""
        if not self.is_fused:
            return self
        args = dict(self._build_args)
        if partial_K(args["edge_cls"]) is not None:     # the width the cells have now (DrNAS
            K = next(b.K for b in self.net.blocks if isinstance(b, FusedSearchCell))
            args["edge_cls"] = partial_edge(K)          # progressive widens them by stages)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")         # the build warned once already
            twin = Supernet(self.ir, fused=False, **args)
            for prepare in self.prepared_by:
                prepare(twin)
        ref = next(self.parameters())
        twin.to(device=ref.device, dtype=ref.dtype)
        twin.alphas.load_state_dict(self.alphas.state_dict())
        for g in self.alphas:
            twin.mask(g).copy_(self.mask(g))
        for g, block in zip(twin.cell_groups, twin.net.blocks):
            for row, edge in enumerate(getattr(block, "edges", ())):
                if hasattr(edge, "set_active"):     # pruned ops (DrNAS progressive) stay off
                    edge.set_active(self.mask(g)[row, :len(edge.candidates)].cpu())
        for mine, theirs in zip(self.net.blocks, twin.net.blocks):
            if isinstance(mine, FusedSearchCell):
                mine.copy_to(theirs)
            else:
                theirs.load_state_dict(mine.state_dict())
        return twin.train(self.training)

    def mask(self, group: str) -> torch.Tensor:
        """True where a column is a real candidate (rows shorter than the widest are padded)."""
        return getattr(self, f"mask_{group}")

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("alphas.")]

    def softmax_weights(self) -> dict[str, torch.Tensor]:
        """The DARTS relaxation: softmax over each edge's real candidates."""
        return {g: masked_softmax(a, self.mask(g)) for g, a in self.alphas.items()}

    def compile_cells(self, batch_size: int) -> None:
        """``torch.compile`` each search cell on its own ("regional" compilation), for training
        batches of ``batch_size``: the generated kernels fuse a cell's BN, ReLU and weighted
        sums. Cells of one class and shape share the compiled code. (The whole supernet as one
        graph had not finished compiling after 7 minutes in the issue's calibration.)

        Compiling is slow (minutes for NB201 on the GPU machine, see docs/performance.md), so
        only what the search repeats is compiled: one graph per cell shape for the weight step
        (α held constant) and one for the architecture step (the weights held constant; DARTS'
        second order adds its w' pass, which differentiates both). Other batch sizes (an
        epoch's last, partial batch), eval mode, no-grad forwards and forwards inside
        ``eager_cells()`` run the same cells eagerly."""
        import torch._dynamo
        cells = [b for kind, b in zip(self.net.kinds, self.net.blocks) if kind == "cell"]
        # raised for the process (dynamo's limit is global): two or three graphs per cell shape,
        # and again after each stage change that reshapes the cells (DrNAS progressive); past the
        # limit dynamo would fall back to eager
        limit = torch._dynamo.config.cache_size_limit
        torch._dynamo.config.cache_size_limit = max(limit, 8 * len(cells))
        for cell in cells:
            cell.compile(dynamic=False)
        self.compiled_batch = batch_size

    def _edge_drops(self) -> list:
        return [b.edge_drop for kind, b in zip(self.net.kinds, self.net.blocks) if kind == "cell"]

    @property
    def drop_path_prob(self) -> float:
        """The search cells' edge drop-path probability now (0 when inactive)."""
        drops = [d for d in self._edge_drops() if d.active]
        return float(drops[0].p) if drops else 0.0

    def set_drop_path(self, p: float, active: bool | None = None) -> None:
        """Every search cell's edge drop-path probability (RobustDARTS' search-time drop-path,
        ``cells.EdgeDropPath``); ``active`` (default: p > 0) should stay fixed for a search."""
        for d in self._edge_drops():
            d.set(p, p > 0 if active is None else active)

    @contextmanager
    def no_drop_path(self) -> Iterator[None]:
        """Forwards inside the block drop no path (what measures or derives, not trains)."""
        drops = self._edge_drops()
        saved = [d.active for d in drops]
        try:
            for d in drops:
                d.active = False
            yield
        finally:
            for d, a in zip(drops, saved):
                d.active = a

    @contextmanager
    def eager_cells(self) -> Iterator[None]:
        """Run the cells' eager code inside the block, compiled or not: compiled autograd
        graphs support one backward, and some hypergradients differentiate twice."""
        saved, self._eager_cells = self._eager_cells, True
        try:
            yield
        finally:
            self._eager_cells = saved

    def _cell_call(self, x: torch.Tensor, weights: dict[str, torch.Tensor]):
        groups = self.cell_groups
        if self.compiled_batch is None:
            return lambda i, cell, ins: cell(ins, weights[groups[i]])
        if not self._eager_cells and self.training and torch.is_grad_enabled() \
                and x.shape[0] == self.compiled_batch:
            # Compiled graphs are specialised on each input's requires_grad. Where the stem is
            # held constant (the architecture step; frozen random features) its output needs no
            # gradient, and the first cells would each get graphs of their own (≈ 20 s of
            # compiling each on the CPU) to skip a few backward kernels per step. So a compiled
            # cell always sees inputs that require grad; that gradient is never read. One leaf
            # per tensor: DARTS feeds the stem to its first cell twice, and aliased inputs are
            # part of what a graph is specialised on.
            def compiled(i, cell, ins):
                leaves = {id(t): t.detach().requires_grad_() for t in ins if not t.requires_grad}
                return cell([leaves.get(id(t), t) for t in ins], weights[groups[i]])
            return compiled
        # a compiled cell's ``forward`` is its eager code
        return lambda i, cell, ins: cell.forward(ins, weights[groups[i]])

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None):
        if weights is None:
            weights = self.softmax_weights()
        return self.net.run(x, self._cell_call(x, weights))


def masked_softmax(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)


def build(ir: SpaceIR, edge_cls=MixedEdge, node_norm: bool = False,
          affine: bool | None = None, fused: bool = False) -> Supernet:
    """The search supernet of ``ir``. ``edge_cls`` swaps the mixed edge (e.g. partial channels),
    ``node_norm`` normalises every intermediate node, ``affine`` overrides the space's BN policy,
    ``fused`` batches the work of all edges leaving a node (same function, fewer kernels)."""
    return Supernet(ir, edge_cls, node_norm, affine, fused)


class ChildNetwork(nn.Module):
    """The discrete network of a genotype, with affine BN, drop-path and an optional auxiliary
    head on the output of the last reduction cell (where DARTS puts it)."""

    def __init__(self, ir: SpaceIR, genotype, auxiliary: bool = False):
        super().__init__()
        chosen = {c.cell: c.edges for c in genotype.cells}
        group_cell = {g.name: g.cell for g in ir.groups}

        def cell_edges(b: CellBlock):
            group = ir.cell(b.cell).group
            return chosen[group_cell[group]]

        self.net = MacroNetwork(ir, lambda b: DiscreteCell(ir.cell(b.cell), b, cell_edges(b)))
        self.aux_index = None
        self.aux_head = None
        if auxiliary:
            reductions = [i for i, b in enumerate(ir.blocks)
                          if isinstance(b, CellBlock) and b.stride == 2]
            if not reductions:
                raise ValueError("an auxiliary head needs a reduction cell to attach to")
            self.aux_index = reductions[-1]
            b = ir.blocks[self.aux_index]
            self.aux_head = AuxiliaryHead(b.C_out, dict(ir.params)["classes"])
        self._aux_out = None

    def set_drop_path(self, p: float) -> None:
        for m in self.modules():
            if isinstance(m, DropPath):
                m.set(p)

    def forward(self, x: torch.Tensor):
        aux = []

        def tap(i, out):
            if i == self.aux_index and self.training:
                aux.append(self.aux_head(out))

        logits = self.net.run(x, lambda i, cell, ins: cell(ins), tap if self.aux_head else None)
        return (logits, aux[0]) if aux else logits


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier for 8x8 feature maps (loss weight 0.4 in training)."""

    def __init__(self, C: int, classes: int):
        super().__init__()
        # not in place: the tapped cell output also feeds the rest of the network (DARTS' head
        # rewrites it, harmless only where the next reader starts with a ReLU)
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build_child(ir: SpaceIR, genotype, auxiliary: bool = False) -> ChildNetwork:
    return ChildNetwork(ir, genotype, auxiliary)


def count_parameters(params) -> int:
    return sum(p.numel() for p in params)
