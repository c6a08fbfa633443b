"""Small `.nas` texts for tests that need a space of their own: one cell type, dense edges."""


def tiny_space(name: str, ops: list[str], nodes: int = 1, C: int = 4, repeat: int = 2) -> str:
    """A space of ``repeat`` cells (1 input, ``nodes`` nodes, every edge offering ``ops``) of
    width ``C`` between a conv stem and a BN-ReLU-GAP-linear head; BN without affine."""
    return f"""
space {name}
ops [{", ".join(ops)}]
bn {{ affine false; track_stats true; pool_bn false }}
cell cell(inputs 1, nodes {nodes}) {{
  edges dense
  output last
  derive argmax
}}
network(C = {C}) {{
  stem conv3x3(C)
  repeat {repeat} cell(C)
  head bn relu gap linear
}}
"""
