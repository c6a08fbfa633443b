"""NAS-Bench-201 ops (reference 2.1).

NB201's ``none``, ``skip_connect`` and ``avg_pool_3x3`` are *not* re-registered:
inside NB201 cells every edge has C_in == C_out and stride 1, where the DARTS
registrations build exactly the same modules (x*0, Identity, AvgPool2d(3, 1, 1,
count_include_pad=False) with no BN). They differ only off that path (NB201's
stride-2 skip uses the padded FactorizedReduce; ``FactorizedReduce(...,
variant="nb201")`` provides it if a space needs it).
"""
from __future__ import annotations

from .layers import ReLUConvBN
from .registry import register_op

# alpha column order of the NB201 space (ref 2.1)
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _nor_conv(k):
    def factory(C_in, C_out, stride, affine, track):
        # NB201 quirk: conv bias = not affine, so search cells (affine=False) carry biases
        return ReLUConvBN(C_in, C_out, k, stride, k // 2, 1, affine, track, bias=not affine)
    return factory


register_op("nor_conv_1x1")(_nor_conv(1))
register_op("nor_conv_3x3")(_nor_conv(3))
