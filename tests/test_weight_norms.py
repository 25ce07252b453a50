"""SpectralNorm and WeightNorm against flax.nnx (same keys and data) and float64 NumPy."""

import os
import tempfile
import warnings

import brainunit as u
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

import unitnorm as un

nnx = pytest.importorskip("flax.nnx")

EPS32 = float(np.finfo(np.float32).eps)


def data(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(0.0, scale, shape).astype(np.float32)


def mantissa(v):
    return np.asarray(v.mantissa if isinstance(v, u.Quantity) else v)


def power_iteration(w, u0, n, eps=1e-12):
    """Float64 NumPy: flax's power iteration on W flattened to (-1, last)."""
    w = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    uu = np.asarray(u0, np.float64)
    for _ in range(n):
        v = uu @ w.T
        v = v / np.sqrt((v * v).sum() + eps)
        uu = v @ w
        uu = uu / np.sqrt((uu * uu).sum() + eps)
    sigma = (v @ w @ uu.T)[0, 0]
    return w / sigma, uu, sigma


def matmul_bound(x, w):
    """Rounding bound of a float32 x @ w: a few ulps per term of |x| @ |w| (length-scaled)."""
    return 4 * x.shape[-1] * EPS32 * (np.abs(x) @ np.abs(w))


def twin(make, n_steps, **kw):
    """A flax SpectralNorm and ours around two copies of one layer, with the key flax draws u from."""
    rngs = nnx.Rngs(0)
    theirs = nnx.SpectralNorm(make(rngs), n_steps=n_steps, rngs=rngs, **kw)
    rngs = nnx.Rngs(0)
    layer = make(rngs)
    ours = un.SpectralNorm(layer, n_steps=n_steps, key=rngs.params(), **kw)
    return theirs, ours, layer


# -- SpectralNorm ----------------------------------------------------------------------------
@pytest.mark.parametrize("n_steps", [1, 3])
@pytest.mark.parametrize(
    ("make", "x_shape"),
    [
        (lambda rngs: nnx.Linear(4, 5, rngs=rngs), (3, 4)),
        (lambda rngs: nnx.Conv(2, 3, kernel_size=(3, 3), rngs=rngs), (2, 5, 5, 2)),  # a 4-D kernel, flattened
    ],
)
def test_spectral_norm_equals_flax_on_the_same_keys_and_data(make, x_shape, n_steps):
    theirs, ours, layer = twin(make, n_steps)
    kernel0 = np.asarray(layer.kernel[...])
    np.testing.assert_array_equal(
        np.asarray(ours.u.value), np.asarray(theirs.batch_stats[("kernel", "u")][...])
    )
    x = jnp.asarray(data(x_shape, seed=1))
    for step in range(3):
        y_f, y_o = np.asarray(theirs(x)), np.asarray(ours(x))
        flat = kernel0.reshape(-1, kernel0.shape[-1])
        bound = 8 * flat.shape[0] * EPS32 * np.abs(y_f).max() + 8 * EPS32
        np.testing.assert_allclose(y_o, y_f, atol=bound, rtol=0)
        u_f = np.asarray(theirs.batch_stats[("kernel", "u")][...])
        np.testing.assert_allclose(np.asarray(ours.u.value), u_f, atol=64 * EPS32, rtol=0)
        if step == 0:  # flax then normalizes its already normalized kernel: its sigma becomes relative
            s_f = float(theirs.batch_stats[("kernel", "sigma")][...])
            np.testing.assert_allclose(float(ours.sigma.value), s_f, rtol=16 * EPS32)
    np.testing.assert_array_equal(np.asarray(layer.kernel[...]), kernel0)  # our wrapper puts the weight back


@pytest.mark.parametrize("n_steps", [1, 2, 5])
def test_spectral_norm_equals_a_float64_power_iteration(n_steps):
    with jax.enable_x64(True):
        w = np.random.default_rng(2).normal(size=(3, 2, 4))
        sn = un.SpectralNorm(jnp.asarray(w), n_steps=n_steps, key=3, param_dtype=jnp.float64)
        u0 = np.asarray(sn.u.value)
        want, u_ref, s_ref = power_iteration(w, u0, n_steps)
        got = np.asarray(sn())
        np.testing.assert_allclose(got, want.reshape(w.shape), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(sn.u.value), u_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(float(sn.sigma.value), s_ref, rtol=1e-12)


def test_many_steps_find_the_largest_singular_value():
    w = data((6, 4), seed=4)
    sn = un.SpectralNorm(jnp.asarray(w), n_steps=200)
    sn()
    s_true = np.linalg.svd(w.astype(np.float64), compute_uv=False)[0]
    np.testing.assert_allclose(float(sn.sigma.value), s_true, rtol=64 * EPS32)
    np.testing.assert_allclose(
        np.linalg.svd(np.asarray(sn(), np.float64), compute_uv=False)[0], 1.0, rtol=64 * EPS32
    )


def test_update_stats_modes():
    w = jnp.asarray(data((5, 3), seed=5))
    sn = un.SpectralNorm(w, update_stats=False)
    u0 = np.asarray(sn.u.value)
    sn()
    np.testing.assert_array_equal(np.asarray(sn.u.value), u0)
    assert float(sn.sigma.value) == 1.0
    sn(update_stats=True)
    assert not np.array_equal(np.asarray(sn.u.value), u0)
    u1 = np.asarray(sn.u.value)
    sn.train()
    sn(update_stats=False)
    np.testing.assert_array_equal(np.asarray(sn.u.value), u1)
    sn.eval()
    sn()
    np.testing.assert_array_equal(np.asarray(sn.u.value), u1)
    brainstate = pytest.importorskip("brainstate")
    with brainstate.environ.context(fit=True):
        sn()
    assert not np.array_equal(np.asarray(sn.u.value), u1)


def test_vectors_zero_steps_and_non_matrices():
    v = jnp.asarray(data((4,), seed=6))
    np.testing.assert_array_equal(np.asarray(un.SpectralNorm(v)()), np.asarray(v))  # 1-D: unchanged, as flax
    w = jnp.asarray(data((3, 4), seed=7))
    np.testing.assert_array_equal(np.asarray(un.SpectralNorm(w, n_steps=0)()), np.asarray(w))
    with pytest.raises(ValueError, match="3 dimensions .* error_on_non_matrix=True"):
        un.SpectralNorm(jnp.ones((2, 3, 4)), error_on_non_matrix=True)
    with pytest.raises(ValueError, match="n_steps must be an int >= 0"):
        un.SpectralNorm(w, n_steps=-1)
    with pytest.raises(TypeError, match="floating"):
        un.SpectralNorm(jnp.ones((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="no 'nope'"):
        un.SpectralNorm(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), param="nope.kernel")
    with pytest.raises(TypeError, match="without arguments"):
        un.SpectralNorm(w)(jnp.ones(3))


@given(st.sampled_from([u.siemens, u.mS, u.nS]), st.floats(0.01, 100.0))
def test_spectral_norm_is_the_same_whatever_the_weights_unit(unit, scale):
    w = data((4, 3), seed=8, scale=scale) * u.mS
    ref = un.SpectralNorm(w, n_steps=3, epsilon=1e-20 * u.mS**2)
    other = un.SpectralNorm(w.in_unit(unit), n_steps=3, epsilon=1e-20 * u.mS**2)
    out_ref, out = ref(), other()
    assert not isinstance(out, u.Quantity)  # W / sigma is dimensionless
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_ref), atol=64 * EPS32, rtol=0)
    assert other.sigma.value.unit == unit
    np.testing.assert_allclose(
        float(other.sigma.value.to_decimal(u.mS)), float(ref.sigma.value.mantissa), rtol=64 * EPS32
    )


def test_spectral_norm_jit_grad_brainstate_and_checkpoint():
    w = jnp.asarray(data((4, 3), seed=9)) * u.mS
    sn = un.SpectralNorm(w, n_steps=2)
    eager = un.SpectralNorm(w, n_steps=2)
    step = jax.jit(lambda sn: (sn(), sn))
    for _ in range(2):
        out, sn = step(sn)
        np.testing.assert_allclose(np.asarray(out), np.asarray(eager()), atol=16 * EPS32, rtol=0)
    # the gradient flows through sigma: the derivative of sum(W/sigma) against a float64 difference
    g = jax.grad(lambda m: jnp.sum(un.SpectralNorm(m, n_steps=50)()))(w.mantissa)
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sn.npz")
        un.save(path, sn)
        back = un.load(path)
        np.testing.assert_array_equal(
            np.asarray(back(update_stats=False)), np.asarray(sn(update_stats=False))
        )
        assert back.sigma.value.unit == u.mS
        with pytest.raises(TypeError, match="layer_instance"):
            un.save(path, un.SpectralNorm(nnx.Linear(2, 2, rngs=nnx.Rngs(0))))
    brainstate = pytest.importorskip("brainstate")
    linear = brainstate.nn.Linear(4, 3)
    wrapped = un.SpectralNorm(linear, param="weight.weight", mean_type=brainstate.BatchState)
    x = jnp.asarray(data((2, 4), seed=10))
    y = wrapped(x)
    w0, b0 = np.asarray(linear.weight.value["weight"]), np.asarray(linear.weight.value["bias"])
    want = np.asarray(x) @ (w0 / float(wrapped.sigma.value)) + b0
    np.testing.assert_allclose(
        np.asarray(y), want, atol=matmul_bound(np.asarray(x), w0).max() + 8 * EPS32, rtol=0
    )


# -- WeightNorm ------------------------------------------------------------------------------
@pytest.mark.parametrize("feature_axes", [-1, None, 0, (0, 1)])
@pytest.mark.parametrize("use_scale", [True, False])
def test_weight_norm_equals_flax(feature_axes, use_scale):
    rngs = nnx.Rngs(0)
    conv = nnx.Conv(2, 3, kernel_size=(2,), rngs=rngs)  # kernel (2, 2, 3)
    kernel0 = np.asarray(conv.kernel[...])
    theirs = nnx.WeightNorm(conv, feature_axes=feature_axes, use_scale=use_scale, rngs=rngs)
    ours = un.WeightNorm(jnp.asarray(kernel0), feature_axes=feature_axes, use_scale=use_scale)
    x = jnp.asarray(data((1, 4, 2), seed=11))
    theirs(x)
    got, want = np.asarray(ours()), np.asarray(conv.kernel[...])
    np.testing.assert_allclose(got, want, atol=8 * EPS32 * np.abs(want).max(), rtol=0)
    axes = (
        tuple(range(3))
        if feature_axes is None
        else tuple(a for a in range(3) if a not in np.atleast_1d(np.mod(feature_axes, 3)))
    )
    k64 = kernel0.astype(np.float64)
    np.testing.assert_allclose(got, k64 / np.sqrt((k64**2).sum(axes, keepdims=True)), rtol=8 * EPS32, atol=0)


def test_weight_norm_around_a_layer_norms_and_units():
    rngs = nnx.Rngs(1)
    linear = nnx.Linear(3, 2, rngs=rngs)
    wn = un.WeightNorm(linear, scale_init=un.init.Constant(jnp.array([2.0, 3.0])))
    x = jnp.asarray(data((4, 3), seed=12))
    k = np.asarray(linear.kernel[...], np.float64)
    w = k / np.linalg.norm(k, axis=0) * [2.0, 3.0]
    want = np.asarray(x, np.float64) @ w + np.asarray(linear.bias[...])
    np.testing.assert_allclose(
        np.asarray(wn(x)), want, atol=matmul_bound(np.asarray(x), np.abs(w)).max() + 8 * EPS32, rtol=0
    )
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(wn.normalized(), np.float64), axis=0), [2.0, 3.0], rtol=8 * EPS32
    )
    np.testing.assert_array_equal(np.asarray(linear.kernel[...]), k.astype(np.float32))


@given(st.sampled_from([u.volt, u.mV, u.uvolt]), st.floats(0.01, 100.0))
def test_weight_norm_unit_of_the_gain_and_invariance(unit, scale):
    v = data((3, 2), seed=13, scale=scale) * u.mV
    kw = dict(scale_init=un.init.Constant(1.5 * u.nS), epsilon=1e-20 * u.mV**2)
    ref, other = un.WeightNorm(v, **kw)(), un.WeightNorm(v.in_unit(unit), **kw)()
    assert ref.unit == u.nS and other.unit == u.nS
    np.testing.assert_allclose(other.mantissa, ref.mantissa, atol=16 * EPS32, rtol=0)


def test_weight_norm_gradient_jit_checkpoint_and_errors():
    v = jnp.asarray(data((3, 2), seed=14))
    wn = un.WeightNorm(v)
    g = jax.grad(lambda p: jnp.sum(jnp.sin(un.load_params(wn, p)())))(un.params(wn))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(g))
    out = jax.jit(lambda wn: wn())(wn)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(wn()))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "wn.npz")
        un.save(path, wn)
        np.testing.assert_array_equal(np.asarray(un.load(path)()), np.asarray(wn()))
    with pytest.raises(ValueError, match="feature_axes"):
        un.WeightNorm(v, feature_axes=5)
    with pytest.raises(u.UnitMismatchError, match="squared weights"):
        un.WeightNorm(v * u.mV, epsilon=1e-12 * u.mV)


def test_spectral_norm_gradient_is_the_closed_form_with_u_and_v_constant():
    # d/dW sum(W / sigma), sigma = v W u^T with u, v held constant: ones/sigma - sum(W) v^T u / sigma^2
    with jax.enable_x64(True):
        w = np.random.default_rng(17).normal(size=(5, 3))
        sn = un.SpectralNorm(jnp.asarray(w), n_steps=2, key=4, param_dtype=jnp.float64)
        u0 = np.asarray(sn.u.value)
        _, u_ref, s_ref = power_iteration(w, u0, 2)
        uu = u0
        for _ in range(2):
            v = uu @ w.T
            v = v / np.linalg.norm(v)
            uu = v @ w
            uu = uu / np.linalg.norm(uu)
        want = np.ones_like(w) / s_ref - w.sum() * (v.T @ uu) / s_ref**2
        fresh = un.SpectralNorm(jnp.asarray(w), n_steps=2, key=4, param_dtype=jnp.float64)
        got = jax.grad(lambda m: jnp.sum(un.load_params(fresh, {"weight": m})()))(jnp.asarray(w))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-12)


def test_frozen_spectral_norm_keeps_its_iterate_and_frozen_weight_norm_its_gain():
    w = jnp.asarray(data((4, 3), seed=18))
    sn = un.SpectralNorm(w).freeze()
    u0 = np.asarray(sn.u.value)
    sn(update_stats=True)
    sn.train()()
    np.testing.assert_array_equal(np.asarray(sn.u.value), u0)
    sn.unfreeze()()
    assert not np.array_equal(np.asarray(sn.u.value), u0)
    wn = un.WeightNorm(w)

    def gain_grad(layer):
        g = jax.grad(lambda p: jnp.sum(jnp.sin(un.load_params(layer, p)())))(un.params(layer))
        return float(jnp.abs(g["scale"]).sum())

    assert gain_grad(wn) > 0 and gain_grad(wn.freeze(affine=True)) == 0.0


def low_eps(*dtypes):
    return max(float(np.finfo(np.dtype(d)).eps) for d in dtypes)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16])
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.float16])
@pytest.mark.parametrize("n_steps", [1, 10])
@pytest.mark.parametrize("update_stats", [True, False])
def test_spectral_norm_inside_a_sequential_equals_flax_across_dtypes(
    dtype, param_dtype, n_steps, update_stats
):
    def make(rngs):
        return nnx.Sequential(
            nnx.Linear(5, 4, dtype=dtype, param_dtype=param_dtype, rngs=rngs),
            nnx.relu,
            nnx.BatchNorm(
                4, dtype=dtype, param_dtype=param_dtype, use_running_average=not update_stats, rngs=rngs
            ),
        )

    rngs = nnx.Rngs(42)
    theirs = nnx.SpectralNorm(
        make(rngs),
        n_steps=n_steps,
        dtype=dtype,
        param_dtype=param_dtype,
        update_stats=update_stats,
        rngs=rngs,
    )
    rngs = nnx.Rngs(42)
    seq = make(rngs)
    ours = un.SpectralNorm(
        seq,
        param="layers.0.kernel",
        n_steps=n_steps,
        dtype=dtype,
        param_dtype=param_dtype,
        update_stats=update_stats,
        key=rngs.params(),
    )
    u_path = ("layers", 0, "kernel", "u")
    u0 = np.asarray(theirs.batch_stats[u_path][...])
    np.testing.assert_array_equal(np.asarray(ours.u.value), u0)
    x = jax.random.normal(jax.random.key(0), (10, 5))
    with warnings.catch_warnings():  # flax writes a float16 kernel into its float32 Param with a scatter
        warnings.filterwarnings("ignore", "scatter inputs have incompatible types", FutureWarning)
        y_f = np.asarray(theirs(x), np.float64)
    y_o = np.asarray(ours(x), np.float64)
    eps = low_eps(dtype, param_dtype)
    # flax runs the power iteration in the parameters' dtype, we in float32 or wider: the outputs
    # differ by the rounding of the lower precision, amplified by the batch norm's 1/std
    np.testing.assert_allclose(y_o, y_f, atol=64 * 5 * eps * max(1.0, np.abs(y_f).max()), rtol=0)
    u_f = np.asarray(theirs.batch_stats[u_path][...], np.float64)
    s_f = float(theirs.batch_stats[("layers", 0, "kernel", "sigma")][...])
    if update_stats:
        np.testing.assert_allclose(np.asarray(ours.u.value, np.float64), u_f, atol=32 * eps, rtol=0)
        np.testing.assert_allclose(float(ours.sigma.value), s_f, rtol=32 * eps)
    else:
        np.testing.assert_array_equal(np.asarray(ours.u.value), u0)
        assert float(ours.sigma.value) == s_f == 1.0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16])
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.float16])
@pytest.mark.parametrize("scale", [1.0, 10.0, 0.5])
def test_weight_norm_around_a_dense_layer_equals_flax_across_dtypes(dtype, param_dtype, scale):
    make = lambda rngs: nnx.Linear(8, 4, dtype=dtype, param_dtype=param_dtype, rngs=rngs)  # noqa: E731
    rngs = nnx.Rngs(42)
    theirs = nnx.WeightNorm(
        make(rngs),
        scale_init=nnx.initializers.constant(scale),
        feature_axes=-1,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    dense = make(nnx.Rngs(42))
    ours = un.WeightNorm(
        dense, scale_init=un.init.Constant(scale), feature_axes=-1, dtype=dtype, param_dtype=param_dtype
    )
    np.testing.assert_array_equal(np.asarray(ours.scale.value), np.asarray(theirs.scales[("kernel",)]))
    x = jax.random.normal(jax.random.key(0), (10, 8))
    y_f, y_o = np.asarray(theirs(x), np.float64), np.asarray(ours(x), np.float64)
    eps = low_eps(dtype, param_dtype)
    np.testing.assert_allclose(
        y_o, y_f, atol=16 * 8 * eps * scale * max(1.0, np.abs(np.asarray(x)).max()), rtol=0
    )


def test_strict_promotion_modes():
    w = jnp.asarray(data((4, 3), seed=19))
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        outs = [un.SpectralNorm(w)(), un.WeightNorm(w)(), un.SpectralNorm(w * u.mV, epsilon=1e-9 * u.mV**2)()]
    assert all(o.dtype == jnp.float32 for o in outs)


def test_a_failing_wrapped_layer_changes_no_state_and_keeps_its_weight():
    class Broken:
        def __init__(self):
            self.kernel = jnp.asarray(data((3, 2), seed=20))

        def __call__(self, x):
            raise ValueError("broken layer")

    layer = Broken()
    kernel = np.asarray(layer.kernel)
    sn = un.SpectralNorm(layer)
    u0 = np.asarray(sn.u.value)
    with pytest.raises(ValueError, match="broken layer"):
        sn(jnp.ones((1, 3)))
    np.testing.assert_array_equal(np.asarray(sn.u.value), u0)
    np.testing.assert_array_equal(np.asarray(layer.kernel), kernel)


def test_weight_norm_gradient_is_the_closed_form():
    # d/dv sum(sin(g v / ||v||)) per column: g (c - (v . c) v / ||v||^2) / ||v||, c = cos(...)
    with jax.enable_x64(True):
        v = np.random.default_rng(21).normal(size=(4, 3))
        g = np.array([0.5, 2.0, -1.0])
        wn = un.WeightNorm(
            jnp.asarray(v), scale_init=un.init.Constant(jnp.asarray(g)), param_dtype=jnp.float64
        )
        got = jax.grad(
            lambda m: jnp.sum(jnp.sin(un.load_params(wn, {"weight": m, "scale": wn.scale.value})()))
        )(jnp.asarray(v))
        norm = np.linalg.norm(v, axis=0)
        c = np.cos(g * v / norm)
        want = g * (c - v * (v * c).sum(0) / norm**2) / norm
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
