"""BatchRenorm0d-3d against the paper's formulas (Ioffe 2017) in float64 NumPy, and against BatchNorm."""

import os
import tempfile

import brainunit as u
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

import unitnorm as un

EPS32 = float(np.finfo(np.float32).eps)


def data(shape, seed=0, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, shape)


def paper(x, rm, rv, g, b, eps, r_max, d_max, momentum, raxes):
    """Algorithm 1 of Ioffe (2017), float64; running statistics as BatchNorm's (biased variance)."""
    mb, vb = x.mean(raxes), x.var(raxes)
    sb, s = np.sqrt(vb + eps), np.sqrt(rv + eps)
    r = np.clip(sb / s, 1 / r_max, r_max)
    d = np.clip((mb - rm) / s, -d_max, d_max)
    xhat = (x - mb) / sb
    y = (xhat * r + d) * g + b
    return y, momentum * rm + (1 - momentum) * mb, momentum * rv + (1 - momentum) * vb, (xhat, r, d, sb)


def paper_grads(w, g, raxes, parts):
    """Closed-form gradients of sum(w * y) with r and d held constant (the paper's backward pass)."""
    xhat, r, d, sb = parts
    n = np.prod([xhat.shape[a] for a in raxes])
    dxhat = w * r * g
    dx = (n * dxhat - dxhat.sum(raxes) - xhat * (dxhat * xhat).sum(raxes)) / (n * sb)
    return dx, (w * (xhat * r + d)).sum(raxes), w.sum(raxes)


def layer64(cls, in_size, rm, rv, **kw):
    layer = cls(in_size, dtype=jnp.float64, momentum=0.9, epsilon=1e-3, **kw)
    layer.running_mean.value = jnp.asarray(rm, jnp.float64)
    layer.running_var.value = jnp.asarray(rv, jnp.float64)
    g, b = data(rm.shape, seed=7, loc=1.0, scale=0.3), data(rm.shape, seed=8)
    layer.weight.value = {"scale": jnp.asarray(g), "bias": jnp.asarray(b)}
    return layer, g, b


@pytest.mark.parametrize(
    ("cls", "shape", "raxes"),
    [
        (un.BatchRenorm0d, (16, 3), (0,)),
        (un.BatchRenorm1d, (4, 5, 3), (0, 1)),
        (un.BatchRenorm2d, (3, 2, 4, 3), (0, 1, 2)),
    ],
)
@pytest.mark.parametrize(("r_max", "d_max"), [(1.2, 0.3), (3.0, 5.0), (1.0, 0.0)])
def test_forward_gradient_and_running_updates_equal_the_paper_in_float64(cls, shape, raxes, r_max, d_max):
    with jax.enable_x64(True):
        x = data(shape, seed=1, loc=0.5, scale=2.0)
        rm, rv = data(shape[-1:], seed=2), np.array([0.5, 2.0, 9.0])  # r and d clip on some features
        layer, g, b = layer64(cls, shape[1:], rm, rv, r_max=r_max, d_max=d_max)
        w = data(shape, seed=3)
        y_ref, rm_ref, rv_ref, parts = paper(x, rm, rv, g, b, 1e-3, r_max, d_max, 0.9, raxes)
        dx_ref, dg_ref, db_ref = paper_grads(w, g, raxes, parts)

        def loss(x, weight):
            fresh = jax.tree_util.tree_map(lambda v: v, layer)  # a copy: the layer is a pytree
            fresh.weight.value = weight
            return jnp.sum(fresh(x) * w)

        dx, dweight = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), layer.weight.value)
        y = layer(jnp.asarray(x))
        for got, want in [
            (y, y_ref),
            (layer.running_mean.value, rm_ref),
            (layer.running_var.value, rv_ref),
            (dx, dx_ref),
            (dweight["scale"], dg_ref),
            (dweight["bias"], db_ref),
        ]:
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-11)
        # some clipping happened where intended, so the test exercises the limits
        xhat, r, d, _ = parts
        if r_max < 3:
            assert np.any(r == r_max) or np.any(r == 1 / r_max)


def test_unit_limits_are_batch_norm_in_every_state_and_gradient():
    x = jnp.asarray(data((12, 4), seed=4, loc=-65.0, scale=3.0), jnp.float32) * u.mV
    kw = dict(
        in_unit=u.mV,
        momentum=0.8,
        scale_initializer=un.init.Constant(2.0 * u.mV),
        bias_initializer=un.init.Constant(-1.0 * u.mV),
    )
    renorm, bn = un.BatchRenorm0d(4, r_max=1.0, d_max=0.0, **kw), un.BatchNorm0d(4, **kw)
    for _ in range(3):  # after the first step the running statistics differ from the batch's
        y_r, y_b = renorm(x), bn(x)
        np.testing.assert_array_equal(np.asarray(y_r.mantissa), np.asarray(y_b.mantissa))
        x = x * 1.1
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(
            np.asarray(getattr(renorm, name).value.mantissa), np.asarray(getattr(bn, name).value.mantissa)
        )

    def grad(layer):
        return jax.grad(lambda m: jnp.sum(jnp.sin(layer(m * u.mV, training=True).mantissa)))(x.mantissa)

    np.testing.assert_array_equal(np.asarray(grad(renorm)), np.asarray(grad(bn)))


def test_wide_limits_normalize_with_the_running_statistics_in_training():
    x = data((32, 3), seed=5, loc=2.0, scale=3.0).astype(np.float32)
    rm, rv = np.array([1.0, -1.0, 0.5], np.float32), np.array([4.0, 0.25, 1.0], np.float32)
    layer = un.BatchRenorm0d(3, r_max=1e6, d_max=1e6, epsilon=1e-5)
    layer.running_mean.value, layer.running_var.value = jnp.asarray(rm), jnp.asarray(rv)
    y = np.asarray(layer(jnp.asarray(x)))
    want = (x.astype(np.float64) - rm) / np.sqrt(rv.astype(np.float64) + 1e-5)
    # y = xhat * r + d: each term carries a few float32 roundings of its own size
    xhat = (x - x.mean(0)) / x.std(0)
    bound = 16 * EPS32 * (np.abs(xhat).max() * np.sqrt(x.var(0) / rv).max() + np.abs(want).max())
    np.testing.assert_allclose(y, want, atol=bound, rtol=0)


def test_schedules_read_the_step_count():
    x = jnp.asarray(data((8, 2), seed=6, loc=3.0, scale=2.0), jnp.float32)
    seen = []

    def r_max(t):
        seen.append(t)
        return jnp.where(t < 1, 1.0, 1e6)

    layer = un.BatchRenorm0d(2, r_max=r_max, d_max=lambda t: jnp.where(t < 1, 0.0, 1e6), momentum=0.5)
    bn = un.BatchNorm0d(2, momentum=0.5)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(bn(x)))  # step 0: batch norm
    assert float(layer.num_steps.value) == 1.0 and float(seen[0]) == 0.0
    rm, rv = np.asarray(layer.running_mean.value), np.asarray(layer.running_var.value)
    y = np.asarray(layer(x))  # step 1: the running statistics
    want = (np.asarray(x, np.float64) - rm) / np.sqrt(rv.astype(np.float64) + 1e-5)
    np.testing.assert_allclose(y, want, atol=64 * EPS32 * np.abs(want).max(), rtol=0)
    assert float(layer.num_steps.value) == 2.0
    layer.eval()(x)  # evaluation takes no step
    assert float(layer.num_steps.value) == 2.0


def test_jit_of_the_layer_equals_eager_and_returns_the_updated_layer():
    x = jnp.asarray(data((6, 4, 2), seed=9), jnp.float32) * u.mV
    eager = un.BatchRenorm1d((4, 2), in_unit=u.mV, r_max=lambda t: 1 + t, d_max=0.5)
    traced = un.BatchRenorm1d((4, 2), in_unit=u.mV, r_max=lambda t: 1 + t, d_max=0.5)
    traced.r_max = eager.r_max  # the same schedule object: the same static configuration
    step = jax.jit(lambda layer, x: (layer(x), layer))
    for _ in range(3):
        y_e = eager(x)
        y_t, traced = step(traced, x)
        np.testing.assert_allclose(
            np.asarray(y_t.mantissa if hasattr(y_t, "mantissa") else y_t),
            np.asarray(y_e),
            rtol=0,
            atol=8 * EPS32 * 4,
        )
    assert float(traced.num_steps.value) == 3.0


@given(st.floats(0.05, 20.0), st.sampled_from([u.volt, u.mV, u.uvolt]))
def test_same_outputs_whatever_unit_the_data_arrive_in(spread, unit):
    x = data((10, 3), seed=10, loc=-65.0, scale=spread).astype(np.float32)
    eps = 1e-3 * u.mV**2
    ref = un.BatchRenorm0d(3, in_unit=u.mV, epsilon=eps, r_max=1.5, d_max=0.5)
    other = un.BatchRenorm0d(3, in_unit=unit, epsilon=eps, r_max=1.5, d_max=0.5)
    for layer in (ref, other):
        layer.running_mean.value = (jnp.full(3, -64.0) * u.mV).in_unit(layer.in_unit)
        layer.running_var.value = (jnp.full(3, 4.0) * u.mV**2).in_unit(layer.in_unit**2)
    y_ref = np.asarray(ref(jnp.asarray(x) * u.mV))
    y = np.asarray(other((jnp.asarray(x) * u.mV).in_unit(unit)))
    # converting the unit rounds x once (relative EPS32 of |x| ~ 65 mV), amplified by 1/sigma_B
    bound = 64 * EPS32 * (65.0 / spread + 1) * 1.5
    np.testing.assert_allclose(y, y_ref, atol=bound, rtol=0)


def test_checkpoint_round_trip_and_schedules_refused():
    layer = un.BatchRenorm2d((2, 2, 3), in_unit=u.mV, r_max=2.0, d_max=1.0, debias=True)
    layer(jnp.asarray(data((4, 2, 2, 3), seed=11), jnp.float32) * u.mV)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "renorm.npz")
        un.save(path, layer)
        back = un.load(path)
        assert type(back) is un.BatchRenorm2d and (back.r_max, back.d_max, back.debias) == (2.0, 1.0, True)
        for k, v in layer.state_dict().items():
            np.testing.assert_array_equal(
                np.asarray(u.get_mantissa(back.state_dict()[k])), np.asarray(u.get_mantissa(v))
            )
        scheduled = un.BatchRenorm0d(2, r_max=lambda t: 1 + t)
        with pytest.raises(TypeError, match="r_max"):
            un.save(os.path.join(folder, "s.npz"), scheduled)
        assert os.listdir(folder) == ["renorm.npz"]


def test_configuration_errors():
    with pytest.raises(ValueError, match=r"r_max must be >= 1, got 0.5"):
        un.BatchRenorm0d(2, r_max=0.5)
    with pytest.raises(ValueError, match=r"d_max must be finite and >= 0, got -1.0"):
        un.BatchRenorm0d(2, d_max=-1.0)
    with pytest.raises(TypeError, match="r_max must be a float >= 1 or a callable"):
        un.BatchRenorm0d(2, r_max="3")
    with pytest.raises(ValueError, match="track_running_stats=False"):
        un.BatchRenorm0d(2, track_running_stats=False)


def test_brainstate_states_and_fit_flag():
    brainstate = pytest.importorskip("brainstate")
    layer = un.BatchRenorm0d(
        2, in_unit=u.mV, param_type=brainstate.ParamState, mean_type=brainstate.BatchState, r_max=2.0
    )
    assert isinstance(layer.running_mean, brainstate.BatchState) and isinstance(
        layer.weight, brainstate.ParamState
    )
    x = jnp.asarray(data((6, 2), seed=12, loc=1.0), jnp.float32) * u.mV
    with brainstate.environ.context(fit=False):
        layer(x)
    np.testing.assert_array_equal(np.asarray(layer.running_mean.value.mantissa), [0.0, 0.0])
    f = brainstate.transform.jit(lambda x: layer(x))
    with brainstate.environ.context(fit=True):
        f(x)
    assert np.all(np.asarray(layer.running_mean.value.mantissa) != 0.0)


def test_strict_promotion_modes():
    x = jnp.asarray(data((6, 4, 3), seed=13), jnp.float32)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        layer = un.BatchRenorm1d((4, 3), r_max=lambda t: 1 + t, d_max=2.0, debias=True, virtual_batch_size=3)
        y_eager = layer(x)
        y_jit, layer = jax.jit(lambda layer, x: (layer(x), layer))(layer, x)
        layer.freeze(affine=True)(x, mask=x > 0)
    assert y_eager.dtype == y_jit.dtype == jnp.float32 and float(layer.num_steps.value) == 2.0
