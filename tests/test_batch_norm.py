import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import U32, assert_close_f32, f32_bound, norm64, perturbed_bound, stats_bounds
from flax import nnx

import unitnorm as un


def test_seed_example_runs_verbatim():
    layer = un.BatchNorm1d(in_size=(100, 64))
    x = jnp.ones((8, 100, 64))
    y = layer(x)
    assert y.shape == (8, 100, 64)
    assert "layer = un.BatchNorm1d(in_size=(100, 64))" in un.BatchNorm1d.__doc__


def data(shape, seed=0, loc=1.5, scale=2.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, scale, shape), jnp.float32)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_parity_with_flax_nnx(fast, momentum):
    """Five training steps, then evaluation: ours and flax.nnx agree within both float32 error bounds.

    Bounds come from the data (tests/_oracle.py): ours is shifted, flax's fast variance is
    E[x^2] - E[x]^2 (unshifted) and its two-pass one is shifted by the mean.
    """
    ours = un.BatchNorm1d((10, 4), momentum=momentum, use_fast_variance=fast)
    theirs = nnx.BatchNorm(4, momentum=momentum, epsilon=1e-5, use_fast_variance=fast, rngs=nnx.Rngs(0))
    mean_err = var_err = 0.0
    for step in range(5):
        x = data((8, 10, 4), seed=step, loc=step)
        bound = f32_bound(x, (0, 1), eps=1e-5) + f32_bound(x, (0, 1), eps=1e-5, unshifted=fast)
        assert_close_f32(ours(x), theirs(x, use_running_average=False), bound)
        x64 = np.asarray(x, np.float64)
        n, big = 80, np.abs(x64).max()
        # each batch statistic of each side is off by at most ~8 u sqrt(n) (its magnitude); the EMA
        # weights add to at most 1, so the running statistics inherit the largest per-step bound
        mean_err = max(mean_err, 2 * 8 * U32 * np.sqrt(n) * big)
        around = x64.var((0, 1)) + (x64.mean((0, 1)) ** 2 if fast else 0)
        var_err = max(var_err, 2 * 8 * U32 * np.sqrt(n) * (around.max() + 2 * big * mean_err))
    assert_close_f32(ours.running_mean.value, theirs.mean[...], mean_err)
    assert_close_f32(ours.running_var.value, theirs.var[...], var_err)
    x = data((8, 10, 4), seed=99)
    ours.eval()
    rv = np.asarray(theirs.var[...], np.float64) + 1e-5
    y = np.abs(np.asarray(x, np.float64) - np.asarray(theirs.mean[...])) / np.sqrt(rv)
    bound = (mean_err / np.sqrt(rv.min()) + y.max() * var_err / (2 * rv.min())) * 1.01 + 16 * U32 * y.max()
    assert_close_f32(ours(x), theirs(x, use_running_average=True), bound)


def test_training_then_eval_matches_float64_numpy():
    layer = un.BatchNorm2d((3, 3, 2), momentum=0.9, in_unit=u.mV)
    rm, rv = np.zeros(2), np.ones(2)
    for step in range(4):
        x = np.asarray(data((5, 3, 3, 2), seed=10 + step, loc=-65, scale=4.0), np.float64)
        y = layer(jnp.asarray(x, jnp.float32) * u.mV)
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        rm, rv = 0.9 * rm + 0.1 * mean, 0.9 * rv + 0.1 * var
        np.testing.assert_allclose(np.asarray(y), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer.running_mean.value.mantissa), rm, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.running_var.value.mantissa), rv, rtol=1e-4)
    x = np.asarray(data((2, 3, 3, 2), seed=50), np.float64)
    y = layer(jnp.asarray(x, jnp.float32) * u.mV, training=False)
    np.testing.assert_allclose(np.asarray(y), (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-4)


def test_units_of_states_and_output():
    layer = un.BatchNorm1d((100, 64), in_unit=u.mV)
    z = layer(data((8, 100, 64), loc=-0.065, scale=0.004) * u.volt)
    assert not isinstance(z, u.Quantity)
    assert layer.running_mean.value.unit == u.mV
    assert layer.running_var.value.unit == u.mV**2
    np.testing.assert_allclose(np.asarray(layer.running_mean.value.mantissa), -0.65, atol=0.05)


def test_affine_output_in_millivolts():
    layer = un.BatchNorm0d(
        3, scale_initializer=un.init.Constant(1 * u.mV), bias_initializer=un.init.Constant(-65 * u.mV)
    )
    y = layer(data((50, 3)) * u.nA)
    assert y.unit == u.mV
    np.testing.assert_allclose(np.asarray(y.mantissa).mean(0), -65.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(y.mantissa).std(0), 1.0, atol=1e-3)


def test_same_output_for_volts_and_millivolts():
    x_mv = data((16, 20, 3), loc=-65.0, scale=4.0) * u.mV
    x_v = x_mv.in_unit(u.volt)
    # Each float32 output is compared with the float64 truth (not with the other: at -65 mV, sigma 4,
    # an input rounding is amplified ~16x and the summation order is the CPU's). The input in V is
    # the one in mV rounded, then rounded again (and scaled by an inexact 1e-3) on its way back:
    # at most 4 u |x| apart, which moves the output by perturbed_bound.
    x64 = np.asarray(x_mv.mantissa, np.float64)
    truth, bound = norm64(x64, (0, 1), eps=1e-5), f32_bound(x64, (0, 1), eps=1e-5)
    moved = perturbed_bound(x64, (0, 1), 4 * U32 * np.abs(x64).max(), eps=1e-5)
    # a reference unit with a float epsilon
    a, b = un.BatchNorm1d((20, 3), in_unit=u.mV), un.BatchNorm1d((20, 3), in_unit=u.mV)
    assert_close_f32(a(x_mv), truth, bound)
    assert_close_f32(b(x_v), truth, bound + moved)
    _, var_err = stats_bounds(x64, (0, 1))
    var_moved = 2 * np.sqrt(x64.var((0, 1))) * 4 * U32 * np.abs(x64).max()
    running_var = 0.99 + 0.01 * x64.var((0, 1))  # the default momentum, 0.99
    assert_close_f32(a.running_var.value.mantissa, running_var, 0.01 * var_err.max() + 2 * U32)
    assert_close_f32(
        b.running_var.value.mantissa, running_var, 0.01 * (var_err.max() + var_moved.max()) + 2 * U32
    )
    # a Quantity epsilon: layers that each adopt their input's unit agree too
    eps = 1e-5 * u.mV**2
    c, d = un.BatchNorm1d((20, 3), epsilon=eps), un.BatchNorm1d((20, 3), epsilon=eps)
    assert_close_f32(c(x_mv), truth, bound)
    assert_close_f32(d(x_v), truth, bound + moved)
    assert d.in_unit == u.volt
    # and with a float epsilon they do not (the pitfall the contract documents)
    e, f = un.BatchNorm1d((20, 3), epsilon=1.0), un.BatchNorm1d((20, 3), epsilon=1.0)
    assert float(jnp.max(jnp.abs(e(x_mv) - f(x_v)))) > 0.1


def test_reference_unit_adopted_only_on_success():
    layer = un.BatchNorm0d(2)
    with pytest.raises(ValueError, match="expected input"):
        layer(jnp.ones((4, 3)) * u.mV)
    assert layer.in_unit is None
    layer(jnp.arange(8.0).reshape(4, 2) * u.nA)
    assert layer.in_unit == u.nA and layer.running_mean.value.unit == u.nA


def test_modes_and_call_override():
    layer = un.BatchNorm0d(2, momentum=0.5)
    assert layer.training
    x = data((10, 2))
    layer(x, training=False)
    np.testing.assert_array_equal(np.asarray(layer.running_mean.value), [0.0, 0.0])
    assert layer.training  # the keyword did not change the mode
    layer.eval()
    layer(x)
    np.testing.assert_array_equal(np.asarray(layer.running_mean.value), [0.0, 0.0])
    layer(x, training=True)
    assert np.abs(np.asarray(layer.running_mean.value)).sum() > 0
    assert layer.train() is layer and layer.training


def test_dimensionless_scaled_reference_unit_keeps_running_stats():
    ratio = u.mV / u.volt  # dimensionless, scale 1e-3
    x = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    layer = un.BatchNorm0d(2, momentum=0.5, in_unit=ratio)
    layer(x * ratio)
    layer(x * ratio)
    # running mean in decimals: 0.5 * (0.5 * 0 + 0.5 * m) + 0.5 * m with m the batch mean in decimals
    np.testing.assert_allclose(np.asarray(layer.running_mean.value), [0.0015, 0.003], rtol=1e-5)
    fresh = un.BatchNorm0d(2, in_unit=ratio).eval()  # running stats 0 and 1 in ratio units
    np.testing.assert_allclose(np.asarray(fresh(x * ratio)), np.asarray(x) / np.sqrt(1 + 1e-5), rtol=1e-5)


def test_grad_with_respect_to_a_cumulative_average_layer():
    layer = un.BatchNorm0d(2, momentum=None)
    grads = jax.grad(lambda layer, x: jnp.sum(layer(x) * jnp.arange(2.0)))(layer, data((5, 2)))
    assert np.isfinite(np.asarray(grads.weight.value["bias"])).all()


def test_momentum_none_is_cumulative_average():
    layer = un.BatchNorm0d(3, momentum=None)
    batches = [np.asarray(data((6, 3), seed=s, loc=s)) for s in range(4)]
    for b in batches:
        layer(jnp.asarray(b))
    means = np.mean([b.mean(0) for b in batches], 0)
    varis = np.mean([b.var(0) for b in batches], 0)
    np.testing.assert_allclose(np.asarray(layer.running_mean.value), means, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.running_var.value), varis, rtol=1e-5)
    assert np.asarray(layer.num_batches_tracked.value).tolist() == [4.0] * 3  # one count per feature


@pytest.mark.parametrize("training", [True, False])
def test_no_running_stats_normalizes_with_batch_stats(training):
    layer = un.BatchNorm0d(2, track_running_stats=False, scale_initializer=un.init.Constant(2.0))
    assert layer.running_mean is None and layer.running_var is None
    x = np.asarray(data((20, 2), loc=5.0))
    y = np.asarray(layer(jnp.asarray(x), training=training))
    np.testing.assert_allclose(y, 2 * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4, atol=1e-4)


def test_unbatched_input_and_multiple_feature_axes():
    layer = un.BatchNorm1d((5, 3), feature_axis=(0, 1))
    assert layer.running_mean.value.shape == (5, 3)
    x = np.asarray(data((7, 5, 3)))
    y = np.asarray(layer(jnp.asarray(x)))
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4, atol=1e-4)
    single = un.BatchNorm1d((5, 3))
    x1 = np.asarray(data((5, 3)))
    np.testing.assert_allclose(
        np.asarray(single(jnp.asarray(x1))),
        (x1 - x1.mean(0)) / np.sqrt(x1.var(0) + 1e-5),
        rtol=1e-4,
        atol=1e-4,
    )


def test_mask_excludes_elements():
    layer = un.BatchNorm0d(2, momentum=0.0)
    x = np.asarray(data((10, 2)))
    mask = np.ones((10, 2), bool)
    mask[7:] = False
    layer(jnp.asarray(np.where(mask, x, 1e6)), mask=mask)
    np.testing.assert_allclose(np.asarray(layer.running_mean.value), x[:7].mean(0), rtol=1e-5)


def test_complex_and_bfloat16():
    layer = un.BatchNorm0d(2, affine=False)
    xc = jnp.asarray(
        np.random.default_rng(0).normal(size=(6, 2)) + 1j * np.arange(12).reshape(6, 2), jnp.complex64
    )
    y = layer(xc)
    assert jnp.iscomplexobj(y) and float(jnp.abs(y.imag).max()) > 0
    xn = np.asarray(xc, np.complex128)
    ref = (xn - xn.mean(0)) / np.sqrt(np.mean(np.abs(xn - xn.mean(0)) ** 2, 0) + 1e-5)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)
    layer16 = un.BatchNorm0d(2)
    y16 = layer16(data((6, 2)).astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16 and layer16.running_mean.value.dtype == jnp.float32


def test_layer_is_a_pytree_under_plain_jit():
    layer = un.BatchNorm1d((10, 4), in_unit=u.mV, momentum=0.9)
    step = jax.jit(lambda layer, x: (layer(x), layer))
    x = data((8, 10, 4)) * u.mV
    y, new = step(layer, x)
    eager = un.BatchNorm1d((10, 4), in_unit=u.mV, momentum=0.9)
    np.testing.assert_allclose(np.asarray(y), np.asarray(eager(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(new.running_mean.value.mantissa), np.asarray(eager.running_mean.value.mantissa), rtol=1e-6
    )
    # the original layer is untouched by the pure jit call
    np.testing.assert_array_equal(np.asarray(layer.running_mean.value.mantissa), np.zeros(4))
    leaves = jax.tree_util.tree_leaves(layer)
    assert len(leaves) == 4  # scale, bias, running mean, running var


def test_grad_through_layer_is_finite_and_skips_running_stats():
    layer = un.BatchNorm0d(3)

    def loss(layer, x):
        return jnp.sum(layer(x) ** 2 * jnp.arange(3.0))

    grads = jax.grad(loss)(layer, data((8, 3)))
    assert np.isfinite(np.asarray(grads.weight.value["scale"])).all()
    np.testing.assert_array_equal(np.asarray(grads.running_mean.value), np.zeros(3))


def test_repr_names_configuration():
    text = repr(un.BatchNorm0d(3, in_unit=u.mV))
    assert text.startswith("BatchNorm0d(") and "in_unit=mV" in text.replace('Unit("mV")', "mV")
