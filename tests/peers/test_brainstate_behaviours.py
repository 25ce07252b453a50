"""Every behaviour brainstate 0.5.4's ``nn/_normalizations_test.py`` checks, checked on unitnorm.

Written from a reading of that suite (run against unitnorm, ported with the smallest change,
outside this repository); no code is taken from it. Where brainstate only checks a shape, the
test here also checks the numbers against a float64 NumPy formula. A behaviour unitnorm does
differently on purpose is an ``xfail(strict=True)`` whose reason names its line in
``docs/coming_from.rst``.
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from peer_refs import assert_within, data, group_bound, group_norm64, norm64, stats_bound

import unitnorm as un
from unitnorm import functional as F

TOL = dict(rtol=2e-5, atol=2e-5)  # float32 results of O(1) against float64, small reductions

BN = {0: un.BatchNorm0d, 1: un.BatchNorm1d, 2: un.BatchNorm2d, 3: un.BatchNorm3d}
SPATIAL = {0: (), 1: (6,), 2: (5, 4), 3: (3, 4, 2)}


def _bn_case(dims, feature_axis, batch=4, channels=3):
    spatial = SPATIAL[dims]
    in_size = (*spatial, channels) if feature_axis == -1 else (channels, *spatial)
    return in_size, data(batch, *in_size, loc=1.0, seed=dims)


# ----------------------------------------------------------------------------
# BatchNorm0d-3d


@pytest.mark.parametrize("dims", [0, 1, 2, 3])
@pytest.mark.parametrize("feature_axis", [-1, 0])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_with_batch(dims, feature_axis, track, training):
    """Shape kept, channels first or last; batch statistics in training, running ones in eval."""
    in_size, x = _bn_case(dims, feature_axis)
    layer = BN[dims](in_size, feature_axis=feature_axis, track_running_stats=track, affine=track)
    y = layer(jnp.asarray(x), training=training)
    assert y.shape == x.shape
    channel = 1 if feature_axis == 0 else x.ndim - 1
    raxes = tuple(a for a in range(x.ndim) if a != channel)
    if training or not track:
        # the batch statistics: mean 0, variance 1 per channel (brainstate: atol 1e-5 / 1e-1)
        np.testing.assert_allclose(y, norm64(x, raxes, eps=1e-5), **TOL)
    else:
        # fresh running statistics: mean 0, variance 1
        np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), **TOL)


@pytest.mark.parametrize("dims", [0, 1, 2, 3])
def test_batch_norm_without_batch_uses_running_stats(dims):
    in_size, x = _bn_case(dims, -1, batch=8)
    layer = BN[dims](in_size, momentum=0.5)
    layer(jnp.asarray(x))
    one = data(*in_size, seed=9)
    y = layer(jnp.asarray(one), training=False)
    assert y.shape == in_size
    raxes = tuple(range(x.ndim - 1))
    mean = x.astype(np.float64).mean(raxes)
    var = x.astype(np.float64).var(raxes)
    rm, rv = 0.5 * mean, 0.5 + 0.5 * var
    np.testing.assert_allclose(y, (one - rm) / np.sqrt(rv + 1e-5), **TOL)


def test_batch_norm_affine_switch():
    assert set(un.BatchNorm0d(10, affine=True).weight.value) == {"scale", "bias"}
    assert un.BatchNorm0d(10, affine=False, track_running_stats=False).weight is None


def test_batch_norm_affine_without_running_stats_is_allowed():
    """unitnorm's side of the difference below: batch statistics, then the affine map."""
    layer = un.BatchNorm0d(3, track_running_stats=False, affine=True, scale_initializer=un.init.Constant(2.0))
    x = data(5, 3, seed=4)
    np.testing.assert_allclose(layer(jnp.asarray(x), training=False), 2 * norm64(x, 0, eps=1e-5), **TOL)


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/coming_from.rst, From brainstate, 'No running statistics' "
    "(affine=True combines with track_running_stats=False)",
)
def test_batch_norm_affine_requires_running_stats():
    with pytest.raises((AssertionError, ValueError)):
        un.BatchNorm2d((6, 6, 3), track_running_stats=False, affine=True)


def test_batch_norm_wrong_spatial_shape_raises():
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 6, 6, 3\) or \(6, 6, 3\), got"):
        un.BatchNorm2d((6, 6, 3))(jnp.ones((4, 7, 7, 3)))


@pytest.mark.parametrize(
    "layer, shape",
    [
        (un.BatchNorm1d((20, 10)), (20,)),
        (un.BatchNorm0d((10,)), (4, 5, 10)),
        (un.BatchNorm2d((8, 8, 3)), (8, 3)),
    ],
    ids=["1d-got-1d", "0d-got-3d", "2d-got-2d"],
)
def test_batch_norm_wrong_rank_raises(layer, shape):
    with pytest.raises(ValueError, match=r"expected input of shape"):
        layer(jnp.ones(shape))


def test_running_stats_follow_momentum_in_training():
    layer = un.BatchNorm1d((6, 4), momentum=0.5)
    x = data(8, 6, 4, loc=5.0, seed=4)
    layer(jnp.asarray(x))
    mean = x.astype(np.float64).mean((0, 1))
    var = x.astype(np.float64).var((0, 1))
    np.testing.assert_allclose(layer.running_mean.value, 0.5 * mean, **TOL)
    np.testing.assert_allclose(layer.running_var.value, 0.5 + 0.5 * var, rtol=2e-5, atol=1e-4)


def test_running_stats_frozen_in_eval():
    layer = un.BatchNorm1d((6, 4))
    layer(jnp.asarray(data(8, 6, 4, loc=3.0, seed=5)))
    before = np.array(layer.running_mean.value), np.array(layer.running_var.value)
    layer.eval()
    layer(jnp.asarray(data(8, 6, 4, loc=-2.0, seed=6)))
    assert np.array_equal(before[0], layer.running_mean.value)
    assert np.array_equal(before[1], layer.running_var.value)


def test_eval_on_a_smaller_batch_than_training():
    layer = un.BatchNorm2d((6, 6, 3), momentum=0.0)
    big = data(16, 6, 6, 3, seed=1)
    layer(jnp.asarray(big))
    small = data(2, 6, 6, 3, seed=2)
    y = layer(jnp.asarray(small), training=False)
    mean, var = big.astype(np.float64).mean((0, 1, 2)), big.astype(np.float64).var((0, 1, 2))
    np.testing.assert_allclose(y, (small - mean) / np.sqrt(var + 1e-5), rtol=2e-5, atol=1e-4)


def test_brainstate_fit_flag_drives_the_mode():
    bst = pytest.importorskip("brainstate")
    layer = un.BatchNorm0d(3)
    x = data(6, 3, seed=3)
    with bst.environ.context(fit=False):
        np.testing.assert_allclose(layer(jnp.asarray(x)), x / np.sqrt(1 + 1e-5), **TOL)
    with bst.environ.context(fit=True):
        np.testing.assert_allclose(layer(jnp.asarray(x)), norm64(x, 0, eps=1e-5), **TOL)


# ----------------------------------------------------------------------------
# LayerNorm and RMSNorm


@pytest.mark.parametrize("raxes", [(-1,), (-2, -1), (-3, -2, -1)])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("use_scale", [True, False])
def test_layer_norm_axes_and_switches(raxes, use_bias, use_scale):
    in_size = (3, 4, 5)
    scale, bias = data(5, seed=1) + 2.0, data(5, seed=2)
    layer = un.LayerNorm(
        in_size,
        reduction_axes=raxes,
        use_bias=use_bias,
        use_scale=use_scale,
        scale_init=scale,
        bias_init=bias,
    )
    x = data(2, *in_size, loc=1.0)
    y = layer(jnp.asarray(x))
    ref = norm64(x, raxes, -1, 1e-6, scale if use_scale else None, bias if use_bias else None)
    np.testing.assert_allclose(y, ref, **TOL)
    assert (layer.weight is None) == (not use_bias and not use_scale)


def test_layer_norm_per_position_in_sequences():
    x = data(4, 10, 16, loc=2.0)
    y = un.LayerNorm((10, 16), reduction_axes=-1, feature_axes=-1)(jnp.asarray(x))
    np.testing.assert_allclose(y, norm64(x, -1, eps=1e-6), **TOL)


@pytest.mark.parametrize("in_size", [(10,), (4, 5), (2, 3, 4)])
def test_layer_norm_with_and_without_batch(in_size):
    layer = un.LayerNorm(in_size)
    x = data(3, *in_size, seed=len(in_size))
    y = layer(jnp.asarray(x))
    np.testing.assert_allclose(y, norm64(x, -1, eps=1e-6), **TOL)
    np.testing.assert_allclose(layer(jnp.asarray(x[1])), y[1], rtol=1e-6, atol=1e-6)


def test_layer_norm_is_deterministic_and_jit_equal():
    layer = un.LayerNorm((8,))
    x = jnp.asarray(data(4, 8))
    assert np.array_equal(layer(x), layer(x))
    eager = layer.update(x)  # brainstate's name for the forward pass
    jitted = jax.jit(lambda lay, v: lay.update(v))(layer, x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("use_scale", [True, False])
@pytest.mark.parametrize("raxes", [(-1,), (-2, -1)])
def test_rms_norm_axes_and_scale(use_scale, raxes):
    scale = data(6, seed=3) + 2.0
    layer = un.RMSNorm((5, 6), use_scale=use_scale, reduction_axes=raxes, scale_init=scale)
    x = data(3, 5, 6, loc=1.0)
    ref = norm64(x, raxes, -1, 1e-6, scale if use_scale else None, rms=True)
    np.testing.assert_allclose(layer(jnp.asarray(x)), ref, **TOL)
    assert (layer.scale is None) == (not use_scale)


def test_rms_norm_unit_root_mean_square_per_position():
    x = data(4, 10, 16, loc=0.5)
    y = np.asarray(un.RMSNorm((10, 16), reduction_axes=-1, feature_axes=-1)(jnp.asarray(x)), np.float64)
    np.testing.assert_allclose(np.sqrt((y**2).mean(-1)), 1.0, rtol=1e-5)  # eps 1e-6 against mean squares ~1
    np.testing.assert_allclose(un.RMSNorm((10, 16))(jnp.asarray(x[0])), y[0], rtol=1e-6, atol=1e-6)


def test_rms_norm_gradients_finite():
    layer = un.RMSNorm((8,))
    x = jnp.asarray(data(4, 8))
    g = jax.grad(lambda v: jnp.sum(layer(v) ** 2))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    # the output norm does not depend on the input's scale but through epsilon: with ms the mean
    # square, sum(y**2) = n ms / (ms + eps), so x . grad = 2 eps n ms / (ms + eps)**2 (~1e-5 here,
    # 0.36 of the atol=1e-4 once used against 0). Each g_k is a difference of two terms of size
    # 2|x_k| / ms: a few float32 roundings of them, 64 u n in all.
    x64, eps, n = np.asarray(x, np.float64), 1e-6, x.shape[-1]
    ms = (x64**2).mean(-1)
    assert_within(np.sum(np.asarray(g, np.float64) * x64, axis=-1), 2 * eps * n * ms / (ms + eps) ** 2,
                  64 * 2.0**-24 * n, "x . grad")  # fmt: skip


# ----------------------------------------------------------------------------
# GroupNorm, brainstate's axis convention (issue 11 item 5)


@pytest.mark.parametrize("num_groups", [1, 2, 4, 8])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("use_scale", [True, False])
def test_group_norm_channels_only_in_size(num_groups, use_bias, use_scale):
    """brainstate's GroupNorm: in_size is the channels, feature_axis=0 indexes it."""
    scale, bias = data(16, seed=1) + 2.0, data(16, seed=2)
    layer = un.GroupNorm(
        (16,), feature_axis=0, num_groups=num_groups, use_bias=use_bias, use_scale=use_scale,
        scale_init=scale, bias_init=bias,
    )  # fmt: skip
    x = data(4, 16, loc=1.0)
    ref = group_norm64(
        x, num_groups, eps=1e-6, scale=scale if use_scale else None, bias=bias if use_bias else None
    )
    np.testing.assert_allclose(layer(jnp.asarray(x)), ref, **TOL)


@pytest.mark.parametrize("feature_axis", [0, -1])
def test_group_norm_leading_spatial_axes(feature_axis):
    """(batch, height, width, channels) into GroupNorm(in_size=(channels,)): the spatial axes are reduced."""
    x = data(3, 6, 5, 16, loc=1.0)
    layer = un.GroupNorm((16,), feature_axis=feature_axis, num_groups=4)
    y = layer(jnp.asarray(x))
    ref = group_norm64(x, 4, eps=1e-6)
    assert_within(y, ref, group_bound(x, 4, ref, 1e-6), "unitnorm vs float64")
    # any number of spatial axes, and none
    np.testing.assert_allclose(layer(jnp.asarray(x[:, 0])), group_norm64(x[:, 0], 4, eps=1e-6), **TOL)
    np.testing.assert_allclose(layer(jnp.asarray(x[:, 0, 0])), group_norm64(x[:, 0, 0], 4, eps=1e-6), **TOL)


def test_group_norm_brainstate_convention_matches_numpy_and_brainstate():
    """Item 5: brainstate's call runs unchanged; float64 NumPy within a float32 bound, brainstate too.

    Fails on main before issue 11 (``GroupNorm expected input of shape (16,), got (4, 8, 8, 16)``).
    """
    x = data(4, 8, 8, 16, loc=1.0, scale=2.0)
    for kw in ({}, {"reduction_axes": (1, 2, -1)}):
        layer = un.GroupNorm((16,), feature_axis=0, num_groups=4, **kw)
        y = np.asarray(layer(jnp.asarray(x)), np.float64)
        ref = group_norm64(x, 4, eps=1e-6)
        bound = group_bound(x, 4, ref, 1e-6)
        assert_within(y, ref, bound, f"unitnorm {kw} vs float64")
        bst = pytest.importorskip("brainstate")
        theirs = bst.nn.GroupNorm((16,), feature_axis=0, num_groups=4, **kw)(jnp.asarray(x))
        # both are float32 computations each within the bound of the float64 truth
        assert_within(theirs, ref, bound, "brainstate vs float64")
        assert_within(y, theirs, 2 * bound, f"unitnorm {kw} vs brainstate")


def test_group_norm_brainstate_convention_with_units():
    x = data(2, 4, 3, 8, loc=-65.0, scale=3.0)
    layer = un.GroupNorm((8,), feature_axis=0, num_groups=2, epsilon=1e-4 * u.mV**2)
    y_mv = layer(jnp.asarray(x) * u.mV)
    y_v = layer(jnp.asarray(x / 1000) * u.volt)  # converted to the reference unit, mV
    ref = group_norm64(x, 2, eps=1e-4)
    assert_within(y_mv, ref, group_bound(x, 2, ref, 1e-4), "mV vs float64")
    assert_within(y_v, ref, 2 * group_bound(x, 2, ref, 1e-4) + 1e-6, "V vs float64")
    assert layer.in_unit == u.mV


def test_group_norm_reduction_axes_leaving_out_a_spatial_axis_are_exact():
    """Positions (2, 3) of (batch, h, w, c): statistics per (sample, row, group); brainstate repeats
    them along the wrong axis here (documented in GroupNorm's Notes)."""
    x = data(2, 3, 4, 8, loc=1.0)
    for raxes in [(2, 3), (-2, -1)]:
        y = un.GroupNorm((8,), num_groups=2, reduction_axes=raxes)(jnp.asarray(x))
        ref = group_norm64(x, 2, raxes=(2, 3), eps=1e-6)
        np.testing.assert_allclose(y, ref, **TOL)


def test_group_norm_equals_layer_norm_with_one_group():
    x = jnp.asarray(data(8, 16, loc=1.0))
    gn = un.GroupNorm((16,), feature_axis=0, num_groups=1)(x)
    ln = un.LayerNorm((16,), reduction_axes=-1, feature_axes=-1)(x)
    np.testing.assert_allclose(gn, ln, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gn, norm64(np.asarray(x), -1, eps=1e-6), **TOL)


def test_group_norm_group_size():
    layer = un.GroupNorm((16,), feature_axis=0, num_groups=None, group_size=4)
    assert (layer.num_groups, layer.group_size) == (4, 4)
    x = data(4, 16)
    np.testing.assert_allclose(layer(jnp.asarray(x)), group_norm64(x, 4, eps=1e-6), **TOL)


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(in_size=(15,), feature_axis=0, num_groups=4), r"channels=15, num_groups=4"),
        (dict(in_size=(15,), feature_axis=0, num_groups=None, group_size=4), r"channels=15, group_size=4"),
        (dict(in_size=(32, 32, 16), num_groups=4, group_size=4), r"exactly one of num_groups and group_size"),
        (
            dict(in_size=(32, 32, 16), num_groups=None, group_size=None),
            r"exactly one of num_groups and group_size",
        ),
    ],
    ids=["groups-do-not-divide", "size-does-not-divide", "both", "neither"],
)
def test_group_norm_bad_group_spec_raises(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        un.GroupNorm(**kw)


def test_group_norm_explicit_reduction_axes_as_input_positions():
    x = data(2, 4, 4, 16, loc=1.0)
    y = un.GroupNorm((16,), feature_axis=0, num_groups=4, reduction_axes=(1, 2, -1))(jnp.asarray(x))
    np.testing.assert_allclose(y, group_norm64(x, 4, eps=1e-6), **TOL)


def test_group_norm_mask():
    layer = un.GroupNorm((16,), feature_axis=0, num_groups=4)
    x = data(4, 16, loc=1.0)
    full = layer(jnp.asarray(x), mask=jnp.ones((4, 16), bool))
    # the masked and the unmasked path are two float32 programs: each against the float64 truth
    truth = group_norm64(x, 4, eps=1e-6)
    assert_within(full, truth, group_bound(x, 4, truth, eps=1e-6), "all-true mask")
    assert_within(layer(jnp.asarray(x)), truth, group_bound(x, 4, truth, eps=1e-6), "no mask")
    mask = np.random.default_rng(1).random((4, 16)) > 0.3
    mask[:, ::4] = True  # every group keeps a value
    np.testing.assert_allclose(
        layer(jnp.asarray(x), mask=mask), group_norm64(x, 4, eps=1e-6, mask=mask), **TOL
    )


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/coming_from.rst, From brainstate, 'An input of shape in_size "
    "is one sample' (brainstate reads its axis 0 as the batch)",
)
def test_group_norm_in_size_with_the_batch_axis_reads_axis_0_as_batch():
    """brainstate's docstring expects ``GroupNorm(x.shape, num_groups=1)`` to be LayerNorm over axes 1..3."""
    x = jnp.asarray(data(3, 4, 5, 6))
    y1 = un.GroupNorm(x.shape, num_groups=1)(x)
    y2 = un.LayerNorm(x.shape, reduction_axes=(1, 2, 3))(x)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/coming_from.rst, From brainstate, 'Non-negative reduction_axes "
    "within in_size fix the input to shape in_size' (rule 4 of Input shapes and axes)",
)
def test_layer_norm_non_negative_axis_within_in_size_on_a_batch():
    """brainstate reads ``reduction_axes=(1,)`` as input axis 1 whatever the input's rank."""
    x = data(2, 4, 5)
    y = un.LayerNorm((4, 5), reduction_axes=(1,))(jnp.asarray(x))
    np.testing.assert_allclose(y, norm64(x, 1, -1, 1e-6), **TOL)


# ----------------------------------------------------------------------------
# weight standardization


def _ws64(w, eps, gain=None, out_axis=-1):
    w = np.asarray(w, np.float64)
    axes = tuple(a for a in range(w.ndim) if a != out_axis % w.ndim)
    fan_in = np.prod([w.shape[a] for a in axes])
    y = (w - w.mean(axes, keepdims=True)) / np.sqrt(np.maximum(w.var(axes, keepdims=True) * fan_in, eps))
    return y if gain is None else y * np.asarray(gain)


def test_weight_standardization_zero_mean_along_fan_in():
    w = data(3, 4, 5, 6, seed=5)
    y = un.weight_standardization(jnp.asarray(w), eps=1e-4)
    np.testing.assert_allclose(y, _ws64(w, 1e-4), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(y, np.float64).mean((0, 1, 2)), 0.0, atol=1e-6)


def test_weight_standardization_with_gain():
    w, gain = data(3, 4, 5, 6, seed=6), data(6, seed=7)
    y = un.weight_standardization(jnp.asarray(w), gain=jnp.asarray(gain))
    np.testing.assert_allclose(y, _ws64(w, 1e-4, gain), rtol=2e-5, atol=1e-6)


def test_weight_standardization_negative_out_axis():
    w = jnp.asarray(data(4, 5, seed=8))
    np.testing.assert_array_equal(
        un.weight_standardization(w, out_axis=-1), un.weight_standardization(w, out_axis=1)
    )


def test_weight_standardization_quantities():
    ones = un.weight_standardization(jnp.ones((3, 4)) * u.UNITLESS)
    assert u.math.shape(ones) == (3, 4)
    # brainstate skips this case as a bug; here a unit-carrying weight is standardized
    w = data(3, 4, seed=9)
    y = un.weight_standardization(jnp.asarray(w) * u.mV, eps=1e-4 * u.mV**2)
    np.testing.assert_allclose(y, _ws64(w, 1e-4), rtol=2e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# brainstate's helpers, through unitnorm's public functions


def test_integer_input_gives_floating_statistics():
    mean, var = F.compute_stats(jnp.arange(12, dtype=jnp.int32).reshape(3, 4), axes=0)
    assert jnp.issubdtype(mean.dtype, jnp.floating) and jnp.issubdtype(var.dtype, jnp.floating)
    ints = np.arange(12.0).reshape(3, 4)
    dmu, dvar = stats_bound(ints, (0,))  # a few roundings: 1e-7 relative was 0.3 of it here
    assert_within(mean, ints.mean(0), dmu[0], "mean")
    assert_within(var, ints.var(0), dvar[0], "variance")


def test_explicit_float_dtype_is_kept():
    x = jnp.asarray(data(4, 3))
    assert un.LayerNorm(3, dtype=jnp.float32)(x).dtype == jnp.float32
    assert F.compute_stats(x, 0, dtype=jnp.float32)[0].dtype == jnp.float32


@pytest.mark.parametrize(
    "make", [lambda: un.LayerNorm(4, dtype=jnp.int32), lambda: un.GroupNorm(4, num_groups=2, dtype="int8")]
)
def test_integer_output_dtype_raises(make):
    """brainstate refuses a non-floating output dtype; an int output would truncate every value."""
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype.*got int"):
        make()


def test_canonical_axes():
    assert F.canonical_axes((-1, -2), 3) == (1, 2)
    with pytest.raises(ValueError, match=r"axes=2 is out of range for an input with 1 dimensions"):
        F.canonical_axes(2, 1)


def test_complex_input_uses_squared_magnitude():
    z = np.array([3 + 4j, 1 - 2j, -1j], np.complex64)
    mean, var = F.compute_stats(jnp.asarray(z), axes=0)
    np.testing.assert_allclose(mean, z.astype(np.complex128).mean(), rtol=1e-6)
    np.testing.assert_allclose(var, (np.abs(z.astype(np.complex128) - z.mean()) ** 2).mean(), rtol=1e-6)
    assert not jnp.iscomplexobj(var)


@pytest.mark.parametrize("fast", [True, False])
def test_fast_and_two_pass_statistics_match_float64(fast):
    x = data(8, 4, loc=3.0, seed=2)
    mean, var = F.compute_stats(jnp.asarray(x), axes=0, use_fast_variance=fast)
    dmu, dvar = stats_bound(x, (0,))
    assert_within(mean, x.astype(np.float64).mean(0), dmu[0], "mean")
    assert_within(var, x.astype(np.float64).var(0), dvar[0], "variance")


@pytest.mark.parametrize("fast", [True, False])
def test_statistics_across_a_named_vmap_axis(fast):
    x = data(2, 6, 4, seed=3)
    mus, vars_ = jax.vmap(
        lambda xi: F.compute_stats(xi, axes=0, axis_name="b", use_fast_variance=fast), axis_name="b"
    )(jnp.asarray(x))
    assert mus.shape == vars_.shape == (2, 4)
    np.testing.assert_array_equal(mus[0], mus[1])  # one float32 program's result, broadcast: exact
    np.testing.assert_array_equal(vars_[0], vars_[1])
    dmu, dvar = stats_bound(x, (0, 1))
    assert_within(mus[0], x.astype(np.float64).mean((0, 1)), dmu[0, 0], "mean")
    assert_within(vars_[0], x.astype(np.float64).var((0, 1)), dvar[0, 0], "variance")
