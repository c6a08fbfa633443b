"""DARTS CNN ops (reference 1.1). All convs bias=False; BN follows ``affine``/``track``.

Each factory honours (C_in, C_out, stride) even though DARTS cells only use
C_in == C_out, so user spaces with channel changes still build.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .layers import AvgPool3x3, DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from .registry import register_op

# alpha column order of the original space (ref 1.1)
DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


@register_op("none", kind="zero")
def _none(C_in, C_out, stride, affine, track):
    return Zero(stride, C_out)


def _with_channel_adapter(pool, C_in, C_out, affine, track):
    # a pool cannot change channels: prepend a 1x1 ReLUConvBN as NB201 does
    if C_in == C_out:
        return pool
    return nn.Sequential(OrderedDict(
        preprocess=ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track),
        pool=pool,
    ))


@register_op("max_pool_3x3", kind="pool")
def _max_pool_3x3(C_in, C_out, stride, affine, track):
    return _with_channel_adapter(nn.MaxPool2d(3, stride=stride, padding=1), C_in, C_out, affine, track)


@register_op("avg_pool_3x3", kind="pool")
def _avg_pool_3x3(C_in, C_out, stride, affine, track):
    # count_include_pad=False: border outputs average only real pixels
    return _with_channel_adapter(AvgPool3x3(stride), C_in, C_out, affine, track)


@register_op("skip_connect", kind="identity")
def _skip_connect(C_in, C_out, stride, affine, track):
    if stride == 1 and C_in == C_out:
        return Identity()
    if stride == 1:
        # DARTS has no stride-1 channel change; a 1x1 ReLUConvBN keeps the signature
        return ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track)
    return FactorizedReduce(C_in, C_out, affine, track, variant="darts")


def _sep(k):
    def factory(C_in, C_out, stride, affine, track):
        return SepConv(C_in, C_out, k, stride, k // 2, affine, track)
    return factory


def _dil(k):
    def factory(C_in, C_out, stride, affine, track):
        # dilation 2: padding = k - 1 keeps the size (2 for 3x3, 4 for 5x5)
        return DilConv(C_in, C_out, k, stride, k - 1, 2, affine, track)
    return factory


register_op("sep_conv_3x3")(_sep(3))
register_op("sep_conv_5x5")(_sep(5))
register_op("dil_conv_3x3")(_dil(3))
register_op("dil_conv_5x5")(_dil(5))

# extras: in DARTS' OPS table but not in its search space (NASNet/AmoebaNet genotypes)
register_op("sep_conv_7x7")(_sep(7))


@register_op("conv_7x1_1x7")
def _conv_7x1_1x7(C_in, C_out, stride, affine, track):
    # the stride is split over the two factorised convs: width first, then height
    return nn.Sequential(OrderedDict(
        relu=nn.ReLU(inplace=False),
        conv_1x7=nn.Conv2d(C_in, C_out, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        conv_7x1=nn.Conv2d(C_out, C_out, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        bn=nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track),
    ))
