"""RobustDARTS S4 ``noise`` op (reference 3.3): N(0, 1) independent of the input."""
from __future__ import annotations

from .layers import NoiseOp
from .registry import register_op


@register_op("noise", kind="noise")
def _noise(C_in, C_out, stride, affine, track):
    # no parameters and no BN, so affine/track are irrelevant
    return NoiseOp(stride, 0.0, 1.0, C_out=None if C_in == C_out else C_out)
