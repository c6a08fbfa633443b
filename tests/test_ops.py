"""Tests for dslnas.ops: parameter counts against reference formulas, shapes, flags, registry."""
import pytest
import torch
from torch import nn

import dslnas.ops as ops
from dslnas.ops import (FactorizedReduce, Identity, NoiseOp, ResNetBasicBlock, Zero,
                        create_op, op_kind, register_op, unregister_op)

C = 16
BUILTIN = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
           "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7",
           "nor_conv_1x1", "nor_conv_3x3", "noise"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def bns(m):
    return [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]


# search-mode (affine=False) weight counts from reference 1.1 / 2.1, keyed by (op, stride)
SEARCH_PARAMS = {
    "none": 0, "max_pool_3x3": 0, "avg_pool_3x3": 0, "noise": 0,
    "sep_conv_3x3": 2 * (9 * C + C * C),
    "sep_conv_5x5": 2 * (25 * C + C * C),
    "sep_conv_7x7": 2 * (49 * C + C * C),
    "dil_conv_3x3": 9 * C + C * C,
    "dil_conv_5x5": 25 * C + C * C,
    "conv_7x1_1x7": 2 * 7 * C * C,
    "nor_conv_1x1": C * C + C,          # + conv bias (bias = not affine)
    "nor_conv_3x3": 9 * C * C + C,
}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", BUILTIN)
def test_search_param_counts(name, stride):
    m = create_op(name, C, C, stride, affine=False)
    if name == "skip_connect":
        expected = 0 if stride == 1 else C * C  # Identity / FactorizedReduce
    else:
        expected = SEARCH_PARAMS[name]
    assert n_params(m) == expected


def test_affine_adds_bn_params_and_drops_nb201_bias():
    # each BN(C) contributes 2C when affine; sep_conv has two BNs
    assert n_params(create_op("sep_conv_3x3", C, C, 1)) == 2 * (9 * C + C * C) + 4 * C
    assert n_params(create_op("dil_conv_5x5", C, C, 2)) == 25 * C + C * C + 2 * C
    assert n_params(create_op("nor_conv_3x3", C, C, 1)) == 9 * C * C + 2 * C


@pytest.mark.parametrize("name", ["nor_conv_1x1", "nor_conv_3x3"])
def test_nb201_conv_bias_iff_not_affine(name):
    search = create_op(name, C, C, 1, affine=False)
    bench = create_op(name, C, C, 1, affine=True)
    assert search.conv.bias is not None and search.conv.bias.shape == (C,)
    assert bench.conv.bias is None
    assert not search.bn.affine and bench.bn.affine


@pytest.mark.parametrize("name", [n for n in BUILTIN if not n.startswith("nor_conv")])
def test_darts_convs_have_no_bias(name):
    # NB201 convs are excluded: they follow bias = not affine (tested above)
    for affine in (False, True):
        convs = [m for m in create_op(name, C, C, 2, affine=affine).modules() if isinstance(m, nn.Conv2d)]
        assert all(c.bias is None for c in convs)


@pytest.mark.parametrize("name", BUILTIN)
def test_bn_flags_propagate(name):
    for affine in (False, True):
        for track in (False, True):
            for m in bns(create_op(name, C, C, 2, affine=affine, track=track)):
                assert m.affine == affine
                assert m.track_running_stats == track


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("C_in,C_out", [(C, C), (8, C)])
@pytest.mark.parametrize("name", BUILTIN)
def test_output_shapes(name, stride, C_in, C_out):
    x = torch.randn(2, C_in, 32, 32)
    y = create_op(name, C_in, C_out, stride, affine=False)(x)
    assert y.shape == (2, C_out, 32 // stride, 32 // stride)


def test_pool_channel_adapter_only_when_channels_change():
    assert isinstance(create_op("avg_pool_3x3", C, C, 1), nn.AvgPool2d)
    adapted = create_op("max_pool_3x3", 8, C, 2)
    assert n_params(adapted) == 8 * C + 2 * C  # 1x1 conv + affine BN


def test_avg_pool_excludes_padding_at_corner():
    x = torch.randn(1, 1, 6, 6)
    y = create_op("avg_pool_3x3", 1, 1, 1)(x)
    assert torch.allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].mean())       # 4 real pixels
    assert not torch.allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].sum() / 9)  # not padded mean
    assert torch.allclose(y[0, 0, 2, 2], x[0, 0, 1:4, 1:4].mean())


def test_max_pool_ignores_padding():
    x = -1.0 - torch.rand(1, 1, 6, 6)  # all negative: zero padding would win
    y = create_op("max_pool_3x3", 1, 1, 2)(x)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()


def test_zero_op():
    x = torch.randn(2, C, 8, 8)
    z = create_op("none", C, C, 2)
    assert isinstance(z, Zero) and z.is_zero and op_kind("none") == "zero"
    assert torch.equal(z(x), torch.zeros(2, C, 4, 4))
    y = Zero(1, C_out=5)(x)
    assert y.shape == (2, 5, 8, 8) and not y.any()


def test_skip_connect_is_identity_only_at_stride1_same_channels():
    x = torch.randn(2, C, 8, 8)
    skip = create_op("skip_connect", C, C, 1)
    assert isinstance(skip, Identity) and torch.equal(skip(x), x)
    fr = create_op("skip_connect", C, C, 2)
    assert isinstance(fr, FactorizedReduce) and fr.variant == "darts"
    assert not isinstance(create_op("skip_connect", 8, C, 1), Identity)


def test_dilated_and_separable_structure():
    dil = create_op("dil_conv_5x5", C, C, 1)
    assert dil.dw.dilation == (2, 2) and dil.dw.padding == (4, 4) and dil.dw.groups == C
    sep = create_op("sep_conv_5x5", C, C, 2)
    assert sep.block1.dw.stride == (2, 2) and sep.block2.dw.stride == (1, 1)  # stride in 1st DW only


# --- FactorizedReduce -------------------------------------------------------------

def test_factorized_reduce_darts():
    fr = FactorizedReduce(C, 32, affine=False)
    assert fr(torch.randn(2, C, 32, 32)).shape == (2, 32, 16, 16)
    assert n_params(fr) == C * 32 // 2 * 2                        # two convs, no BN params
    assert n_params(FactorizedReduce(C, 32)) == C * 32 + 2 * 32   # + affine BN
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(C, 15)
    with pytest.raises(ValueError):
        FactorizedReduce(C, C, stride=1)
    with pytest.raises(ValueError, match="even H and W"):
        fr(torch.randn(1, C, 15, 15))


@pytest.mark.parametrize("variant", ["darts", "nb201"])
def test_factorized_reduce_second_branch_is_shifted(variant):
    fr = FactorizedReduce(1, 2, affine=False, variant=variant).eval()
    for conv in fr.convs:
        nn.init.ones_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0  # only seen by the shifted (odd-pixel) branch
    y = fr(x)
    assert y[0, 0].abs().sum() == 0
    assert y[0, 1, 0, 0] > 0


def test_factorized_reduce_nb201():
    fr = FactorizedReduce(C, 15, affine=False, variant="nb201")
    assert [c.out_channels for c in fr.convs] == [7, 8]
    assert fr(torch.randn(2, C, 15, 15)).shape == (2, 15, 8, 8)   # odd sizes work (padding)
    assert n_params(fr) == C * 15 + 15                          # convs + bias (not affine)
    assert n_params(FactorizedReduce(C, 15, variant="nb201")) == C * 15 + 2 * 15
    one = FactorizedReduce(C, 24, variant="nb201", stride=1).eval()
    assert one(torch.randn(2, C, 9, 9)).shape == (2, 24, 9, 9)
    assert not hasattr(one, "relu")  # stride 1 is a plain 1x1 conv + BN
    x = -torch.rand(1, C, 3, 3)       # all negative: a ReLU would zero it
    assert not torch.allclose(one(x), one(torch.zeros_like(x)))


# --- noise ------------------------------------------------------------------------

def test_noise_op():
    op = create_op("noise", C, C, 1)
    assert op_kind("noise") == "noise" and n_params(op) == 0
    x = torch.randn(4, C, 8, 8, requires_grad=True)
    torch.manual_seed(0)
    a = op(x)
    torch.manual_seed(0)
    b = op(x * 100 + 7)  # same RNG state, very different input -> same output
    assert torch.equal(a, b)
    assert not torch.equal(op(x), op(x))  # fresh draw each call
    assert not a.requires_grad
    (a * x).sum().backward()  # only the explicit product reaches x
    assert torch.allclose(x.grad, a)
    op.eval()
    with torch.no_grad():
        assert not torch.equal(op(x), op(x))  # still random in eval
    y = create_op("noise", C, C, 2)(torch.randn(2, C, 7, 7))
    assert y.shape == (2, C, 4, 4)
    big = op(torch.zeros(64, C, 8, 8))
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05  # N(0, 1)


def test_noise_op_custom_distribution():
    y = NoiseOp(1, mean=5.0, std=0.1)(torch.zeros(16, 4, 16, 16))
    assert abs(y.mean() - 5.0) < 0.01 and abs(y.std() - 0.1) < 0.01


# --- NB201 ResNet block -----------------------------------------------------------

def test_resnet_basic_block_reduction():
    blk = ResNetBasicBlock(16, 32, 2)
    expected = (16 * 32 * 9 + 2 * 32) + (32 * 32 * 9 + 2 * 32) + 16 * 32  # conv_a, conv_b, shortcut
    assert n_params(blk) == expected == 14464
    assert not any(isinstance(m, nn.BatchNorm2d) for m in blk.shortcut.modules())
    assert isinstance(blk.shortcut.pool, nn.AvgPool2d)
    x = torch.randn(2, 16, 32, 32)
    y = blk(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.allclose(y, blk.shortcut(x) + blk.conv_b(blk.conv_a(x)), atol=1e-6)


def test_resnet_basic_block_stride1():
    blk = ResNetBasicBlock(16, 16, 1).eval()
    assert blk.shortcut is None
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(blk(x), x + blk.conv_b(blk.conv_a(x)))
    assert ResNetBasicBlock(16, 32, 1)(x).shape == (2, 32, 8, 8)
    with pytest.raises(ValueError):
        ResNetBasicBlock(16, 32, 3)


# --- registry ---------------------------------------------------------------------

def test_builtin_registry_contents():
    assert set(BUILTIN) <= set(ops.available_ops())
    assert list(ops.DARTS_OPS) == BUILTIN[:8]
    assert list(ops.NB201_OPS) == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    assert all(ops.is_registered(n) for n in ops.NB201_OPS)
    kinds = {n: op_kind(n) for n in BUILTIN}
    assert [n for n, k in kinds.items() if k == "pool"] == ["max_pool_3x3", "avg_pool_3x3"]
    assert kinds["skip_connect"] == "identity" and kinds["sep_conv_3x3"] == "param"


def test_unknown_op_lists_known_ops():
    with pytest.raises(KeyError) as info:
        create_op("sep_conv_9x9", C, C, 1)
    msg = str(info.value)
    assert "sep_conv_9x9" in msg and "sep_conv_3x3" in msg and "nor_conv_1x1" in msg
    with pytest.raises(KeyError):
        op_kind("nope")
    assert not ops.is_registered("nope")


@pytest.fixture
def user_op():
    name = "test_user_conv_1x1"
    yield name
    if ops.is_registered(name):
        unregister_op(name)


def test_register_user_op(user_op):
    @register_op(user_op, kind="param")
    def factory(C_in, C_out, stride, affine, track):
        return nn.Conv2d(C_in, C_out, 1, stride)

    assert ops.is_registered(user_op) and user_op in ops.available_ops()
    assert op_kind(user_op) == "param"
    m = create_op(user_op, 4, 6, 2)
    assert m(torch.randn(1, 4, 8, 8)).shape == (1, 6, 4, 4)

    with pytest.raises(ValueError, match="already registered"):
        register_op(user_op)(factory)
    register_op(user_op, kind="pool", override=True)(lambda *a: nn.Identity())
    assert op_kind(user_op) == "pool" and isinstance(create_op(user_op, 4, 4, 1), nn.Identity)
    unregister_op(user_op)
    assert not ops.is_registered(user_op)


def test_register_validation(user_op):
    with pytest.raises(ValueError, match="kind"):
        register_op(user_op, kind="conv")
    with pytest.raises(ValueError, match="already registered"):
        register_op("sep_conv_3x3")(lambda *a: nn.Identity())
    register_op(user_op)(lambda *a: "not a module")
    with pytest.raises(TypeError):
        create_op(user_op, 4, 4, 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 4), (8, 8), (7, 9)])
def test_window_mean_is_avg_pool_without_padding_forward_and_backward(stride, hw):
    # the compiled form of avg_pool_3x3 must be the same function as AvgPool2d's
    from dslnas.ops.layers import window_mean_3x3
    g = torch.Generator().manual_seed(hw[0] * 10 + hw[1] + stride)
    x = torch.randn(2, 3, *hw, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 3, (hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1, generator=g,
                     dtype=torch.float64)
    ref = nn.AvgPool2d(3, stride, 1, count_include_pad=False)(x)
    (gref,) = torch.autograd.grad((ref * up).sum(), x)
    out = window_mean_3x3(x, stride)
    (gout,) = torch.autograd.grad((out * up).sum(), x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gout, gref, rtol=1e-12, atol=1e-12)


def test_avg_pool_3x3_compiled_equals_eager():
    pool = ops.create_op("avg_pool_3x3", 4, 4, 1)
    assert isinstance(pool, nn.AvgPool2d) and not pool.count_include_pad
    x = torch.randn(3, 4, 6, 5, requires_grad=True)
    eager = pool(x)
    (ge,) = torch.autograd.grad(eager.pow(2).sum(), x)
    compiled = torch.compile(pool)(x)
    (gc,) = torch.autograd.grad(compiled.pow(2).sum(), x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(gc, ge)
    graphs = []

    def record(gm, example_inputs):          # what torch.compile hands its backend
        graphs.append(str(gm.graph))
        return gm
    torch._dynamo.reset()
    torch.compile(pool, backend=record)(x)
    assert graphs and "avg_pool2d" not in graphs[0] and "pad" in graphs[0]
