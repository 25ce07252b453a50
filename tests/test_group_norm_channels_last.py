"""Channels-last GroupNorm's fused program (issue 18) and what it must not cost.

On CPU, float32 GroupNorm with the channel axis last runs one fused program (per-channel sums
around the group's first element, combined within each group by a product with a block matrix
of ones, then the output) when the input passes a cheap test (every channel's sum of squares
finite and far from overflowing), and the general program otherwise; derivatives are always the
general program's. These tests hold both against float64 truth far from zero, check that a
non-finite value (or cotangent) stays inside its own group (the block product alone would carry
it to every group of its sample), under ``jit``, ``vmap`` and ``grad``, and count the passes over
``x`` of each program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import assert_close_f32, f32_bound, group_norm64

import unitnorm as un
from unitnorm import functional as F


def _data(shape, loc=-65.0, spread=1e-2, seed=0):
    return np.random.default_rng(seed).normal(loc, spread, shape).astype(np.float32)


def _groups_of(y, num_groups):
    """(sample, group) -> whether any output of that group is NaN, for an (N, L, C) output."""
    y = np.asarray(y)
    return np.isnan(y).any(axis=1).reshape(y.shape[0], num_groups, -1).any(axis=-1)


@pytest.mark.parametrize(
    ("shape", "num_groups", "raxes"),
    [((8, 300, 16), 4, None), ((4, 6, 50, 12), 3, None), ((4, 6, 50, 12), 3, (2, 3)), ((5, 40, 8), 8, None)],
)
def test_fused_program_matches_float64_far_from_zero(shape, num_groups, raxes):
    """-65 mV +- 10 uV in float32, with affine parameters: within the float32 error bound of the truth."""
    x = _data(shape)
    c = shape[-1]
    scale = np.linspace(0.5, 2.0, c).astype(np.float32)
    bias = np.linspace(-1.0, 1.0, c).astype(np.float32)
    every = tuple(range(1, len(shape)))
    assert F._channels_last_groups_fit(jnp.asarray(x), raxes or every, (len(shape) - 1, num_groups))
    kw = dict(num_groups=num_groups, epsilon=1e-9, scale=jnp.asarray(scale), bias=jnp.asarray(bias))
    if raxes is not None:
        kw["reduction_axes"] = raxes
    y = jax.jit(lambda v: F.group_norm(v, **kw))(jnp.asarray(x))
    truth = group_norm64(x, num_groups, raxes=raxes, eps=1e-9, scale=scale, bias=bias)
    size = c // num_groups
    grouped = x.reshape(*shape[:-1], num_groups, size)
    gaxes = tuple(a for a in range(1, len(shape) - 1) if raxes is None or a in raxes) + (len(shape),)
    bound = f32_bound(grouped, gaxes, eps=1e-9, scale=2.0)
    assert_close_f32(y, truth, bound)


def test_a_constant_group_far_from_zero_is_exactly_zero_next_to_a_varying_one():
    x = _data((2, 4096, 8), spread=1.0)
    x[:, :, 4:] = np.float32(-65.123)  # a plain float32 mean of it is off by an ulp
    y = np.asarray(F.group_norm(jnp.asarray(x), num_groups=2, epsilon=1e-5))
    assert np.all(y[:, :, 4:] == 0.0)
    bound = f32_bound(x[:, :, :4], (1, 2), eps=1e-5)
    assert_close_f32(y[:, :, :4], group_norm64(x, 2, eps=1e-5)[:, :, :4], bound)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_stays_in_its_own_group(bad):
    x = _data((4, 200, 16), spread=3.0)
    x[1, 17, 5] = bad  # sample 1, group 1 (channels 4..7)
    y = jax.jit(lambda v: F.group_norm(v, num_groups=4, epsilon=1e-5))(jnp.asarray(x))
    nan_groups = _groups_of(y, 4)
    expected = np.zeros((4, 4), bool)
    expected[1, 1] = True
    np.testing.assert_array_equal(nan_groups, expected)
    clean = np.ones(x.shape, bool)
    clean[1, :, 4:8] = False
    truth = group_norm64(np.where(clean, x, 0.0), 4, eps=1e-5)
    got = np.where(clean, np.asarray(y), 0.0)
    finite = np.where(clean, x, 0.0).reshape(4, 200, 4, 4)
    assert_close_f32(got, np.where(clean, truth, 0.0), f32_bound(finite, (1, 3), eps=1e-5))


def test_under_vmap_one_example_with_a_nan_leaves_the_others_right():
    """vmap keeps one branch for the whole batch (the input test covers every example): an
    example with a NaN sends the batch down the general program, whose NaN stays in its group; the
    clean examples are within float32 of their float64 truth."""
    x = _data((3, 2, 200, 16), spread=3.0)
    x[2, 0, 3, 1] = np.nan
    f = jax.vmap(lambda v: F.group_norm(v, num_groups=4, epsilon=1e-5))
    y = np.asarray(jax.jit(f)(jnp.asarray(x)))
    for i in range(2):
        bound = f32_bound(x[i].reshape(2, 200, 4, 4), (1, 3), eps=1e-5)
        assert_close_f32(y[i], group_norm64(x[i], 4, eps=1e-5), bound)
    assert _groups_of(y[2], 4).tolist() == [[True, False, False, False], [False, False, False, False]]
    # the batched program holds one conditional, not a select computing both programs
    assert "case" in jax.jit(f).lower(jnp.asarray(x)).as_text()
    clean = np.asarray(jax.jit(f)(jnp.asarray(x[:2])))
    assert_close_f32(clean, y[:2], 2 * f32_bound(x[:2].reshape(4, 200, 4, 4), (1, 3), eps=1e-5))


def _fused(v, scale=None, bias=None, num_groups=2):
    return F._channels_last_group_norm(
        v, scale, bias, 1e-5, others=(1,), num_groups=num_groups, out_dtype=v.dtype
    )


def _general(v, num_groups=2):
    return F._general_sample_norm(
        v,
        None,
        None,
        1e-5,
        reduction_axes=(1, 2),
        feature_axes=(2,),
        groups=(2, num_groups),
        out_dtype=v.dtype,
    )


def test_gradient_matches_the_general_program_in_float64():
    """The fused program's gradient equals the general program's, both in float64 on finite data."""
    x = _data((3, 60, 8), spread=2.0).astype(np.float64)
    w = np.random.default_rng(1).normal(size=x.shape)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        fused = jax.grad(lambda v: jnp.sum(_fused(v) * w))(xj)
        general = np.asarray(jax.grad(lambda v: jnp.sum(_general(v) * w))(xj))
        np.testing.assert_allclose(np.asarray(fused), general, rtol=1e-9, atol=1e-12 * np.abs(general).max())
    # float32 group_norm's gradient, through the dispatch: the data's relative spread is 2/65, so
    # float32 rounding (6e-8) amplified by |x|/sigma (~33) and the sums (~sqrt(120)) stays below 1e-4
    w32 = w.astype(np.float32)
    g32 = jax.grad(lambda v: jnp.sum(F.group_norm(v, num_groups=2) * w32))(jnp.asarray(x, jnp.float32))
    assert np.max(np.abs(np.asarray(g32) - general)) <= 1e-4 * np.max(np.abs(general))


def test_the_layer_takes_the_same_program_as_the_function():
    x = _data((4, 100, 16), spread=3.0)
    layer = un.GroupNorm(16, num_groups=4)
    np.testing.assert_array_equal(
        np.asarray(layer(jnp.asarray(x))), np.asarray(F.group_norm(jnp.asarray(x), num_groups=4))
    )


@pytest.mark.parametrize(
    ("desc", "x", "raxes", "groups"),
    [
        ("channels first", np.zeros((4, 16, 100), np.float32), (1, 2), (1, 4)),
        ("float64", np.zeros((4, 100, 16), np.float64), (1, 2), (2, 4)),
        ("one group", np.zeros((4, 100, 16), np.float32), (1, 2), (2, 1)),
        ("only the channel axis reduced", np.zeros((4, 100, 16), np.float32), (2,), (2, 4)),
        ("more channels than other elements", np.zeros((4, 8, 16), np.float32), (1, 2), (2, 4)),
        ("over 512 channels", np.zeros((2, 1024, 1024), np.float32), (1, 2), (2, 4)),
    ],
)
def test_the_fused_program_is_only_taken_where_it_is_faster(desc, x, raxes, groups):
    if x.dtype == np.float64:
        with jax.enable_x64(True):
            assert not F._channels_last_groups_fit(jnp.asarray(x), raxes, groups), desc
    else:
        assert not F._channels_last_groups_fit(jnp.asarray(x), raxes, groups), desc


def _bytes_over_floor(f, *args):
    x = args[0]
    cost = jax.jit(f).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["bytes accessed"]) / (2 * x.size * x.dtype.itemsize)


def test_the_fused_program_reads_x_once_and_the_finiteness_test_once_more():
    """At (64, 256, 64) the fused program reads x once and writes y once (1.0x the floor: statistics
    and output in one pass over each sample); the input test reads x once more (0.5x). A change
    that takes the statistics out of the fusion (2.0x, as the general program) fails here."""
    x = jnp.asarray(_data((64, 256, 64), spread=3.0))
    scale, bias = jnp.ones(64), jnp.zeros(64)
    fused = _bytes_over_floor(lambda v, s, b: _fused(v, s, b, num_groups=8), x, scale, bias)
    probe = _bytes_over_floor(F._sums_of_squares_fit, x)
    assert fused <= 1.15, f"fused channels-last GroupNorm: {fused:.2f}x the floor"
    assert probe <= 0.55, f"input test: {probe:.2f}x the floor"


def test_forward_mode_remat_and_scan_take_the_fused_program_too():
    """jvp, jax.checkpoint and lax.scan over time steps trace through the input test and the
    branch: each equals the general program's answer in float64."""
    x = _data((3, 40, 8), spread=2.0).astype(np.float64)
    t = np.random.default_rng(2).normal(size=x.shape)
    with jax.enable_x64(True):
        xj, tj = jnp.asarray(x), jnp.asarray(t)
        _, fused_t = jax.jvp(_fused, (xj,), (tj,))
        _, general_t = jax.jvp(_general, (xj,), (tj,))
        np.testing.assert_allclose(np.asarray(fused_t), np.asarray(general_t), rtol=1e-9, atol=1e-9)
    # float32 through the public function: remat and scan give the eager call's result
    x32 = jnp.asarray(x, jnp.float32)
    direct = np.asarray(F.group_norm(x32, num_groups=2))
    remat = np.asarray(jax.jit(jax.checkpoint(lambda v: F.group_norm(v, num_groups=2)))(x32))
    np.testing.assert_array_equal(remat, direct)
    steps = jnp.stack([x32, x32 * 2.0])

    def body(carry, v):
        return carry, F.group_norm(v, num_groups=2)

    _, scanned = jax.lax.scan(body, 0.0, steps)
    np.testing.assert_array_equal(np.asarray(scanned[0]), direct)
    grad = jax.grad(lambda v: jnp.sum(jax.checkpoint(lambda w: F.group_norm(w, num_groups=2))(v) ** 3))(x32)
    assert np.isfinite(np.asarray(grad)).all()


def test_values_large_enough_to_overflow_a_sum_of_squares_take_the_general_program():
    """Finite input whose squared deviations overflow float32 in one group: that group's output is
    NaN (its variance is infinite), and the other group of the same sample is still right."""
    x = np.random.default_rng(0).normal(0.0, 1.0, (2, 4096, 8)).astype(np.float32)
    x[0, :, :4] *= np.float32(1e18)
    assert np.isfinite(x).all()
    assert not bool(F._sums_of_squares_fit(jnp.asarray(x)))
    y = np.asarray(jax.jit(lambda v: F.group_norm(v, num_groups=2, epsilon=1e-5))(jnp.asarray(x)))
    assert np.isnan(y[0, :, :4]).all()
    clean = x.copy()
    clean[0, :, :4] = 0.0
    truth = group_norm64(clean, 2, eps=1e-5)
    bound = f32_bound(clean.reshape(2, 4096, 2, 4)[:, :, 1:], (1, 3), eps=1e-5)
    assert_close_f32(y[0, :, 4:], truth[0, :, 4:], bound)
    assert_close_f32(y[1], truth[1], f32_bound(clean[1:].reshape(1, 4096, 2, 4), (1, 3), eps=1e-5))


def test_derivatives_are_the_general_programs_so_a_nan_cotangent_stays_in_its_group():
    """A constant group with epsilon=0 has an infinite inverse deviation: its gradient is NaN, and
    through the fused program's block product (transposed) it would reach every group of its
    sample. The fused program's derivatives are the general program's: the other groups' gradients
    are finite and equal to it."""
    x = np.random.default_rng(0).normal(-65.0, 1.0, (2, 16, 8)).astype(np.float32)
    x[0, :, 4:] = np.float32(-65.0)
    weights = jnp.arange(8.0)

    def loss(norm):
        def f(v):
            y = norm(v)
            return jnp.sum(jnp.where(jnp.isfinite(y), y, 0.0) ** 2 * weights)

        return f

    public = loss(lambda v: F.group_norm(v, num_groups=2, epsilon=0.0))
    general = loss(
        lambda v: F._general_sample_norm(
            v, None, None, 0.0, reduction_axes=(1, 2), feature_axes=(2,), groups=(2, 2), out_dtype=v.dtype
        )
    )
    g = np.asarray(jax.jit(jax.grad(public))(jnp.asarray(x)))
    ref = np.asarray(jax.jit(jax.grad(general))(jnp.asarray(x)))
    assert np.isfinite(g[0, :, :4]).all() and np.isfinite(g[1]).all()
    # the loss's cotangent uses the fused output, the general program's by a float32 rounding:
    # amplified by |x| / sigma (~65) over sums of 64 terms, far below 1e-4 of the largest gradient
    finite = np.isfinite(ref)
    assert np.max(np.abs(g[finite] - ref[finite])) <= 1e-4 * np.max(np.abs(ref[finite]))
    np.testing.assert_array_equal(np.isnan(g), np.isnan(ref))


def test_a_symbolic_length_exports_through_the_general_program():
    """jax.export with a symbolic time axis: the dispatch cannot compare its size, so it takes the
    general program instead of failing; the exported call equals the direct one."""
    from jax import export

    (length,) = export.symbolic_shape("length")
    f = jax.jit(lambda v: F.group_norm(v, num_groups=2))
    exported = export.export(f)(jax.ShapeDtypeStruct((2, length, 8), jnp.float32))
    x = jnp.asarray(_data((2, 30, 8), spread=2.0))
    assert_close_f32(
        exported.call(x),
        group_norm64(np.asarray(x), 2, eps=1e-6),
        f32_bound(np.asarray(x).reshape(2, 30, 2, 4), (1, 3), eps=1e-6),
    )
