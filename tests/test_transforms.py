"""Layers and functional under JAX transformations, with Quantity inputs.

jit == eager, finite gradients that agree with flax.nnx, running statistics never
differentiated, vmap over recordings (separate and shared statistics), lax.scan over time
chunks, jax.checkpoint, gradients w.r.t. parameters only, and when jit retraces.
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import U32, U64, assert_close_f32, f32_bound, norm64, stats_bounds
from flax import nnx

import unitnorm as un

F = un.functional


def data(shape, seed=0, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


def mantissa(v):
    return np.asarray(v.mantissa if isinstance(v, u.Quantity) else v)


def step(layer, x, training=None):
    return layer(x, training=training), layer


LAYERS = [
    (un.BatchNorm0d, (5,), (6, 5)),
    (un.BatchNorm1d, (7, 3), (4, 7, 3)),
    (un.BatchNorm2d, (3, 4, 2), (2, 3, 4, 2)),
]


# --- jit == eager ------------------------------------------------------------------------------------


@pytest.fixture
def float64():
    """jit vs eager is a claim about two unitnorm code paths, not about float32 rounding: in float64
    their difference is bounded by twice the float64 error bound, 1e9 times below any formula bug."""
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("cls,in_size,shape", LAYERS)
@pytest.mark.parametrize("unit", [None, u.mV])
@pytest.mark.parametrize("fast", [True, False])
def test_jit_equals_eager(cls, in_size, shape, unit, fast, float64):
    kw = dict(momentum=0.8, use_fast_variance=fast, in_unit=unit, param_dtype=jnp.float64)
    if unit is not None:
        kw.update(scale_initializer=un.init.Constant(2 * u.mV), bias_initializer=un.init.Constant(-65 * u.mV))
    scale, bias = (2.0, 65.0) if unit is not None else (1.0, 0.0)
    raxes = tuple(range(len(shape) - 1))
    eager, traced = cls(in_size, **kw), cls(in_size, **kw)
    jstep = jax.jit(step, static_argnames="training")
    mean_err = var_err = 0.0
    for i in range(3):
        xm = data(shape, seed=i, loc=-60.0 if unit else 1.0, scale=3.0).astype(np.float64)
        x = xm * unit if unit is not None else xm
        y_eager = eager(x)
        y_jit, traced = jstep(traced, x)
        assert mantissa(y_jit).dtype == np.float64
        bound = f32_bound(xm, raxes, eps=1e-5, scale=scale, roundoff=U64) + 4 * U64 * bias
        assert_close_f32(mantissa(y_jit), mantissa(y_eager), 2 * bound)
        assert type(y_jit) is type(y_eager)
        m_err, v_err = stats_bounds(xm, raxes, roundoff=U64)
        mean_err, var_err = max(mean_err, m_err.max()), max(var_err, v_err.max())
    for name, err in (("running_mean", mean_err), ("running_var", var_err)):
        a, b = getattr(traced, name).value, getattr(eager, name).value
        assert u.get_unit(a) == u.get_unit(b)
        assert_close_f32(mantissa(a), mantissa(b), 2 * (err + 4 * U64 * np.abs(mantissa(b)).max()))
    xm = data(shape, seed=9, loc=-60.0 if unit else 1.0).astype(np.float64)
    x = xm * (unit if unit is not None else 1)
    y_jit, after = jstep(traced, x, training=False)
    # evaluation: (x - rm) / sqrt(rv + eps) from statistics that differ by the bounds above
    rm, rv = mantissa(traced.running_mean.value), mantissa(traced.running_var.value) + 1e-5
    y = np.abs(xm - rm) / np.sqrt(rv)
    moved = (2 * (mean_err + 4 * U64 * np.abs(xm).max())) / np.sqrt(rv) + y * 2 * var_err / (2 * rv)
    bound = scale * float(np.max(moved + 8 * U64 * y)) + 4 * U64 * bias
    assert_close_f32(mantissa(y_jit), mantissa(eager(x, training=False)), bound)
    np.testing.assert_array_equal(mantissa(after.running_mean.value), mantissa(traced.running_mean.value))


def test_functional_jit_equals_eager_with_traced_momentum(float64):
    xm = data((6, 3), loc=-65.0, scale=2.0).astype(np.float64)
    x = xm * u.mV
    rm, rv = jnp.zeros(3, jnp.float64) * u.mV, jnp.ones(3, jnp.float64) * u.mV**2

    def f(x, rm, rv, momentum):
        return F.batch_norm(x, rm, rv, training=True, momentum=momentum)

    eager = f(x, rm, rv, 0.7)
    jitted = jax.jit(f)(x, rm, rv, jnp.float64(0.7))
    mean_err, var_err = (b.max() for b in stats_bounds(xm, 0, roundoff=U64))
    bounds = (
        f32_bound(xm, 0, eps=1e-5, roundoff=U64),
        0.3 * mean_err + 4 * U64 * 65,
        0.3 * var_err + 4 * U64,
    )
    for a, b, bound in zip(eager, jitted, bounds, strict=True):
        assert u.get_unit(a) == u.get_unit(b) and mantissa(b).dtype == np.float64
        assert_close_f32(mantissa(a), mantissa(b), 2 * bound)
    assert_close_f32(mantissa(jitted[1]), 0.3 * xm.mean(0), bounds[1])


# --- gradients ---------------------------------------------------------------------------------------


def _batch_norm_grads_float64(x, w, eps):
    """d/dx, d/dscale, d/dbias of sum(batch_norm(x) * w) over axes (0, 1), in float64 (textbook backward)."""
    x = np.asarray(x, np.float64)
    sigma = np.sqrt(x.var((0, 1)) + eps)
    x_hat = (x - x.mean((0, 1))) / sigma
    g_x = (w - w.mean((0, 1)) - x_hat * (w * x_hat).mean((0, 1))) / sigma
    return g_x, (w * x_hat).sum((0, 1)), w.sum((0, 1)), x_hat, sigma


def _grad_bounds(x, w, eps, *, unshifted=False, k=8.0):
    """Error bounds on float32 gradients of sum(batch_norm(x) * w), from the bound on x_hat (see _oracle)."""
    g_x, _, _, x_hat, sigma = _batch_norm_grads_float64(x, w, eps)
    n = x.shape[0] * x.shape[1]
    b_hat = f32_bound(x, (0, 1), eps=eps, unshifted=unshifted, k=k)  # absolute error on x_hat
    w_max, h_max = np.abs(w).max(), np.abs(x_hat).max()
    sums = k * U32 * np.sqrt(n) * w_max * (1 + h_max**2)
    b_x = (sums + b_hat * w_max * (1 + 2 * h_max)) / sigma.min() + np.abs(g_x).max() * b_hat
    b_scale = np.abs(w).sum((0, 1)).max() * b_hat + k * U32 * np.sqrt(n) * np.abs(w * x_hat).sum((0, 1)).max()
    b_bias = k * U32 * np.sqrt(n) * np.abs(w).sum((0, 1)).max()
    return b_x, b_scale, b_bias


@pytest.mark.parametrize("fast", [True, False])
def test_grads_finite_and_equal_to_float64_and_flax(fast):
    """d/dx, d/dscale, d/dbias of a weighted sum equal the float64 backward, and flax.nnx where flax is exact.

    Data at -65 mV +- 3 mV: flax's fast variance (E[x^2] - E[x]^2, no shift) loses
    about log10(65^2 / 9) digits there, so flax is an oracle only for its two-pass
    path; every bound comes from the data (tests/_oracle.py), not from this CPU.
    """
    x_m = data((8, 10, 4), seed=1, loc=-65.0, scale=3.0)
    w = data((8, 10, 4), seed=2).astype(np.float64)
    layer = un.BatchNorm1d((10, 4), in_unit=u.mV, use_fast_variance=fast)

    def ours(params, x):
        return jnp.sum(un.load_params(layer, params)(x * u.mV) * w.astype(np.float32))

    g_params, g_x = jax.grad(ours, argnums=(0, 1))(un.params(layer), jnp.asarray(x_m))
    grads = (g_x, g_params["weight"]["scale"], g_params["weight"]["bias"])
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
    truth = _batch_norm_grads_float64(x_m, w, 1e-5)[:3]
    for g, ref, bound in zip(grads, truth, _grad_bounds(x_m, w, 1e-5), strict=True):
        assert_close_f32(g, ref, bound)

    bn = nnx.BatchNorm(4, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0))

    def theirs(bn, x):
        return jnp.sum(bn(x, use_running_average=False) * w.astype(np.float32))

    f_params, f_x = nnx.grad(theirs, argnums=(0, 1))(bn, jnp.asarray(x_m))
    flax_grads = (f_x, f_params["scale"][...], f_params["bias"][...])
    # two float32 results, each within its bound of the truth, are within twice the bound of each other
    for g, f, bound in zip(grads, flax_grads, _grad_bounds(x_m, w, 1e-5), strict=True):
        assert_close_f32(g, f, 2 * bound)


def test_grad_with_respect_to_quantity_input_and_mv_scale():
    mv = un.init.Constant(1 * u.mV), un.init.Constant(0 * u.mV)
    layer = un.BatchNorm0d(3, in_unit=u.mV, scale_initializer=mv[0], bias_initializer=mv[1])

    w = data((5, 3), seed=4)

    def loss(x):
        return jnp.sum((layer(x, training=True) * w).to_decimal(u.mV))

    x = data((5, 3), loc=-65.0, scale=2.0)
    g = jax.grad(loss)(x * u.mV)
    assert isinstance(g, u.Quantity) and np.isfinite(mantissa(g)).all()
    # the textbook batch-norm backward pass, in float64: (w - mean(w) - x_hat * mean(w * x_hat)) / sigma
    x64 = x.astype(np.float64)
    sigma = np.sqrt(x64.var(0) + 1e-5)
    x_hat = (x64 - x64.mean(0)) / sigma
    ref = (w - w.mean(0) - x_hat * (w * x_hat).mean(0)) / sigma
    np.testing.assert_allclose(mantissa(g), ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_running_statistics_are_never_differentiated(fast):
    layer = un.BatchNorm1d((10, 4), in_unit=u.mV, use_fast_variance=fast, momentum=0.5)

    def stats_after_step(params, x):
        new = un.load_params(layer, params)
        new(x * u.mV)
        return jnp.sum(new.running_mean.value.mantissa) + jnp.sum(new.running_var.value.mantissa)

    x = jnp.asarray(data((8, 10, 4), loc=3.0))
    g_params, g_x = jax.grad(stats_after_step, argnums=(0, 1))(un.params(layer), x)
    np.testing.assert_array_equal(np.asarray(g_x), 0.0)
    for leaf in jax.tree_util.tree_leaves(g_params):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    # the functional form too, and the value did move (the zero is not a frozen state)
    gf = jax.grad(
        lambda x: jnp.sum(F.batch_norm(x, jnp.zeros(4), jnp.ones(4), training=True, momentum=0.5)[1])
    )(x.reshape(-1, 4))
    np.testing.assert_array_equal(np.asarray(gf), 0.0)
    assert stats_after_step(un.params(layer), x) != pytest.approx(4.0)


def test_params_and_partition_give_the_same_grads():
    model = [un.BatchNorm0d(3, momentum=0.9), un.BatchNorm0d(3, momentum=0.9)]
    x = jnp.asarray(data((6, 3), loc=2.0))
    w = jnp.asarray(data((6, 3), seed=3))

    def forward(model, x):
        return jnp.sum(model[1](model[0](x) * 3.0 + 1.0) * w)

    g1 = jax.grad(lambda p: forward(un.load_params(model, p), x))(un.params(model))
    assert sorted(g1) == ["0.weight", "1.weight"]
    trainable, rest = un.partition(model)
    g2 = jax.grad(lambda t: forward(un.merge(t, rest), x))(trainable)
    assert g2[0].running_mean is None and isinstance(g2[1].weight, un.NormalizationParamState)
    for i in (0, 1):
        for k in ("scale", "bias"):
            np.testing.assert_array_equal(np.asarray(g1[f"{i}.weight"][k]), np.asarray(g2[i].weight.value[k]))
    # neither helper touched the model
    for layer in model:
        np.testing.assert_array_equal(np.asarray(layer.running_mean.value), 0.0)


def test_params_helpers_reject_bad_input_and_change_nothing():
    layer = un.BatchNorm0d(2)
    known = r"\['running_mean', 'running_var', 'weight'\]"
    with pytest.raises(KeyError, match=r"no State at \['wieght'\].*" + known):
        un.load_params(layer, {"wieght": {}})
    with pytest.raises(ValueError, match="value for 'weight' has structure"):
        un.load_params(layer, {"weight": {"scale": jnp.ones(2)}})
    with pytest.raises(TypeError, match="values must be a dict"):
        un.load_params(layer, [jnp.ones(2)])
    with pytest.raises(TypeError, match="unitnorm State classes.*got <class 'int'>"):
        un.params(layer, int)
    with pytest.raises(TypeError, match="unitnorm State classes"):
        un.partition(layer, "ParamState")
    a, _ = un.partition(layer)
    with pytest.raises(ValueError, match="two parts both hold a value"):
        un.merge(a, a)
    with pytest.raises(ValueError, match="do not have one structure"):
        un.merge(a, [a])
    assert np.asarray(layer.weight.value["scale"]).tolist() == [1.0, 1.0]
    assert sorted(un.params(layer, un.BatchState)) == ["running_mean", "running_var"]


# --- vmap, scan, checkpoint --------------------------------------------------------------------------


def test_vmap_over_recordings_keeps_separate_statistics():
    """Each recording gets its own copy of the layer and its own running statistics."""
    rec = data((3, 4, 50, 2), loc=-65.0, scale=5.0) + np.arange(3, dtype=np.float32)[:, None, None, None] * 10
    layer = un.BatchNorm1d((50, 2), in_unit=u.uvolt, momentum=0.9)
    y, layers = jax.vmap(step, in_axes=(None, 0))(layer, rec * u.uvolt)
    r64 = rec.astype(np.float64)
    mean, var = r64.mean((1, 2)), r64.var((1, 2))
    assert layers.running_mean.value.unit == u.uvolt and layers.running_mean.value.shape == (3, 2)
    np.testing.assert_allclose(mantissa(layers.running_mean.value), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(mantissa(layers.running_var.value), 0.9 + 0.1 * var, rtol=1e-5)
    ref = (r64 - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_vmap_with_axis_name_shares_statistics_across_recordings(fast):
    """With axis_name the mapped recordings act as one batch, weighted by their valid samples."""
    rec = data((3, 4, 50, 2), seed=5, loc=-65.0, scale=5.0)
    mask = np.ones((3, 4, 50, 2), bool)
    mask[0, :, 20:] = False  # recordings of different lengths (ragged trials)
    mask[2, :, 45:] = False
    layer = un.BatchNorm1d((50, 2), in_unit=u.mV, momentum=0.0, axis_name="rec", use_fast_variance=fast)
    y, layers = jax.vmap(lambda layer, x, m: (layer(x, m), layer), in_axes=(None, 0, 0), axis_name="rec")(
        layer, rec * u.mV, mask
    )
    valid = rec.astype(np.float64).transpose(3, 0, 1, 2)[mask.transpose(3, 0, 1, 2)].reshape(2, -1)
    mean, var = valid.mean(1), valid.var(1)
    for r in range(3):
        np.testing.assert_allclose(mantissa(layers.running_mean.value[r]), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mantissa(layers.running_var.value[r]), var, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y), (rec - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)


def test_scan_over_time_chunks_matches_a_python_loop_and_numpy():
    """A long recording fed in chunks: the layer is the scan carry."""
    signal = data((8, 64, 3), seed=7, loc=-65.0, scale=4.0)  # 8 chunks of 64 samples, 3 channels, mV
    signal += np.linspace(0, 5, 8, dtype=np.float32)[:, None, None]  # a slow drift
    layer = un.BatchNorm0d(3, in_unit=u.mV, momentum=0.9)
    final, ys = jax.lax.scan(lambda layer, x: step(layer, x)[::-1], layer, signal * u.mV)
    loop = un.BatchNorm0d(3, in_unit=u.mV, momentum=0.9)
    loop_ys = [loop(chunk * u.mV) for chunk in signal]
    # scan and the Python loop are two float32 programs (-65 mV, sigma 4): each against the truth
    bound = max(f32_bound(chunk, 0, eps=1e-5) for chunk in signal)
    truth = np.stack([norm64(chunk, 0, eps=1e-5) for chunk in signal])
    assert_close_f32(ys, truth, bound)
    assert_close_f32(np.stack(loop_ys), truth, bound)
    rm, rv = np.zeros(3), np.ones(3)
    for chunk in signal.astype(np.float64):
        rm, rv = 0.9 * rm + 0.1 * chunk.mean(0), 0.9 * rv + 0.1 * chunk.var(0)
    np.testing.assert_allclose(mantissa(final.running_mean.value), rm, rtol=1e-5)
    np.testing.assert_allclose(mantissa(final.running_var.value), rv, rtol=1e-5)
    np.testing.assert_allclose(mantissa(loop.running_mean.value), rm, rtol=1e-5)


def test_scan_with_cumulative_momentum_gives_the_mean_of_chunk_means():
    signal = data((5, 32, 2), seed=8, loc=10.0)
    layer = un.BatchNorm0d(2, momentum=None, in_unit=u.UNITLESS)
    final, _ = jax.lax.scan(lambda layer, x: step(layer, x)[::-1], layer, jnp.asarray(signal))
    assert np.asarray(final.num_batches_tracked.value).tolist() == [5.0, 5.0]  # per feature
    np.testing.assert_allclose(
        np.asarray(final.running_mean.value), signal.astype(np.float64).mean((0, 1)), rtol=1e-5
    )


def test_a_scan_carry_needs_a_fixed_reference_unit():
    """The first call fixes the reference unit, which is static data: fix in_unit or call once first."""
    chunks = jnp.asarray(data((3, 8, 2), seed=9))
    scan = lambda layer: jax.lax.scan(lambda layer, x: step(layer, x)[::-1], layer, chunks)  # noqa: E731
    with pytest.raises(TypeError, match="carry output must have the same pytree structure"):
        scan(un.BatchNorm0d(2))
    warm = un.BatchNorm0d(2)
    warm(chunks[0], training=False)  # adopts the unit, changes no statistic
    np.testing.assert_array_equal(np.asarray(warm.running_mean.value), 0.0)
    final, _ = scan(warm)
    fixed, _ = scan(un.BatchNorm0d(2, in_unit=u.UNITLESS))
    np.testing.assert_array_equal(np.asarray(final.running_var.value), np.asarray(fixed.running_var.value))


def test_checkpoint_gives_the_same_value_and_grads(float64):
    """Rematerialized (jit, checkpoint) and eager: two programs, compared in float64 (see ``float64``)."""
    layer = un.BatchNorm2d((4, 4, 3), in_unit=u.mV, momentum=0.9, param_dtype=jnp.float64)
    x = jnp.asarray(data((2, 4, 4, 3), seed=11, loc=-70.0, scale=2.0), jnp.float64)
    w = jnp.asarray(data((2, 4, 4, 3), seed=12), jnp.float64)

    def loss(params, x):
        new = un.load_params(layer, params)
        return jnp.sum(jnp.tanh(new(x * u.mV)) * w), new.running_var.value.mantissa

    params = un.params(layer)
    (v1, rv1), g1 = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    (v2, rv2), g2 = jax.jit(jax.value_and_grad(jax.checkpoint(loss), argnums=(0, 1), has_aux=True))(params, x)
    # float64 results of the same formula: the float32 bounds with U64 (x_hat off by b_hat, sums by
    # u sqrt(n) of their magnitudes; the gradients' bounds are _grad_bounds' with U64)
    xm, wm = np.asarray(x), np.asarray(w)
    n = xm[..., 0].size
    b_hat = f32_bound(xm, (0, 1, 2), eps=1e-5, roundoff=U64)
    assert_close_f32(v1, v2, 2 * (b_hat * np.abs(wm).sum() + 8 * U64 * np.sqrt(xm.size) * np.abs(wm).sum()))
    var_err = stats_bounds(xm, (0, 1, 2), roundoff=U64)[1].max()
    assert_close_f32(rv1, rv2, 2 * (0.1 * var_err + 4 * U64))
    assert all(leaf.dtype == np.float64 for leaf in jax.tree_util.tree_leaves(g2))
    sigma = np.sqrt(xm.var((0, 1, 2)) + 1e-5).min()
    x_hat = np.abs(norm64(xm, (0, 1, 2), eps=1e-5)).max()
    grad_bound = (b_hat * (1 + 2 * x_hat) + 8 * U64 * np.sqrt(n) * (1 + x_hat**2)) * np.abs(wm).max()
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
        assert np.isfinite(np.asarray(b)).all()
        assert_close_f32(a, b, 2 * n * grad_bound / sigma)


# --- retracing ---------------------------------------------------------------------------------------


def counting_step():
    traces = []

    def f(layer, x):
        traces.append(None)
        return layer(x), layer

    return jax.jit(f), traces


def test_same_unit_and_shape_do_not_retrace_a_new_unit_does():
    jstep, traces = counting_step()
    layer = un.BatchNorm0d(3, in_unit=u.mV)
    x = jnp.asarray(data((4, 3), loc=-65.0))
    for _ in range(3):
        _, layer = jstep(layer, x * u.mV)
    assert len(traces) == 1
    _, layer = jstep(layer, x / 1000 * u.volt)  # same dimension, new unit: a new trace (then converted)
    assert len(traces) == 2
    _, layer = jstep(layer, x * u.mV)  # back to mV: the first trace is reused
    assert len(traces) == 2
    _, layer = jstep(layer, jnp.ones((5, 3)) * u.mV)  # new shape
    assert len(traces) == 3
    layer.eval()  # the mode is static too
    _, layer = jstep(layer, x * u.mV)
    assert len(traces) == 4


def test_a_layer_that_adopts_its_unit_traces_once_more():
    """The first call fixes the reference unit (static data) and the running stats become Quantities."""
    jstep, traces = counting_step()
    layer = un.BatchNorm0d(3)
    x = jnp.asarray(data((4, 3))) * u.mV
    for _ in range(4):
        _, layer = jstep(layer, x)
    assert len(traces) == 2
    assert layer.in_unit == u.mV


def test_new_values_of_momentum_in_functional_do_not_retrace():
    traces = []

    @jax.jit
    def f(x, m):
        traces.append(None)
        return F.batch_norm(x, jnp.zeros(2) * u.mV, jnp.ones(2) * u.mV**2, training=True, momentum=m)

    x = jnp.ones((3, 2)) * u.mV
    for m in (0.1, 0.5, 0.9):
        f(x, m)
    assert len(traces) == 1
