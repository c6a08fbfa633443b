"""The human-readable report of ``dslnas compile``."""
from __future__ import annotations

from .ir.count import cell_architectures, space_architectures
from .ir.model import CellBlock, HeadBlock, ResBlock, SpaceIR, StemBlock


def compile_report(ir: SpaceIR, supernet_params: int | None = None) -> str:
    out = [f"space {ir.name}  ({ir.source})",
           "parameters: " + ", ".join(f"{k}={v}" for k, v in ir.params),
           "search BN: " + ", ".join(f"{k}={str(v).lower()}" for k, v in ir.bn), ""]
    for cell in ir.used_cells:
        kind = "reduction cell" if cell.reduction else "cell"
        out.append(f"{kind} {cell.name}: {cell.n_inputs} input(s), {cell.n_nodes} node(s), "
                   f"{len(cell.edges)} edges, output {cell.output} "
                   f"{list(cell.output_nodes)}, combine {cell.combine}, derive {cell.derive}, "
                   f"alpha group '{cell.group}'")
        shared = len({e.candidates for e in cell.edges}) == 1
        if shared:
            out.append(f"  candidates on every edge: {', '.join(cell.edges[0].candidates)}")
        for e in cell.edges:
            stride = "  stride 2" if e.stride == 2 else ""
            ops = "" if shared else f":  {', '.join(e.candidates)}"
            out.append(f"  [{e.row:2d}] {e.src} -> {e.dst}{stride}{ops}")
        out.append(f"  architectures: {cell_architectures(cell):,}")
        out.append("")
    out.append("network (channels x resolution, relative to the input):")
    for b in ir.blocks:
        out.append("  " + _block_line(b))
    out.append("")
    out.append("alpha: " + ", ".join(f"{g.name} {g.shape[0]}x{g.shape[1]}" for g in ir.groups))
    if supernet_params is not None:
        out.append(f"supernet weights: {supernet_params:,} parameters")
    out.append(f"architectures: {space_architectures(ir):,}")
    return "\n".join(out)


def _res(scale: int) -> str:
    return "1" if scale == 1 else f"1/{scale}"


def _block_line(b) -> str:
    if isinstance(b, StemBlock):
        return f"stem      {b.op} {b.C_in} -> {b.C_out}  @{_res(b.scale)}"
    if isinstance(b, CellBlock):
        pre = ", ".join(f"{p}({c}->{b.C})" if p != "none" else f"{c}"
                        for p, c in zip(b.preprocess, b.C_inputs))
        red = " stride 2" if b.stride == 2 else ""
        return f"cell {b.index:<4d} {b.cell}(C={b.C}){red}  in: {pre}  out: {b.C_out} @{_res(b.scale)}"
    if isinstance(b, ResBlock):
        return f"resblock  {b.C_in} -> {b.C_out} stride {b.stride}  @{_res(b.scale)}"
    if isinstance(b, HeadBlock):
        return f"head      {' '.join(b.layers)}  {b.C_in} -> {b.classes} classes"
    return str(b)
