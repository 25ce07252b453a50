"""Numerical stress: 24 orders of magnitude in one unit, constant channels, half precision.

The promise: no NaN or inf in an output or a statistic unless the input had one.
Values are checked against float64 NumPy formulas where the float32 result can be
expected to agree.
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un
from unitnorm import functional as F

SHAPE = (16, 8, 4)  # (batch, length, channels)


def extreme(seed=0, shape=SHAPE):
    """Channel 0 around 1e-12..1e-10, channel 1 around 1e10..1e12, channel 2 spanning
    1e-12..1e12 with random signs, channel 3 constant (zero variance)."""
    rng = np.random.default_rng(seed)
    n = shape[:-1]
    x = np.empty(shape)
    x[..., 0] = 10.0 ** rng.uniform(-12, -10, n)
    x[..., 1] = 10.0 ** rng.uniform(10, 12, n)
    x[..., 2] = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-12, 12, n)
    x[..., 3] = -65.0
    return x


def all_finite(tree):
    return all(
        bool(jnp.isfinite(jnp.asarray(leaf)).all())
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
    )


def layers():
    """Every public layer, built for input (batch, 8, 4)."""
    out = {}
    for name in un.__all__:
        cls = getattr(un, name)
        if not (isinstance(cls, type) and issubclass(cls, un.Module)) or cls is un.Module:
            continue
        if getattr(cls, "wraps_weight", False):  # SpectralNorm, WeightNorm: tests/test_weight_norms.py
            continue
        if hasattr(cls, "num_spatial_dims"):
            if cls.num_spatial_dims != 1:
                continue
            out[name] = lambda cls=cls, **kw: cls((8, 4), momentum=0.9, **kw)
        elif name == "GroupNorm":
            out[name] = lambda cls=cls, **kw: cls((8, 4), num_groups=2, **kw)
        else:
            out[name] = lambda cls=cls, **kw: cls((8, 4), **kw)
    return out


LAYERS = layers()


@pytest.mark.parametrize("fast", [True, False])
def test_compute_stats_over_24_orders_of_magnitude(fast):
    x = extreme()
    mean, var = F.compute_stats(jnp.asarray(x, jnp.float32) * u.mV, (0, 1), use_fast_variance=fast)
    assert all_finite((mean.mantissa, var.mantissa))
    x32 = x.astype(np.float32).astype(np.float64)  # what the float32 input holds
    np.testing.assert_allclose(np.asarray(mean.mantissa), x32.mean((0, 1)), rtol=1e-5, atol=1e-16)
    np.testing.assert_allclose(np.asarray(var.mantissa), x32.var((0, 1)), rtol=1e-4, atol=1e-30)
    assert float(var.mantissa[3]) == 0.0  # a constant channel has exactly zero variance


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_stay_finite_over_24_orders_of_magnitude(name):
    layer = LAYERS[name](in_unit=u.mV)
    for step in range(3):
        y = layer(jnp.asarray(extreme(step), jnp.float32) * u.mV)
        assert all_finite(y), f"{name}: non-finite output at step {step}"
        assert all_finite(layer), f"{name}: non-finite State at step {step}"
    if hasattr(layer, "running_mean"):
        y = layer(jnp.asarray(extreme(9), jnp.float32) * u.mV, training=False)
        assert all_finite(y)


def test_batch_norm_values_over_24_orders_of_magnitude():
    x = extreme(3)
    layer = un.BatchNorm1d((8, 4), momentum=0.0)
    y = np.asarray(layer(jnp.asarray(x, jnp.float32)))
    x32 = x.astype(np.float32).astype(np.float64)
    mean, var = x32.mean((0, 1)), x32.var((0, 1))
    ref = (x32 - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(y[..., 3], 0.0)  # constant channel: exactly zero, not NaN
    np.testing.assert_allclose(np.asarray(layer.running_var.value), var, rtol=1e-4, atol=1e-30)


def test_data_in_volts_into_a_millivolt_layer():
    """Conversion multiplies by 1e3 first: up to 1e15 mV, squares up to 1e30, still finite."""
    layer = un.BatchNorm1d((8, 4), in_unit=u.mV, momentum=0.5)
    y = layer(jnp.asarray(extreme(4), jnp.float32) * u.volt)
    assert all_finite(y) and all_finite(layer)
    assert float(layer.running_var.value.mantissa[1]) > 1e20


@pytest.mark.parametrize("name", list(LAYERS))
def test_constant_input_gives_zeros_or_finite_values(name):
    for value in (0.0, -65.0, 1e12, -1e-12):
        layer = LAYERS[name]()
        y = layer(jnp.full(SHAPE, value, jnp.float32))
        assert all_finite(y) and all_finite(layer), (name, value)
        # centred norms: x - mean is exactly zero (batch renormalization adds d, its pull towards
        # the running mean, so its output is finite but not zero)
        if name != "RMSNorm" and not name.startswith("BatchRenorm"):
            np.testing.assert_array_equal(np.asarray(y), 0.0)


def test_functional_constant_channels():
    x = jnp.full((10, 3), 7.0) * u.mV
    y, mean, var = F.batch_norm(x, jnp.zeros(3) * u.mV, jnp.ones(3) * u.mV**2, training=True, momentum=0.5)
    assert all_finite((y, mean.mantissa, var.mantissa))
    np.testing.assert_array_equal(np.asarray(y), 0.0)
    np.testing.assert_allclose(np.asarray(var.mantissa), 0.5)
    for fn in (F.layer_norm, F.rms_norm, F.instance_norm):
        assert all_finite(fn(jnp.full((2, 5, 3), 1e12) * u.mV))


HALF = [jnp.float16, jnp.bfloat16]


def half_data(dtype, seed=0):
    """Values spanning the type's normal range: float16 1e-4..6e4, bfloat16 1e-12..1e12."""
    rng = np.random.default_rng(seed)
    lo, hi = (-4, 4.7) if dtype == jnp.float16 else (-12, 12)
    x = rng.choice([-1.0, 1.0], SHAPE) * 10.0 ** rng.uniform(lo, hi, SHAPE)
    x[..., 3] = 3.0  # constant channel
    return jnp.asarray(x, dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(LAYERS))
def test_half_precision_input(name, dtype):
    layer = LAYERS[name](in_unit=u.mV)
    x = half_data(dtype)
    assert bool(jnp.isfinite(x).all())
    for _ in range(2):
        y = layer(x * u.mV)
        assert u.get_mantissa(y).dtype == dtype  # half in, half out
        assert all_finite(y) and all_finite(layer), name
    for leaf in (layer.state_dict().get("running_mean"), layer.state_dict().get("running_var")):
        if leaf is not None:
            assert leaf.mantissa.dtype == jnp.float32  # statistics kept in float32


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_batch_norm_matches_float64(dtype):
    x = half_data(dtype, seed=5)
    layer = un.BatchNorm1d((8, 4), momentum=0.0)
    y = np.asarray(layer(x).astype(jnp.float32), np.float64)
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    mean, var = x64.mean((0, 1)), x64.var((0, 1))
    ref = (x64 - mean) / np.sqrt(var + 1e-5)
    tol = 1e-2 if dtype == jnp.float16 else 1e-2 * 8  # the output is rounded to the half type
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(layer.running_mean.value), mean, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_compute_stats_with_a_gap(dtype):
    x = np.array(half_data(dtype, seed=2).astype(jnp.float32))
    x[2:5] = np.nan
    mean, var = F.compute_stats(jnp.asarray(x, dtype), (0, 1), nan_policy="omit")
    assert mean.dtype == jnp.float32 and all_finite((mean, var))
    np.testing.assert_allclose(np.asarray(mean), np.nanmean(x, (0, 1)), rtol=1e-4, atol=1e-6)


def test_gradients_stay_finite_on_extreme_data():
    x = jnp.asarray(extreme(6), jnp.float32)

    def loss(x, layer):
        return jnp.sum(layer(x) ** 2)

    for name, make in LAYERS.items():
        grad = jax.grad(loss)(x, make())
        assert all_finite(grad), name
