"""Op library: ``import dslnas.ops`` registers the DARTS, NB201 and noise ops."""
from . import darts, nb201, noise  # noqa: F401  (imported for their registrations)
from .darts import DARTS_OPS
from .layers import (DilConv, FactorizedReduce, Identity, NoiseOp, ReLUConvBN,
                     ResNetBasicBlock, SepConv, Zero)
from .nb201 import NB201_OPS
from .registry import (OP_KINDS, available_ops, create_op, is_registered, op_kind,
                       register_op, unregister_op)

__all__ = [
    "register_op", "unregister_op", "create_op", "op_kind", "is_registered",
    "available_ops", "OP_KINDS", "DARTS_OPS", "NB201_OPS",
    "ReLUConvBN", "SepConv", "DilConv", "Zero", "Identity", "FactorizedReduce",
    "NoiseOp", "ResNetBasicBlock",
]
