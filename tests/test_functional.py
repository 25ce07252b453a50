import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import U32, assert_close_f32, stats_bounds

import unitnorm as un
from unitnorm import functional as F


def np_stats(x, axes, mask=None):
    x = np.asarray(x, np.float64)
    if mask is None:
        return x.mean(axes), x.var(axes)
    w = np.broadcast_to(np.asarray(mask, np.float64), x.shape)
    n = w.sum(axes)
    mean = (x * w).sum(axes) / n
    var = (((x - np.expand_dims(mean, axes)) ** 2) * w).sum(axes) / n
    return mean, var


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("axes", [0, (0, 1), (1,), (0, 2)])
def test_compute_stats_matches_numpy(fast, axes):
    x = np.random.default_rng(0).normal(3.0, 2.0, (6, 5, 4)).astype(np.float32)
    mean, var = F.compute_stats(jnp.asarray(x), axes, use_fast_variance=fast)
    ref_mean, ref_var = np_stats(x, axes)
    np.testing.assert_allclose(np.asarray(mean), ref_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(var), ref_var, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_compute_stats_with_mask(fast):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    mask = rng.random((8, 3)) > 0.4
    mask[0] = False  # the first row (the shift) masked out entirely
    mask[1] = True
    x_bad = np.where(mask, x, np.nan)  # masked-out values must not leak in
    mean, var = F.compute_stats(jnp.asarray(x_bad), 0, mask=mask, use_fast_variance=fast)
    ref_mean, ref_var = np_stats(x, 0, mask)
    np.testing.assert_allclose(np.asarray(mean), ref_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(var), ref_var, rtol=1e-4)


def test_units_of_stats():
    mean, var = F.compute_stats(jnp.array([1.0, 2.0, 4.0]) * u.nA, 0)
    assert mean.unit == u.nA and var.unit == u.nA**2
    mean, var = F.compute_stats(jnp.array([1.0, 2.0, 4.0]), 0)
    assert not isinstance(mean, u.Quantity) and not isinstance(var, u.Quantity)


def test_fast_variance_far_from_zero_float32():
    """-65 mV ± 10 µV in float32: the naive E[x²]-E[x]² loses every digit."""
    rng = np.random.default_rng(2)
    x = (-65.0 + 0.01 * rng.standard_normal((4096, 8))).astype(np.float32)
    _, var = F.compute_stats(jnp.asarray(x) * u.mV, 0, use_fast_variance=True)
    ref = x.astype(np.float64).var(0)
    rel = np.abs(np.asarray(var.mantissa, np.float64) - ref) / ref
    assert rel.max() <= 1e-2, rel.max()
    # the unshifted formula, for contrast, is far off (shows the test can fail)
    naive = (x * x).mean(0, dtype=np.float32) - x.mean(0, dtype=np.float32) ** 2
    assert (np.abs(naive - ref) / ref).max() > 1e-2


def test_int_input_promoted_and_float64_kept():
    mean, var = F.compute_stats(jnp.array([1, 2, 3]), 0)
    assert mean.dtype == jnp.float32
    with jax.enable_x64(True):
        mean, var = F.compute_stats(jnp.array([1.0, 2.0, 3.0], jnp.float64), 0)
        assert mean.dtype == jnp.float64 and var.dtype == jnp.float64


def test_complex_stats_keep_imaginary_part():
    x = jnp.array([1 + 1j, 3 - 1j, 2 + 3j], jnp.complex64)
    mean, var = F.compute_stats(x, 0)
    xn = np.asarray(x, np.complex128)
    np.testing.assert_allclose(np.asarray(mean), xn.mean(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(var), np.mean(np.abs(xn - xn.mean()) ** 2), rtol=1e-5)
    assert not jnp.iscomplexobj(var)


def test_empty_mask_gives_nan_not_zeros():
    mean, var = F.compute_stats(jnp.ones((3, 2)), 0, mask=jnp.zeros((3, 2), bool))
    assert np.isnan(np.asarray(mean)).all() and np.isnan(np.asarray(var)).all()


def test_normalize_units_and_epsilon():
    x = jnp.array([1.0, 2.0, 4.0]) * u.mV
    mean, var = F.compute_stats(x, 0)
    y = F.normalize(x, mean, var, reduction_axes=0, epsilon=1e-3 * u.mV**2)
    xn = np.array([1.0, 2.0, 4.0])
    ref = (xn - xn.mean()) / np.sqrt(xn.var() + 1e-3)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5)
    y2 = F.normalize(x, mean, var, reduction_axes=0, epsilon=1e-9 * u.volt**2)
    np.testing.assert_allclose(np.asarray(y2), ref, rtol=1e-5)
    with pytest.raises(u.UnitMismatchError, match="epsilon"):
        F.normalize(x, mean, var, reduction_axes=0, epsilon=1e-3 * u.mV)


def test_normalize_affine_units():
    x = jnp.array([1.0, 3.0]) * u.nA
    mean, var = F.compute_stats(x, 0)
    y = F.normalize(x, mean, var, 2 * u.mV, -65 * u.mV, reduction_axes=0, epsilon=0.0)
    assert y.unit == u.mV
    np.testing.assert_allclose(np.asarray(y.mantissa), [-67.0, -63.0], rtol=1e-6)
    with pytest.raises(u.UnitMismatchError, match="bias"):
        F.normalize(x, mean, var, 2 * u.mV, 1 * u.nA, reduction_axes=0)
    with pytest.raises(u.UnitMismatchError, match="bias"):
        F.normalize(x, mean, var, None, 1 * u.mV, reduction_axes=0)


def np_batch_norm(x, rm, rv, scale, bias, momentum, eps, training):
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    if training:
        mean, var = x.mean(axes), x.var(axes)
        rm, rv = momentum * rm + (1 - momentum) * mean, momentum * rv + (1 - momentum) * var
    else:
        mean, var = rm, rv
    return (x - mean) / np.sqrt(var + eps) * scale + bias, rm, rv


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_numpy(training):
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (16, 10, 4)).astype(np.float32)
    rm, rv = rng.normal(size=4), rng.uniform(1, 2, 4)
    scale, bias = rng.normal(size=4), rng.normal(size=4)
    y, nm, nv = F.batch_norm(
        jnp.asarray(x) * u.mV,
        jnp.asarray(rm, jnp.float32) * u.mV,
        jnp.asarray(rv, jnp.float32) * u.mV**2,
        jnp.asarray(scale, jnp.float32),
        jnp.asarray(bias, jnp.float32),
        training=training,
        momentum=0.9,
        epsilon=1e-5,
    )
    ry, rnm, rnv = np_batch_norm(x, rm, rv, scale, bias, 0.9, 1e-5, training)
    np.testing.assert_allclose(np.asarray(y), ry, rtol=1e-4, atol=1e-4)
    # the running statistics: the batch's (weight 0.1, within stats_bounds) and the old ones cast to
    # float32 (weight 0.9, u relative), plus the update's few roundings
    mean_err, var_err = (0.1 * b.max() if training else 0.0 for b in stats_bounds(x, (0, 1)))
    assert_close_f32(nm.mantissa, rnm, mean_err + 0.9 * U32 * np.abs(rm).max() + 4 * U32 * np.abs(rnm).max())
    assert_close_f32(nv.mantissa, rnv, var_err + 0.9 * U32 * np.abs(rv).max() + 4 * U32 * np.abs(rnv).max())


def test_batch_norm_converts_input_to_running_unit():
    x = jnp.array([[0.001], [0.003]]) * u.volt
    y, nm, nv = F.batch_norm(x, jnp.zeros(1) * u.mV, jnp.ones(1) * u.mV**2, training=True, momentum=0.0)
    assert nm.unit == u.mV and nv.unit == u.mV**2
    np.testing.assert_allclose(np.asarray(nm.mantissa), [2.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(nv.mantissa), [1.0], rtol=1e-4)
    with pytest.raises(u.UnitMismatchError, match="current"):
        F.batch_norm(jnp.ones((2, 1)) * u.nA, jnp.zeros(1) * u.mV, jnp.ones(1) * u.mV**2, training=True)


def test_batch_norm_without_running_stats_and_shape_errors():
    x = jnp.arange(6.0).reshape(3, 2)
    y, nm, nv = F.batch_norm(x, None, None, training=False)
    assert nm is None and nv is None
    np.testing.assert_allclose(np.asarray(y).mean(0), [0, 0], atol=1e-6)
    with pytest.raises(ValueError, match=r"feature shape \(2,\), got \(3,\)"):
        F.batch_norm(x, jnp.zeros(3), jnp.ones(3), training=True)
    with pytest.raises(ValueError, match="both running_mean and running_var"):
        F.batch_norm(x, jnp.zeros(2), None, training=True)


def test_functional_is_jit_grad_vmap_safe():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(5, 8, 3)), jnp.float32)

    def loss(x):
        y, _, _ = F.batch_norm(x * u.mV, jnp.zeros(3) * u.mV, jnp.ones(3) * u.mV**2, training=True)
        return jnp.sum(y**3)

    g = jax.jit(jax.grad(loss))(x)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(np.asarray(jax.grad(loss)(x)), np.asarray(g), rtol=1e-5, atol=1e-5)
    stats = jax.vmap(lambda r: F.compute_stats(r * u.mV, 0))(x)
    ref_mean, ref_var = np_stats(np.asarray(x), 1)
    np.testing.assert_allclose(np.asarray(stats[0].mantissa), ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(stats[1].mantissa), ref_var, rtol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_compute_stats_collective_under_vmap_axis_name(fast):
    """Unequal valid counts per mapped member are weighted exactly."""
    x = jnp.asarray(np.random.default_rng(5).normal(size=(4, 6, 3)), jnp.float32)
    mask = jnp.asarray(np.random.default_rng(6).random((4, 6, 1)) > 0.3)
    mean, var = jax.vmap(
        lambda xi, mi: F.compute_stats(xi, 0, mask=mi, axis_name="d", use_fast_variance=fast),
        axis_name="d",
    )(x, mask)
    ref_mean, ref_var = np_stats(np.asarray(x).reshape(24, 3), 0, np.asarray(mask).reshape(24, 1))
    np.testing.assert_allclose(np.asarray(mean[0]), ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(var[2]), ref_var, rtol=1e-4)


def test_public_names():
    assert {"compute_stats", "normalize", "batch_norm"} <= set(un.functional.__all__)


# ----------------------------------------------------------------------------
# the moment merge that combines devices: merge_along (pairwise merges in a fixed order)


@pytest.mark.parametrize("sizes", [(5,), (3, 0, 4), (1, 2, 3, 4, 5), (0, 0, 7, 0, 1, 6, 2)])
@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_merge_along_equals_the_statistics_of_the_whole(sizes, backend):
    from unitnorm._moments import merge_along

    rng = np.random.default_rng(sum(sizes))
    parts = [rng.normal(-65.0, 0.01, size=(n, 2)) for n in sizes]
    counts = np.array([[len(p)] * 2 for p in parts], np.float64)
    means = np.array([p.mean(0) if len(p) else np.zeros(2) for p in parts])
    m2s = np.array([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(2) for p in parts])
    whole = np.concatenate(parts)
    if backend == "jax":
        with jax.enable_x64(True):
            n, mean, m2 = (np.asarray(v) for v in merge_along(*map(jnp.asarray, (counts, means, m2s))))
    else:
        n, mean, m2 = merge_along(counts, means, m2s)
    np.testing.assert_array_equal(n, len(whole))
    np.testing.assert_allclose(mean, whole.mean(0), rtol=1e-13)
    np.testing.assert_allclose(m2 / n, whole.var(0), rtol=1e-9)


def test_merge_along_runs_in_float32_under_strict_promotion_with_complex_means():
    from unitnorm._moments import merge_along

    rng = np.random.default_rng(3)
    z = (rng.normal(size=(4, 6)) + 1j * rng.normal(size=(4, 6))).astype(np.complex64)
    counts = jnp.full((4, 1), 6.0, jnp.float32)
    means = jnp.asarray(z.mean(1, keepdims=True))
    m2s = jnp.asarray((np.abs(z - z.mean(1, keepdims=True)) ** 2).sum(1, keepdims=True), jnp.float32)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        n, mean, m2 = jax.jit(merge_along)(counts, means, m2s)
    flat = z.reshape(-1).astype(np.complex128)
    assert mean.dtype == jnp.complex64 and m2.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(mean)[0], flat.mean(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m2)[0] / 24, np.mean(np.abs(flat - flat.mean()) ** 2), rtol=1e-5)


def test_the_moment_helpers_live_in_moments_and_stay_importable_from_functional():
    from unitnorm import _moments

    for name in ("moments", "moments_with_count", "stats_dtype", "sum_across", "check_dtype", "_abs2"):
        assert getattr(F, name) is getattr(_moments, name)
    assert F.stats_dtype(jnp.bfloat16) == jnp.float32 and F.stats_dtype(jnp.int8) == jnp.float32
    assert F.stats_dtype(jnp.complex64) == jnp.complex64
