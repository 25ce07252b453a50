"""LayerNorm, RMSNorm, GroupNorm, InstanceNorm and weight_standardization.

Oracles: float64 NumPy formulas written here, flax.nnx's layers (same epsilon,
axes and mask), and brainstate 0.5 where it is installed (signatures, plain-array
numerics).
"""

import inspect
import re

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import assert_close_f32, f32_bound, group_norm64, norm64
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import unitnorm as un
from unitnorm import functional as F

RNG = np.random.default_rng(0)


def rand(*shape, loc=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


# ----------------------------------------------------------------------------
# float64 NumPy references


def _np_norm(x, raxes, faxes, eps, scale, bias, mask, rms=False):
    return norm64(x, raxes, faxes, eps=eps, scale=scale, bias=bias, mask=mask, rms=rms)


def np_layer_norm(x, raxes, faxes=(-1,), eps=1e-6, scale=None, bias=None, mask=None):
    nd = np.ndim(x)
    raxes = tuple(a % nd for a in np.atleast_1d(raxes))
    faxes = tuple(a % nd for a in np.atleast_1d(faxes))
    return _np_norm(x, raxes, faxes, eps, scale, bias, mask)


def np_rms_norm(x, raxes, faxes=(-1,), eps=1e-6, scale=None, mask=None):
    nd = np.ndim(x)
    raxes = tuple(a % nd for a in np.atleast_1d(raxes))
    faxes = tuple(a % nd for a in np.atleast_1d(faxes))
    return _np_norm(x, raxes, faxes, eps, scale, None, mask, rms=True)


def np_group_norm(x, num_groups, channel=-1, raxes=None, eps=1e-6, scale=None, bias=None, mask=None):
    """Channels moved last, split into (groups, size), statistics over raxes + size."""
    return group_norm64(x, num_groups, channel, raxes, eps=eps, mask=mask, scale=scale, bias=bias)


def np_rms_stat(x, mask):
    w = np.asarray(mask, np.float64)
    return (np.asarray(x, np.float64) ** 2 * w).sum(1) / w.sum(1)


def close(a, b, tol=1e-4):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def close_to_truth(y, truth, x, raxes, *, eps, rms=False, scale=1.0, mask=None):
    """Ours (shifted one-pass or two-pass, float32) against a float64 NumPy truth: the data's own bound.

    With a mask the bound is the counted values' (fewer values, another sigma): the bound over all
    values was 0.9 of the error seen.
    """
    assert_close_f32(y, truth, f32_bound(x, raxes, eps=eps, rms=rms, scale=scale, mask=mask))


def close_to_peer(y, peer, x, raxes, *, eps, rms=False, scale=1.0, mask=None):
    """Ours against a peer's float32 output (flax/brainstate: unshifted E[x^2] - E[x]^2).

    Each is within its own bound of the float64 truth, so they are within the sum.
    """
    ours = f32_bound(x, raxes, eps=eps, rms=rms, scale=scale, mask=mask)
    theirs = f32_bound(x, raxes, eps=eps, rms=rms, scale=scale, unshifted=True, mask=mask)
    assert_close_f32(y, peer, ours + theirs)


def grouped(x, num_groups, channel=-1):
    """``x`` with its channel axis moved last and split into (groups, size), and the axes a group reduces."""
    xt = np.moveaxis(np.asarray(x), channel, -1)
    g = xt.reshape(*xt.shape[:-1], num_groups, xt.shape[-1] // num_groups)
    return g, (*range(1, xt.ndim - 1), xt.ndim)


# ----------------------------------------------------------------------------
# parity with flax.nnx and float64 NumPy

LN_AXES = [(-1, -1), ((-2, -1), -1), ((-2, -1), (-2, -1)), (-2, -1)]


def _flax(cls, n, x, scale=None, bias=None, mask=None, **kw):
    layer = cls(n, rngs=nnx.Rngs(0), **kw)
    if scale is not None:
        layer.scale[...] = jnp.asarray(scale).reshape(layer.scale[...].shape)
    if bias is not None:
        layer.bias[...] = jnp.asarray(bias).reshape(layer.bias[...].shape)
    return layer(jnp.asarray(x), mask=mask)


def _mask(shape, seed=3):
    m = np.random.default_rng(seed).random(shape) > 0.3
    m[..., 0] = True  # every slice keeps at least one element
    return m


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("raxes, faxes", LN_AXES)
def test_layer_norm_matches_flax_and_numpy(raxes, faxes, use_mask):
    x = rand(4, 5, 6, loc=2.0, scale=3.0)
    fsize = int(np.prod([x.shape[a] for a in np.atleast_1d(faxes)]))
    scale, bias = rand(fsize, seed=1) + 1.0, rand(fsize, seed=2)
    mask = _mask(x.shape) if use_mask else None
    fshape = tuple(x.shape[a] for a in np.atleast_1d(faxes))
    layer = un.LayerNorm(
        (5, 6), raxes, faxes, epsilon=1e-3, scale_init=scale.reshape(fshape), bias_init=bias.reshape(fshape)
    )
    y = layer(jnp.asarray(x), mask=mask)
    ref = _flax(
        nnx.LayerNorm, fsize, x, scale, bias, mask, epsilon=1e-3, reduction_axes=raxes, feature_axes=faxes
    )
    big = np.abs(scale).max()
    close_to_peer(y, ref, x, raxes, eps=1e-3, scale=big, mask=mask)
    truth = np_layer_norm(x, raxes, faxes, 1e-3, scale, bias, mask)
    close_to_truth(y, truth, x, raxes, eps=1e-3, scale=big, mask=mask)
    yf = F.layer_norm(
        jnp.asarray(x), scale, bias, reduction_axes=raxes, feature_axes=faxes, epsilon=1e-3, mask=mask
    )
    close(yf, y, 1e-6)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("raxes, faxes", LN_AXES)
def test_rms_norm_matches_flax_and_numpy(raxes, faxes, use_mask):
    x = rand(4, 5, 6, loc=1.0, scale=2.0)
    fsize = int(np.prod([x.shape[a] for a in np.atleast_1d(faxes)]))
    scale = rand(fsize, seed=1) + 1.0
    mask = _mask(x.shape) if use_mask else None
    fshape = tuple(x.shape[a] for a in np.atleast_1d(faxes))
    layer = un.RMSNorm(
        (5, 6), epsilon=1e-3, reduction_axes=raxes, feature_axes=faxes, scale_init=scale.reshape(fshape)
    )
    y = layer(jnp.asarray(x), mask=mask)
    ref = _flax(
        nnx.RMSNorm, fsize, x, scale, None, mask, epsilon=1e-3, reduction_axes=raxes, feature_axes=faxes
    )
    big = np.abs(scale).max()
    close_to_peer(y, ref, x, raxes, eps=1e-3, rms=True, scale=big, mask=mask)
    close_to_truth(
        y, np_rms_norm(x, raxes, faxes, 1e-3, scale, mask), x, raxes, eps=1e-3, rms=True, scale=big, mask=mask
    )
    close(
        F.rms_norm(jnp.asarray(x), scale, reduction_axes=raxes, feature_axes=faxes, epsilon=1e-3, mask=mask),
        y,
        1e-6,
    )
    assert layer.scale is layer.weight and set(layer.scale.value) == {"scale"}


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize(
    "groups", [dict(num_groups=3), dict(num_groups=None, group_size=2), dict(num_groups=1)]
)
def test_group_norm_matches_flax_and_numpy(groups, use_mask):
    x = rand(3, 4, 5, 6, loc=-1.0, scale=2.0)
    scale, bias = rand(6, seed=1) + 1.0, rand(6, seed=2)
    mask = _mask(x.shape) if use_mask else None
    layer = un.GroupNorm((4, 5, 6), epsilon=1e-3, scale_init=scale, bias_init=bias, **groups)
    y = layer(jnp.asarray(x), mask=mask)
    ref = _flax(nnx.GroupNorm, 6, x, scale, bias, mask, epsilon=1e-3, **groups)
    xg, gaxes = grouped(x, layer.num_groups)
    mg = None if mask is None else grouped(mask, layer.num_groups)[0]
    big = np.abs(scale).max()
    close_to_peer(y, ref, xg, gaxes, eps=1e-3, scale=big, mask=mg)
    truth = np_group_norm(x, layer.num_groups, eps=1e-3, scale=scale, bias=bias, mask=mask)
    close_to_truth(y, truth, xg, gaxes, eps=1e-3, scale=big, mask=mg)
    close(F.group_norm(jnp.asarray(x), scale, bias, epsilon=1e-3, mask=mask, **groups), y, 1e-6)


@pytest.mark.parametrize("use_mask", [False, True])
def test_group_norm_multi_axis_in_size_matches_flax(use_mask):
    """brainstate 0.5 asserts a 1-D in_size; (length, channels) must work."""
    x = rand(3, 7, 8, loc=5.0)
    mask = _mask(x.shape) if use_mask else None
    layer = un.GroupNorm(in_size=(7, 8), num_groups=4)
    close_to_peer(
        layer(jnp.asarray(x), mask=mask),
        _flax(nnx.GroupNorm, 8, x, mask=mask, num_groups=4),
        *grouped(x, 4),
        eps=1e-6,
        mask=None if mask is None else grouped(mask, 4)[0],
    )
    assert layer.weight.value["scale"].shape == (8,)


def test_group_norm_channel_axis_not_last_and_reduction_axes():
    x = rand(3, 6, 5, loc=2.0)  # (batch, channels, length)
    y = un.GroupNorm((6, 5), feature_axis=-2, num_groups=2)(jnp.asarray(x))
    close(y, np_group_norm(x, 2, channel=1))
    # explicit reduction axes (flax's convention: they list the channel axis)
    x4 = rand(2, 3, 4, 6)
    y = un.GroupNorm((3, 4, 6), num_groups=3, reduction_axes=(-2, -1))(jnp.asarray(x4))
    close(y, np_group_norm(x4, 3, raxes=(2, 3)))
    # flax (and brainstate) repeat the group statistics along axis 1, which is right only when
    # every non-batch axis is reduced; compare with them there
    y = un.GroupNorm((3, 4, 6), num_groups=3, reduction_axes=(-3, -2, -1))(jnp.asarray(x4))
    close_to_peer(
        y, _flax(nnx.GroupNorm, 6, x4, num_groups=3, reduction_axes=(1, 2, 3)), *grouped(x4, 3), eps=1e-6
    )


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("faxes", [-1, (-2, -1)])
def test_instance_norm_matches_flax_and_numpy(faxes, use_mask):
    x = rand(3, 4, 5, 6, loc=0.5)  # flax's E[x^2] - E[x]^2 loses digits further from zero
    fsize = int(np.prod([x.shape[a] for a in np.atleast_1d(faxes)]))
    fshape = tuple(x.shape[a] for a in np.atleast_1d(faxes))
    scale, bias = rand(fsize, seed=1) + 1.0, rand(fsize, seed=2)
    mask = _mask(x.shape) if use_mask else None
    layer = un.InstanceNorm(
        (4, 5, 6), faxes, epsilon=1e-3, scale_init=scale.reshape(fshape), bias_init=bias.reshape(fshape)
    )
    y = layer(jnp.asarray(x), mask=mask)
    ref = _flax(nnx.InstanceNorm, fsize, x, scale, bias, mask, epsilon=1e-3, feature_axes=faxes)
    raxes = tuple(a for a in (1, 2, 3) if a not in np.atleast_1d(faxes) % 4)
    big = np.abs(scale).max()
    close_to_peer(y, ref, x, raxes, eps=1e-3, scale=big, mask=mask)
    truth = np_layer_norm(x, raxes, faxes, 1e-3, scale, bias, mask)
    close_to_truth(y, truth, x, raxes, eps=1e-3, scale=big, mask=mask)
    yf = F.instance_norm(jnp.asarray(x), scale, bias, feature_axes=faxes, epsilon=1e-3, mask=mask)
    close(yf, y, 1e-6)


def test_group_norm_special_cases():
    x = jnp.asarray(rand(2, 5, 6))
    close(un.GroupNorm((5, 6), num_groups=1)(x), un.LayerNorm((5, 6), (-2, -1))(x), 1e-5)
    close(un.GroupNorm((5, 6), num_groups=6)(x), un.InstanceNorm((5, 6))(x), 1e-5)


def test_masked_out_values_do_not_leak():
    x = rand(4, 6)
    mask = _mask(x.shape)
    bad = np.where(mask, x, np.nan)
    for f in (F.layer_norm, F.rms_norm, lambda v, mask: F.group_norm(v, num_groups=2, mask=mask)):
        y = f(jnp.asarray(bad), mask=mask)
        close(np.asarray(y)[mask], np.asarray(f(jnp.asarray(x), mask=mask))[mask], 1e-6)
    # the mean square itself: masked NaNs reach neither its value nor its gradient
    g = jax.grad(lambda v: F.mean_square(v, (1,), jnp.asarray(mask)).sum())(jnp.asarray(bad))
    assert np.isfinite(np.asarray(g)).all() and (np.asarray(g)[~mask] == 0).all()
    close(F.mean_square(jnp.asarray(bad), (1,), jnp.asarray(mask)), np_rms_stat(x, mask), 1e-6)


@pytest.mark.parametrize("raxes", [(1, 2), (2,)], ids=["default", "channels only"])
def test_masked_group_norm_far_from_zero_and_empty_groups(raxes):
    # the masked path sums per channel, then per group (two passes): against the float64 group norm
    # of the counted elements, far from zero; a group with nothing counted gets NaN, the rest not
    x = rand(3, 5, 8, loc=-65.0, scale=0.01, seed=7)
    mask = _mask(x.shape, seed=8)
    mask[0, :, :4] = False  # sample 0, group 0: nothing counted (with raxes (2,), at every time step)
    bad = np.where(mask, x, np.nan)
    y = np.asarray(F.group_norm(jnp.asarray(bad), num_groups=2, reduction_axes=raxes, mask=mask))
    assert np.isnan(y[0, :, :4]).all()
    keep = np.ones(x.shape, bool)
    keep[0, :, :4] = False
    with np.errstate(invalid="ignore", divide="ignore"):  # the empty group: 0 / 0 in the oracle too
        truth = np_group_norm(x, 2, raxes=raxes, mask=mask)
    ok = keep & mask
    x_ok = np.where(keep, x, -65.0)  # the bound from the counted data, the empty group's values aside
    close_to_truth(np.where(ok, y, 0.0), np.where(ok, truth, 0.0), x_ok, raxes, eps=1e-6)


# ----------------------------------------------------------------------------
# brainstate: signatures and plain-array numerics

BRAINSTATE_NAMES = {
    "LayerNorm": ["in_size", "reduction_axes", "feature_axes", "epsilon", "use_bias", "use_scale",
                  "bias_init", "scale_init", "axis_name", "axis_index_groups", "use_fast_variance", "dtype",
                  "param_type"],
    "RMSNorm": ["in_size", "epsilon", "dtype", "use_scale", "scale_init", "reduction_axes", "feature_axes",
                "axis_name", "axis_index_groups", "use_fast_variance", "param_type"],
    "GroupNorm": ["in_size", "feature_axis", "num_groups", "group_size", "epsilon", "dtype", "use_bias",
                  "use_scale", "bias_init", "scale_init", "reduction_axes", "axis_name", "axis_index_groups",
                  "use_fast_variance", "param_type"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BRAINSTATE_NAMES))
def test_signature_follows_brainstate(name):
    ours = list(inspect.signature(getattr(un, name).__init__).parameters.values())[1:]
    names = BRAINSTATE_NAMES[name]
    assert [p.name for p in ours[: len(names)]] == names
    assert [p.name for p in ours[len(names) :]] == ["name", "in_unit", "param_dtype"]
    bst = pytest.importorskip("brainstate")
    theirs = list(inspect.signature(getattr(bst.nn, name).__init__).parameters.values())[1:]
    assert [p.name for p in theirs] == names
    for a, b in zip(ours, theirs, strict=False):
        assert a.kind == b.kind, a.name
        if isinstance(b.default, (int, float, bool, type(None))) and not isinstance(b.default, type):
            assert a.default == b.default, a.name


def test_brainstate_numerics_on_plain_arrays():
    bst = pytest.importorskip("brainstate")
    x = jnp.asarray(rand(3, 4, 5, 6, loc=1.0))
    close_to_peer(
        un.LayerNorm(x.shape, reduction_axes=(1, 2, 3))(x),
        bst.nn.LayerNorm(x.shape, reduction_axes=(1, 2, 3))(x),
        x,
        (1, 2, 3),
        eps=1e-6,
    )
    close_to_peer(un.RMSNorm(x.shape[1:])(x), bst.nn.RMSNorm((6,))(x), x, -1, eps=1e-6, rms=True)
    # brainstate 0.5 asserts a 1-D in_size for GroupNorm, so it gets (channels,) and reduces axes 1..3
    close_to_peer(
        un.GroupNorm(x.shape[1:], num_groups=3)(x),
        bst.nn.GroupNorm((6,), num_groups=3)(x),
        *grouped(x, 3),
        eps=1e-6,
    )
    w = jnp.asarray(rand(3, 4, 5))
    close_to_peer(un.weight_standardization(w), bst.nn.weight_standardization(w), w, (0, 1), eps=1e-4)
    gain = jnp.asarray(rand(5, seed=4))
    big = float(np.abs(gain).max())
    theirs = bst.nn.weight_standardization(w, gain=gain)
    close_to_peer(un.weight_standardization(w, gain=gain), theirs, w, (0, 1), eps=1e-4, scale=big)


def test_brainstate_examples_run_unchanged():
    x = jnp.asarray(rand(3, 4, 5, 6))
    y1 = un.GroupNorm(x.shape, num_groups=1)(x)
    y2 = un.LayerNorm(x.shape, reduction_axes=(1, 2, 3))(x)
    # in_size = x.shape: x is one "sample"; (1, 2, 3) are its axes 1..3, as in brainstate
    close(y2, np_layer_norm(np.asarray(x), (1, 2, 3)))
    # GroupNorm's default reduces every axis of in_size
    close(y1, np_layer_norm(np.asarray(x), (0, 1, 2, 3)))
    layer = un.LayerNorm((10, 20), reduction_axes=-1, feature_axes=-1)
    assert layer(jnp.ones((5, 10, 20))).shape == (5, 10, 20)
    assert un.RMSNorm(in_size=(10,), use_scale=False).scale is None
    assert un.GroupNorm((12,), num_groups=None, group_size=4).num_groups == 3


# ----------------------------------------------------------------------------
# the input-shape rule


@pytest.mark.parametrize(
    "make",
    [
        lambda: un.LayerNorm((5, 6), (-2, -1)),
        lambda: un.RMSNorm((5, 6)),
        lambda: un.GroupNorm((5, 6), num_groups=2),
        lambda: un.InstanceNorm((5, 6)),
    ],
)
def test_unbatched_input_equals_batched(make):
    x = jnp.asarray(rand(3, 5, 6, loc=1.0))
    layer = make()
    yb = layer(x)
    for i in range(3):
        close(layer(x[i]), yb[i], 1e-6)
    mask = _mask(x.shape)
    close(layer(x[1], mask=mask[1]), layer(x, mask=mask)[1], 1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: un.LayerNorm((5, 6), (-2, -1)),
        lambda: un.RMSNorm((5, 6)),
        lambda: un.InstanceNorm((5, 6)),
        lambda: un.LayerNorm((5, 6), reduction_axes=-1, feature_axes=0),  # feature axes index in_size
    ],
)
def test_several_leading_batch_axes(make):
    """(*batch, *in_size): each leading slice normalized on its own, as with one batch axis."""
    x = jnp.asarray(rand(2, 3, 5, 6, loc=1.0))
    layer = make()
    flat = layer(x.reshape(6, 5, 6)).reshape(2, 3, 5, 6)
    close(layer(x), flat, 1e-6)
    mask = _mask(x.shape)
    close(layer(x, mask=mask), layer(x.reshape(6, 5, 6), mask=mask.reshape(6, 5, 6)).reshape(x.shape), 1e-6)


def test_non_negative_feature_axes_index_in_size():
    """feature_axes=0 of in_size=(5, 6) is the 5-axis with and without a batch axis (as in BatchNorm)."""
    x = rand(3, 5, 6, loc=1.0)
    scale = rand(5, seed=1) + 2.0
    layer = un.LayerNorm((5, 6), reduction_axes=-1, feature_axes=0, scale_init=scale)
    assert layer.weight.value["scale"].shape == (5,)
    close(layer(jnp.asarray(x)), np_layer_norm(x, -1, 1, scale=scale))
    close(layer(jnp.asarray(x[0])), np_layer_norm(x, -1, 1, scale=scale)[0])
    gn = un.GroupNorm((6, 5), feature_axis=0, num_groups=2)
    close(gn(jnp.asarray(x.transpose(0, 2, 1))), np_group_norm(x.transpose(0, 2, 1), 2, channel=1))


def test_reduction_axes_beyond_in_size_are_batched_positions():
    """brainstate's LayerNorm((5, 6), reduction_axes=(1, 2)) on (batch, 5, 6): axes 1 and 2 of the input."""
    x = rand(3, 5, 6, loc=1.0)
    layer = un.LayerNorm((5, 6), reduction_axes=(1, 2))
    close(layer(jnp.asarray(x)), np_layer_norm(x, (1, 2)))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 5, 6\), got \(5, 6\)"):
        layer(jnp.asarray(x[0]))


def test_non_negative_axes_fix_the_input_shape():
    layer = un.LayerNorm((5, 6), reduction_axes=(0, 1))
    x = jnp.asarray(rand(5, 6))
    close(layer(x), np_layer_norm(np.asarray(x), (0, 1)))
    with pytest.raises(
        ValueError,
        match=r"expected input of shape \(5, 6\), got \(2, 5, 6\); its non-negative reduction_axes",
    ):
        layer(jnp.ones((2, 5, 6)))
    # the same axes written negatively accept the batch axis
    neg = un.LayerNorm((5, 6), reduction_axes=(-2, -1))
    close(neg(jnp.stack([x, x]))[0], layer(x), 1e-6)


# ----------------------------------------------------------------------------
# units


UNITS = [u.mV, u.nA, u.uvolt, u.nS]
LAYERS = {
    "LayerNorm": lambda **kw: un.LayerNorm((5, 6), **kw),
    "RMSNorm": lambda **kw: un.RMSNorm((5, 6), **kw),
    "GroupNorm": lambda **kw: un.GroupNorm((5, 6), num_groups=3, **kw),
    # brainstate's form: in_size is the channels, (batch, 5, 6) is (batch, spatial, channels)
    "GroupNorm-channels": lambda **kw: un.GroupNorm(6, feature_axis=0, num_groups=3, **kw),
    "InstanceNorm": lambda **kw: un.InstanceNorm((5, 6), **kw),
}


@pytest.mark.parametrize("unit", UNITS, ids=str)
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_quantity_input_gives_dimensionless_plain_array(kind, unit):
    x = rand(3, 5, 6, loc=-65.0, scale=4.0)
    layer = LAYERS[kind](epsilon=1e-2)
    y = layer(jnp.asarray(x) * unit)
    assert not isinstance(y, u.Quantity) and isinstance(y, jax.Array)
    assert layer.in_unit == unit
    # a float epsilon is read in the reference unit squared: the same as bare mantissas
    close(y, LAYERS[kind](epsilon=1e-2)(jnp.asarray(x)), 1e-5)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_affine_output_takes_scale_unit(kind):
    x = jnp.asarray(rand(3, 5, 6)) * u.nA
    if kind == "RMSNorm":
        layer = LAYERS[kind](scale_init=un.init.Constant(2.0 * u.mV))
        ref = 2.0 * np.asarray(LAYERS[kind]()(x))
    else:
        layer = LAYERS[kind](
            scale_init=un.init.Constant(2.0 * u.mV), bias_init=un.init.Constant(-0.065 * u.volt)
        )
        ref = 2.0 * np.asarray(LAYERS[kind]()(x)) - 65.0
    y = layer(x)
    assert y.unit == u.mV
    close(y.mantissa, ref, 1e-4)


def test_in_unit_converts_compatible_input():
    x = rand(3, 5, 6, loc=-65.0, scale=4.0)
    for kind, make in LAYERS.items():
        layer = make(in_unit=u.mV, epsilon=1e-2)
        y_v = layer(jnp.asarray(x / 1000) * u.volt)
        y_mv = make(in_unit=u.mV, epsilon=1e-2)(jnp.asarray(x) * u.mV)
        close(y_v, y_mv, 1e-4)
        assert layer.in_unit == u.mV, kind


def test_float_epsilon_is_read_in_the_reference_unit():
    """Documented trap: a float epsilon means different things in V and mV layers."""
    x = rand(2, 6, scale=0.5)  # spread ~0.5 mV = 5e-4 V
    y_mv = un.LayerNorm(6, epsilon=1e-6)(jnp.asarray(x) * u.mV)
    y_v = un.LayerNorm(6, epsilon=1e-6)((jnp.asarray(x) * u.mV).in_unit(u.volt))
    assert float(jnp.max(jnp.abs(y_mv - y_v))) > 0.5
    eps = 1e-6 * u.mV**2
    close(
        un.LayerNorm(6, epsilon=eps)(jnp.asarray(x) * u.mV),
        un.LayerNorm(6, epsilon=eps)((jnp.asarray(x) * u.mV).in_unit(u.volt)),
    )


def test_functional_units():
    x = jnp.asarray(rand(2, 4, 6)) * u.mV
    y = F.layer_norm(x, scale=jnp.ones(6) * u.nA, bias=jnp.zeros(6) * u.pA)
    assert y.unit == u.nA
    assert F.rms_norm(x, scale=2 * u.mV).unit == u.mV
    assert not isinstance(F.group_norm(x, num_groups=2), u.Quantity)
    assert not isinstance(F.instance_norm(x), u.Quantity)
    same = F.layer_norm(x, epsilon=1e-3 * u.mV**2)
    close(F.layer_norm(x.in_unit(u.volt), epsilon=1e-9 * u.volt**2), same)


# ----------------------------------------------------------------------------
# dtypes: bf16 in, bf16 out; complex keeps its imaginary part; ints promote

FUNCS = {
    "layer_norm": lambda x: F.layer_norm(x),
    "rms_norm": lambda x: F.rms_norm(x),
    "group_norm": lambda x: F.group_norm(x, num_groups=3),
    "instance_norm": lambda x: F.instance_norm(x),
}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_half_precision_in_half_out(kind, dtype):
    x = jnp.asarray(rand(3, 5, 6))  # bf16 spacing near 65 is 0.5: keep the data near zero
    y32 = LAYERS[kind]()(x * u.mV)
    y = LAYERS[kind]()(x.astype(dtype) * u.mV)
    assert y.dtype == dtype
    close(np.asarray(y, np.float32), y32, 0.1)


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_functional_dtypes(name):
    x = jnp.asarray(rand(3, 5, 6))
    assert FUNCS[name](x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert FUNCS[name](jnp.arange(90).reshape(3, 5, 6)).dtype == jnp.float32
    assert un.weight_standardization(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_complex_input_keeps_imaginary_part(name):
    x = rand(3, 5, 6) + 1j * rand(3, 5, 6, seed=9)
    y = FUNCS[name](jnp.asarray(x, jnp.complex64) * u.mV)
    assert jnp.iscomplexobj(y)
    if name == "layer_norm":
        ref = np_layer_norm(x, -1)
    elif name == "rms_norm":
        ref = np_rms_norm(x, -1)
    elif name == "instance_norm":
        ref = np_layer_norm(x, (1,))
    else:
        g = x.reshape(3, 5, 3, 2)
        ref = _np_norm(g, (1, 3), (), 1e-6, None, None, None).reshape(x.shape)
    close(y, ref)
    assert float(jnp.abs(jnp.imag(y)).max()) > 0.1


# ----------------------------------------------------------------------------
# properties (hypothesis)

FIXED = (2, 5, 6)
finite = st.floats(-20, 20, width=32, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@given(data=hnp.arrays(np.float32, FIXED, elements=finite))
def test_unit_invariance_with_quantity_epsilon(kind, data):
    eps = 1e-2 * u.mV**2
    x = jnp.asarray(data) * u.mV
    y_mv = LAYERS[kind](epsilon=eps)(x)
    y_v = LAYERS[kind](epsilon=eps)(x.in_unit(u.volt))
    close(y_v, y_mv, 2e-4)


@pytest.mark.parametrize("kind", ["LayerNorm", "GroupNorm", "GroupNorm-channels", "InstanceNorm", "RMSNorm"])
@given(
    seed=st.integers(0, 2**16),
    log_a=st.floats(-2, 2),
    b_over_a=st.floats(-20, 20),
)
def test_affine_invariance(kind, seed, log_a, b_over_a):
    """LayerNorm/GroupNorm/InstanceNorm: y(a x + b) = y(x); RMSNorm: y(a x) = y(x) (a > 0)."""
    a = 10.0**log_a
    b = 0.0 if kind == "RMSNorm" else a * b_over_a
    x = jnp.asarray(rand(*FIXED, seed=seed))
    layer = LAYERS[kind](epsilon=0.0)
    close(layer(a * x + b), layer(x), 5e-4)


@given(seed=st.integers(0, 2**16), log_scale=st.floats(-2, 2), loc_over_scale=st.floats(-100, 100))
def test_normalized_mean_zero_var_one(seed, log_scale, loc_over_scale):
    # float32 data hold ~7 digits: keep the offset within 100 spreads so the data themselves are exact enough
    scale = 10.0**log_scale
    x = jnp.asarray(rand(2, 16, 6, loc=scale * loc_over_scale, scale=scale, seed=seed))
    for y, axes in (
        (un.LayerNorm((16, 6), (-2, -1), epsilon=0.0)(x), (1, 2)),
        (un.InstanceNorm((16, 6), epsilon=0.0)(x), (1,)),
    ):
        close(y.mean(axes), 0.0, 2e-4)
        close(y.var(axes), 1.0, 2e-3)
    g = un.GroupNorm((16, 6), num_groups=3, epsilon=0.0)(x).reshape(2, 16, 3, 2)
    close(g.mean((1, 3)), 0.0, 2e-4)
    close(g.var((1, 3)), 1.0, 2e-3)
    r = un.RMSNorm((16, 6), epsilon=0.0)(x)
    close((r**2).mean(-1), 1.0, 2e-3)


# ----------------------------------------------------------------------------
# transforms: jit, grad, vmap with axis_name


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_jit_returns_updated_layer(kind):
    x = jnp.asarray(rand(3, 5, 6)) * u.mV
    layer = LAYERS[kind]()
    y, out = jax.jit(lambda layer, x: (layer(x), layer))(layer, x)
    close(y, LAYERS[kind]()(x), 1e-6)
    assert out.in_unit == u.mV and layer.in_unit is None  # adopted in the returned layer only


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_grad_is_finite(kind):
    x = jnp.asarray(rand(3, 5, 6))
    target = jnp.asarray(rand(3, 5, 6, seed=5))
    grads = jax.grad(lambda layer, x: jnp.sum((layer(x) - target) ** 2 * jnp.arange(6.0)), argnums=(0, 1))(
        LAYERS[kind](), x
    )
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


@pytest.mark.parametrize("use_mask", [False, True])
def test_vmap_axis_name_combines_statistics(use_mask):
    x = rand(4, 3, 6, loc=2.0)
    mask = _mask(x.shape, seed=11) if use_mask else np.ones(x.shape, bool)
    mask[1, :, :4] = False  # devices hold different numbers of valid elements
    xj, mj = jnp.asarray(x), jnp.asarray(mask)

    def per_device(fn):
        return jax.vmap(fn, axis_name="d")(xj, mj)

    close(
        per_device(lambda v, m: F.layer_norm(v, mask=m, axis_name="d")), np_layer_norm(x, (0, 2), mask=mask)
    )
    close(per_device(lambda v, m: F.rms_norm(v, mask=m, axis_name="d")), np_rms_norm(x, (0, 2), mask=mask))
    close(
        per_device(lambda v, m: F.group_norm(v, num_groups=2, mask=m, axis_name="d")),
        np_group_norm(x, 2, raxes=(0, 2), mask=mask),  # per device, axis 0 of v is its batch axis
    )
    layer = un.LayerNorm(6, axis_name="d")
    close(per_device(lambda v, m: layer(v, mask=m)), np_layer_norm(x, (0, 2), mask=mask))


@pytest.mark.parametrize(
    ("raxes", "truth_raxes"),
    [(None, (0, 2, 3)), ((0, 2), (0, 1, 3))],  # per device (batch, time, channels); x adds the device axis
    ids=["default", "partial reduction_axes"],
)
def test_group_norm_across_a_vmapped_axis_without_a_mask(raxes, truth_raxes):
    # the unmasked path sums per channel, then per group, then merges the devices' (count, mean, M2):
    # far from zero, against the float64 group norm of all devices' data together
    x = rand(4, 3, 5, 6, loc=-65.0, scale=0.01, seed=3)
    kw = {} if raxes is None else {"reduction_axes": raxes}
    y = jax.vmap(lambda v: F.group_norm(v, num_groups=2, axis_name="d", **kw), axis_name="d")(jnp.asarray(x))
    truth = np_group_norm(x, 2, raxes=truth_raxes)
    close_to_truth(y, truth, x, truth_raxes, eps=1e-6)


# ----------------------------------------------------------------------------
# weight standardization


def np_ws(w, eps, gain=None, out_axis=-1):
    w = np.asarray(w, np.float64)
    axes = tuple(a for a in range(w.ndim) if a != out_axis % w.ndim)
    fan_in = np.prod([w.shape[a] for a in axes])
    mean, var = w.mean(axes, keepdims=True), w.var(axes, keepdims=True)
    y = (w - mean) / np.sqrt(np.maximum(var * fan_in, eps))
    if gain is not None:
        shape = [1] * w.ndim
        shape[out_axis] = -1
        y = y * np.asarray(gain).reshape(shape)
    return y


@pytest.mark.parametrize("out_axis", [-1, 0, 1])
def test_weight_standardization_quantity(out_axis):
    w = rand(3, 4, 5, loc=2.0) * u.nS
    y = un.weight_standardization(w, eps=1e-4 * u.nS**2, out_axis=out_axis)
    assert not isinstance(y, u.Quantity)
    axes = tuple(a for a in range(3) if a != out_axis % 3)
    fan_in = np.prod([w.shape[a] for a in axes])
    close(y.mean(axes), 0.0, 1e-5)
    close(y.var(axes) * fan_in, 1.0, 1e-4)
    close(y, np_ws(w.mantissa, 1e-4, out_axis=out_axis))
    n = w.shape[out_axis]
    gain = jnp.asarray(rand(n, seed=3)) * u.mV
    g = un.weight_standardization(w, eps=1e-4 * u.nS**2, gain=gain, out_axis=out_axis)
    assert g.unit == u.mV
    close(g.mantissa, np_ws(w.mantissa, 1e-4, gain.mantissa, out_axis))
    assert F.weight_standardization is un.weight_standardization


def test_weight_standardization_epsilon_units():
    w = rand(6, 2) * 1e-3 * u.nS  # tiny weights: fan_in * var ~ 6e-6 nS^2
    # a float eps is read in w's unit squared; a Quantity eps is converted
    a = un.weight_standardization(w, eps=1e-4)
    b = un.weight_standardization(w, eps=1e-4 * u.nS**2)
    c = un.weight_standardization(w, eps=1e2 * u.psiemens**2)
    close(a, b, 1e-6)
    close(c, np_ws(w.mantissa, 1e-4), 1e-5)
    close(a, np_ws(w.mantissa, 1e-4))  # the eps bound is active here
    assert float(jnp.abs(a).max()) < 0.5
    z = un.weight_standardization(jnp.ones((4, 3)) * u.mV)  # zero variance: eps keeps it finite
    close(z, 0.0)
    assert un.weight_standardization(jnp.asarray(rand(4, 3)), gain=2.0 * u.mV).unit == u.mV


# ----------------------------------------------------------------------------
# errors: type, message, and nothing changed


def snapshot(layer):
    leaves = [np.array(v) for v in jax.tree_util.tree_leaves(layer)]
    return leaves, jax.tree_util.tree_structure(layer), layer.in_unit


CONSTRUCT_ERRORS = [
    ("groups do not divide", lambda: un.GroupNorm(6, num_groups=4), ValueError, r"channels=6, num_groups=4"),
    ("group_size does not divide", lambda: un.GroupNorm(6, num_groups=None, group_size=4), ValueError,
     r"channels=6, group_size=4"),
    ("neither groups nor size", lambda: un.GroupNorm(6, num_groups=None), ValueError,
     r"exactly one of num_groups and group_size; got num_groups=None, group_size=None"),
    ("both groups and size", lambda: un.GroupNorm(6, num_groups=2, group_size=3), ValueError,
     r"got num_groups=2, group_size=3"),
    ("zero groups", lambda: un.GroupNorm(6, num_groups=0), ValueError, r"positive int, got num_groups=0"),
    ("float groups", lambda: un.GroupNorm(6, num_groups=2.0), TypeError,
     r"num_groups must be an int, got float"),
    ("more groups than channels", lambda: un.GroupNorm((4, 6), num_groups=32), ValueError,
     r"channels=6, num_groups=32"),
    ("two channel axes", lambda: un.GroupNorm((4, 6), feature_axis=(0, 1), num_groups=2), ValueError,
     r"one channel axis"),
    ("reduction without channel", lambda: un.GroupNorm((4, 6), num_groups=2, reduction_axes=-2), ValueError,
     r"must include the channel axis"),
    ("brainstate positions with the batch axis",
     lambda: un.GroupNorm(8, num_groups=2, reduction_axes=(0, 1, -1)), ValueError,
     r"axis 0 is the batch axis, which is never reduced"),
    ("spatial reduction without channel", lambda: un.GroupNorm(8, num_groups=2, reduction_axes=(-3, -2)),
     ValueError, r"must include the channel axis \(input axis -1"),
    ("integer output dtype", lambda: un.RMSNorm(6, dtype=jnp.int16), TypeError,
     r"RMSNorm: dtype must be a floating dtype .*got int16"),
    ("axis outside in_size", lambda: un.LayerNorm((5, 6), reduction_axes=-3), ValueError,
     r"LayerNorm: reduction_axes=-3 is out of range.*in_size=\(5, 6\)"),
    ("repeated axis", lambda: un.RMSNorm(6, reduction_axes=(-1, 0)), ValueError, r"must not repeat"),
    ("non-int axis", lambda: un.InstanceNorm(6, feature_axes=1.0), TypeError,
     r"feature_axes must be an int or a sequence of ints, got float 1.0"),
    ("non-int axis in a tuple", lambda: un.LayerNorm((5, 6), reduction_axes=(-1, 0.5)), TypeError,
     r"reduction_axes must be ints, got 0.5"),
    ("bad in_size", lambda: un.LayerNorm((0, 6)), ValueError, r"in_size must hold positive ints"),
    ("negative epsilon", lambda: un.LayerNorm(6, epsilon=-1e-3), ValueError,
     r"epsilon must be finite and >= 0"),
    ("epsilon unit vs in_unit", lambda: un.LayerNorm(6, epsilon=1e-3 * u.nA**2, in_unit=u.mV),
     u.UnitMismatchError, r"epsilon must be voltage squared \(mV\^2\), got current squared \(nA\^2\)"),
    ("scale and bias dims", lambda: un.LayerNorm(6, scale_init=un.init.Constant(1 * u.mV),
                                                 bias_init=un.init.Constant(1 * u.nA)),
     u.UnitMismatchError, r"bias must be scale's unit, voltage \(mV\), got current \(nA\)"),
    ("bias with unit and no scale", lambda: un.GroupNorm(6, num_groups=2, use_scale=False,
                                                         bias_init=un.init.Constant(1 * u.mV)),
     u.UnitMismatchError, r"bias must be dimensionless \(no scale\), got voltage \(mV\)"),
    ("in_unit not a unit", lambda: un.InstanceNorm(6, in_unit="mV"), TypeError,
     r"in_unit must be a brainunit Unit"),
    ("scale of wrong shape", lambda: un.LayerNorm(6, scale_init=jnp.ones(5)), ValueError,
     r"scale_init:.*\(5,\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    "make, error, pattern", [c[1:] for c in CONSTRUCT_ERRORS], ids=[c[0] for c in CONSTRUCT_ERRORS]
)
def test_construction_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def mv_layer():
    layer = un.LayerNorm((5, 6), epsilon=1e-2 * u.mV**2, scale_init=rand(6) + 1.0)
    layer(jnp.asarray(rand(2, 5, 6)) * u.mV)
    return layer


def fresh_layer():
    return un.GroupNorm((5, 6), num_groups=2, epsilon=1e-2 * u.mV**2)


CALL_ERRORS = [
    ("wrong shape", mv_layer, lambda layer: layer(jnp.ones((2, 5, 5)) * u.mV), ValueError,
     r"LayerNorm expected input of shape \(\*batch, 5, 6\) or \(5, 6\), got \(2, 5, 5\)"),
    ("wrong rank", mv_layer, lambda layer: layer(jnp.ones((6,)) * u.mV), ValueError,
     r"got \(6,\)"),
    ("another dimension", mv_layer, lambda layer: layer(jnp.ones((2, 5, 6)) * u.nA), u.UnitMismatchError,
     r"LayerNorm\(in_unit=mV\) received current \(nA\)"),
    ("plain array into mV layer", mv_layer, lambda layer: layer(jnp.ones((2, 5, 6))), u.UnitMismatchError,
     r"plain array.*voltage \(mV\)"),
    ("mask shape", mv_layer, lambda layer: layer(jnp.ones((2, 5, 6)) * u.mV, mask=jnp.ones((3, 6), bool)),
     ValueError, r"mask of shape \(3, 6\) does not broadcast to the input shape \(2, 5, 6\)"),
    ("quantity mask", mv_layer, lambda layer: layer(jnp.ones((2, 5, 6)) * u.mV, mask=jnp.ones(6) * u.mV),
     TypeError, r"mask must be a boolean array"),
    ("string input", mv_layer, lambda layer: layer(np.array([["a"] * 6] * 5)), TypeError, r"numeric"),
    ("epsilon vs first input", fresh_layer, lambda layer: layer(jnp.ones((2, 5, 6)) * u.nA),
     u.UnitMismatchError, r"epsilon must be current squared \(nA\^2\), got voltage squared \(mV\^2\)"),
    ("bool input", fresh_layer, lambda layer: layer(jnp.ones((5, 6), bool)), TypeError, r"dtype bool"),
    ("positional axes, unbatched input", lambda: un.GroupNorm(8, num_groups=2, reduction_axes=(1, -1)),
     lambda layer: layer(jnp.ones(8) * u.mV), ValueError,
     r"GroupNorm expected input of shape \(batch, \*spatial, 8\), got \(8,\); its reduction_axes count"),
    ("positional axis beyond the input", lambda: un.GroupNorm(8, num_groups=2, reduction_axes=(2, -1)),
     lambda layer: layer(jnp.ones((3, 8)) * u.mV), ValueError,
     r"reduction_axes=\(2, -1\) is out of range; a sample \(the input without its batch axis\) has 1 axes"),
    ("positional axes without the channel", lambda: un.GroupNorm(8, num_groups=2, reduction_axes=(1, 2)),
     lambda layer: layer(jnp.ones((3, 4, 5, 8)) * u.mV), ValueError,
     r"must include the channel axis \(input axis -1, feature_axis=0 of in_size=\(8,\)\)"),
    ("spatial axes into a multi-axis in_size", fresh_layer,
     lambda layer: layer(jnp.ones((2, 3, 5, 6)) * u.mV), ValueError,
     r"GroupNorm expected input of shape \(batch, 5, 6\) or \(5, 6\), got \(2, 3, 5, 6\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    "make, call, error, pattern", [c[1:] for c in CALL_ERRORS], ids=[c[0] for c in CALL_ERRORS]
)
def test_call_errors_change_nothing(make, call, error, pattern):
    layer = make()
    before = snapshot(layer)
    with pytest.raises(error, match=pattern):
        call(layer)
    after = snapshot(layer)
    assert after[1] == before[1] and after[2] == before[2]
    for a, b in zip(after[0], before[0], strict=True):
        np.testing.assert_array_equal(a, b)


FUNC_ERRORS = [
    ("group_norm groups", lambda: F.group_norm(jnp.ones((2, 10)), num_groups=4), ValueError,
     r"group_norm: the channel count must divide by num_groups; got channels=10, num_groups=4"),
    ("group_norm reduction", lambda: F.group_norm(jnp.ones((2, 3, 4)), num_groups=2, reduction_axes=1),
     ValueError, r"must include the channel axis 2"),
    ("instance_norm batch feature", lambda: F.instance_norm(jnp.ones((2, 3)), feature_axes=0), ValueError,
     r"must not include axis 0"),
    ("layer_norm scale shape", lambda: F.layer_norm(jnp.ones((2, 3)), scale=jnp.ones(4)), ValueError,
     r"scale must be a scalar or have the feature shape \(3,\), got \(4,\)"),
    ("layer_norm axis", lambda: F.layer_norm(jnp.ones((2, 3)), reduction_axes=2), ValueError,
     r"reduction_axes=2 is out of range"),
    ("rms_norm epsilon unit", lambda: F.rms_norm(jnp.ones(3) * u.mV, epsilon=1e-3 * u.nA**2),
     u.UnitMismatchError, r"epsilon must be voltage squared \(mV\^2\), got current squared \(nA\^2\)"),
    ("bias unit", lambda: F.layer_norm(jnp.ones(3), scale=1 * u.mV, bias=1 * u.nA), u.UnitMismatchError,
     r"bias must have the unit of scale"),
    ("ws scalar", lambda: un.weight_standardization(jnp.ones(())), ValueError, r"at least one axis"),
    ("ws gain shape", lambda: un.weight_standardization(jnp.ones((3, 4)), gain=jnp.ones(3)), ValueError,
     r"gain must be a scalar or have 4 elements"),
    ("ws eps unit", lambda: un.weight_standardization(jnp.ones((3, 4)) * u.mV, eps=1e-4 * u.mV),
     u.UnitMismatchError, r"epsilon must be voltage squared \(mV\^2\), got voltage \(mV\)"),
    ("ws out_axis", lambda: un.weight_standardization(jnp.ones((3, 4)), out_axis=2), ValueError,
     r"out_axis=2 is out of range"),
]  # fmt: skip


@pytest.mark.parametrize(
    "call, error, pattern", [c[1:] for c in FUNC_ERRORS], ids=[c[0] for c in FUNC_ERRORS]
)
def test_functional_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_error_messages_are_sentences():
    with pytest.raises(ValueError) as info:
        un.GroupNorm((4, 10), num_groups=4)
    assert re.fullmatch(
        r"GroupNorm: the channel count must divide by num_groups; got channels=10, num_groups=4",
        str(info.value),
    )


# ----------------------------------------------------------------------------
# four devices (slow: a child process with 4 host CPU devices)

_CHILD = r"""
import jax, jax.numpy as jnp, numpy as np, brainunit as u
from jax.sharding import NamedSharding, PartitionSpec as P
import sys
import unitnorm as un
from unitnorm import functional as F
sys.path.insert(0, "tests")  # test_norms imports its helpers (_oracle) as pytest does
from test_norms import np_layer_norm, np_rms_norm, np_group_norm, rand

assert jax.device_count() == 4
mesh = jax.make_mesh((4,), ("b",), axis_types=(jax.sharding.AxisType.Auto,))
x = rand(4, 3, 2, 6, loc=-65.0, scale=3.0)  # (device, rows, local batch, channels)
mask = np.random.default_rng(1).random(x.shape) > 0.3
mask[..., 0] = True
mask[1, :, :, :4] = False  # devices hold different numbers of valid elements
put = lambda a: jax.device_put(a, NamedSharding(mesh, P("b")))

def run(fn):
    f = jax.shard_map(lambda v, k: fn(v[0] * u.mV, k[0])[None], mesh=mesh, in_specs=(P("b"), P("b")),
                      out_specs=P("b"))
    return np.asarray(jax.jit(f)(put(x), put(mask)))

tol = dict(rtol=1e-4, atol=1e-4)
eps = 1e-3 * u.mV**2
np.testing.assert_allclose(run(lambda v, k: F.layer_norm(v, mask=k, axis_name="b", epsilon=eps,
                                                         reduction_axes=(-2, -1))),
                           np_layer_norm(x, (0, 2, 3), mask=mask, eps=1e-3), **tol)
np.testing.assert_allclose(run(lambda v, k: F.rms_norm(v, mask=k, axis_name="b", epsilon=eps,
                                                       reduction_axes=(-2, -1))),
                           np_rms_norm(x, (0, 2, 3), mask=mask, eps=1e-3), **tol)
np.testing.assert_allclose(
    run(lambda v, k: F.group_norm(v, num_groups=2, reduction_axes=(1, 2), mask=k, axis_name="b",
                                  epsilon=eps)),
    np_group_norm(x, 2, raxes=(0, 2, 3), mask=mask, eps=1e-3), **tol)
layer = un.LayerNorm((2, 6), (-2, -1), axis_name="b", epsilon=eps)
np.testing.assert_allclose(run(lambda v, k: layer(v, mask=k)),
                           np_layer_norm(x, (0, 2, 3), mask=mask, eps=1e-3), **tol)
print("four-device checks passed")
"""


@pytest.mark.slow
def test_shard_map_on_four_devices_equals_full_reduction():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=root, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "four-device checks passed" in proc.stdout


# ---------------------------------------------------------------------------- edge paths of the fast ones


def test_nothing_left_to_reduce_gives_zeros_like_the_formula():
    """An (N, C) input to instance_norm, or layer_norm with reduction_axes=(): each value is its own slice."""
    x = np.random.default_rng(4).normal(-65.0, 3.0, (4, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(un.functional.instance_norm(jnp.asarray(x))), norm64(x, (), eps=1e-6)
    )
    y = un.functional.layer_norm(jnp.asarray(x), reduction_axes=())
    np.testing.assert_array_equal(np.asarray(y), norm64(x, (), eps=1e-6))


@pytest.mark.parametrize("masked", [False, True])
def test_group_norm_of_a_constant_group_is_exactly_zero(masked):
    """A constant group far from zero: its mean is its value exactly, with a mask as without one."""
    x = jnp.full((1, 4096, 8), -65.1, jnp.float32)
    mask = np.ones(x.shape, bool) if masked else None
    y = un.functional.group_norm(x, num_groups=2, mask=mask)
    assert float(jnp.abs(y).max()) == 0.0
