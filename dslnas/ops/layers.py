"""Reusable building blocks for the op library (ReLU -> Conv -> BN ordering throughout).

Every BN takes ``affine`` and ``track`` so search (affine=False) and evaluation
(affine=True) networks come from the same code. Pool+BN is *not* here: the DARTS
search supernet adds that BN itself (reference 1.2).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _bn(C: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(C, affine=affine, track_running_stats=track)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(kernel, stride, padding, dilation) -> BN(C_out)."""

    def __init__(self, C_in, C_out, kernel, stride, padding, dilation=1,
                 affine=True, track=True, bias=False):
        super().__init__(OrderedDict(
            relu=nn.ReLU(inplace=False),
            conv=nn.Conv2d(C_in, C_out, kernel, stride, padding, dilation, bias=bias),
            bn=_bn(C_out, affine, track),
        ))


def window_mean_3x3(x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """3x3 mean over the real pixels of each window (padding 1, count_include_pad=False) as
    nine shifted adds of the zero-padded input, divided by each window's pixel count."""
    H, W = x.shape[-2:]
    rows, cols = slice(None, stride * ((H - 1) // stride) + 1, stride), \
        slice(None, stride * ((W - 1) // stride) + 1, stride)

    def window_sum(t: torch.Tensor) -> torch.Tensor:
        p = nn.functional.pad(t, (1, 1, 1, 1))
        return sum(p[..., i:, j:][..., rows, cols] for i in range(3) for j in range(3))

    count = window_sum(torch.ones(1, 1, H, W, dtype=x.dtype, device=x.device))
    return window_sum(x) / count


class AvgPool3x3(nn.AvgPool2d):
    """``AvgPool2d(3, stride, padding=1, count_include_pad=False)``, the DARTS/NB201 pool.

    Eagerly it is ``AvgPool2d`` itself (one kernel). Under ``torch.compile`` it is
    :func:`window_mean_3x3`, the same function: Inductor's own avg_pool2d backward indexes every
    gradient through nested clamps, which gave the compiled NB201 cells their largest kernels
    (18k lines of Triton IR each); with shifted adds compiling NB201's cells took 66 instead of
    127 s on the CPU (docs/performance.md)."""

    def __init__(self, stride: int = 1):
        super().__init__(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return window_mean_3x3(x, self.stride)
        return super().forward(x)


class DilConv(nn.Sequential):
    """ReLU -> depthwise conv (dilated) -> pointwise C_in->C_out -> BN. One block."""

    def __init__(self, C_in, C_out, kernel, stride, padding, dilation,
                 affine=True, track=True):
        super().__init__(OrderedDict(
            relu=nn.ReLU(inplace=False),
            dw=nn.Conv2d(C_in, C_in, kernel, stride, padding, dilation, groups=C_in, bias=False),
            pw=nn.Conv2d(C_in, C_out, 1, bias=False),
            bn=_bn(C_out, affine, track),
        ))


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1 (DARTS ``sep_conv``).

    The stride sits in the first depthwise conv only; the first block keeps
    C_in channels and the second maps to C_out, so C_in == C_out gives
    2 * (k*k*C + C*C) weights (reference 1.1).
    """

    def __init__(self, C_in, C_out, kernel, stride, padding, affine=True, track=True):
        super().__init__(OrderedDict(
            block1=DilConv(C_in, C_in, kernel, stride, padding, 1, affine, track),
            block2=DilConv(C_in, C_out, kernel, 1, padding, 1, affine, track),
        ))


class Identity(nn.Identity):
    """Returns its input. A distinct class so supernets can exempt it from drop-path."""


def _subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    return x if stride == 1 else x[:, :, ::stride, ::stride]


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like ``x[:, :, ::s, ::s]`` (C_out channels if given).

    Uses ``x * 0`` when channels match, as DARTS does (so NaN/inf inputs propagate
    the same way); otherwise a fresh zero tensor with C_out channels.
    """

    is_zero = True

    def __init__(self, stride: int, C_out: int | None = None):
        super().__init__()
        self.stride = stride
        self.C_out = C_out

    def forward(self, x):
        x = _subsample(x, self.stride)
        if self.C_out is None or self.C_out == x.shape[1]:
            return x.mul(0.0)
        shape = (x.shape[0], self.C_out, *x.shape[2:])
        return x.new_zeros(shape)

    def extra_repr(self):
        return f"stride={self.stride}, C_out={self.C_out}"


class FactorizedReduce(nn.Module):
    """Halve resolution with two 1x1 stride-2 convs on x and x shifted by one pixel.

    ``variant="darts"`` (ref 1.4): ReLU, convs of C_out//2 each on x and
    x[:, :, 1:, 1:] (no padding, so H and W must be even), concat, BN, conv
    bias False. C_out must be even; only stride 2 exists.

    ``variant="nb201"`` (ref 2.1): pads right/bottom by 1 before the shifted
    branch (works for odd sizes), splits C_out//2 and C_out - C_out//2, and
    stride 1 is a plain 1x1 conv + BN (no ReLU). As in the NB201 code, the
    conv bias is ``not affine``.
    """

    def __init__(self, C_in, C_out, affine=True, track=True, variant="darts", stride=2):
        super().__init__()
        if variant not in ("darts", "nb201"):
            raise ValueError(f"unknown FactorizedReduce variant {variant!r}")
        if variant == "darts":
            if stride != 2:
                raise ValueError("darts FactorizedReduce only supports stride 2")
            if C_out % 2:
                raise ValueError(f"darts FactorizedReduce needs an even C_out, got {C_out}")
        elif stride not in (1, 2):
            raise ValueError(f"nb201 FactorizedReduce supports stride 1 or 2, got {stride}")
        self.variant, self.stride = variant, stride
        self.C_in, self.C_out = C_in, C_out
        bias = variant == "nb201" and not affine
        if stride == 1:
            self.conv = nn.Conv2d(C_in, C_out, 1, bias=bias)
        else:
            self.relu = nn.ReLU(inplace=False)
            half = C_out // 2
            self.convs = nn.ModuleList([
                nn.Conv2d(C_in, half, 1, stride=2, bias=bias),
                nn.Conv2d(C_in, C_out - half, 1, stride=2, bias=bias),
            ])
        self.bn = _bn(C_out, affine, track)

    def forward(self, x):
        if self.stride == 1:
            return self.bn(self.conv(x))
        x = self.relu(x)
        if self.variant == "nb201":
            shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        else:
            if x.shape[2] % 2 or x.shape[3] % 2:
                # the unpadded shifted branch yields one pixel less: fail loudly
                raise ValueError(f"darts FactorizedReduce needs even H and W, got {tuple(x.shape[2:])}")
            shifted = x[:, :, 1:, 1:]
        out = torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1)
        return self.bn(out)

    def extra_repr(self):
        return f"C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}, variant={self.variant!r}"


class NoiseOp(nn.Module):
    """RobustDARTS ``noise`` (ref 3.3): fresh N(mean, std) shaped like ``x[:, :, ::s, ::s]``.

    Drawn anew on every call in train *and* eval mode; the result is a new
    leaf tensor, so no gradient reaches the input (alpha still gets one through
    the mixed-op weighted sum). ``C_out`` lets it honour a channel change.
    """

    def __init__(self, stride: int, mean: float = 0.0, std: float = 1.0, C_out: int | None = None):
        super().__init__()
        self.stride, self.mean, self.std, self.C_out = stride, mean, std, C_out

    def forward(self, x):
        n, c, h, w = _subsample(x, self.stride).shape
        c = c if self.C_out is None else self.C_out
        return torch.empty((n, c, h, w), dtype=x.dtype, device=x.device).normal_(self.mean, self.std)

    def extra_repr(self):
        return f"stride={self.stride}, mean={self.mean}, std={self.std}"


class ResNetBasicBlock(nn.Module):
    """NB201 ``ResNetBasicblock`` (ref 2.3): two 3x3 ReLUConvBN plus a shortcut.

    Shortcut: stride 2 -> AvgPool2d(2, 2) then 1x1 conv (no BN, no bias);
    stride 1 with C_in != C_out -> 1x1 ReLUConvBN (as in NB201; pooling there
    would halve the resolution); otherwise identity. Conv bias follows NB201's
    ``not affine`` rule (False in practice: the block is always affine).
    """

    def __init__(self, C_in, C_out, stride, affine=True, track=True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock supports stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, 1, affine, track, bias=not affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, 1, affine, track, bias=not affine)
        if stride == 2:
            self.shortcut = nn.Sequential(OrderedDict(
                pool=nn.AvgPool2d(kernel_size=2, stride=2),
                conv=nn.Conv2d(C_in, C_out, 1, bias=False),
            ))
        elif C_in != C_out:
            self.shortcut = ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track, bias=not affine)
        else:
            self.shortcut = None

    def forward(self, x):
        residual = x if self.shortcut is None else self.shortcut(x)
        return residual + self.conv_b(self.conv_a(x))
