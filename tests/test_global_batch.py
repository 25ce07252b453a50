"""The batch-of-one rule counts the global batch (issue 11, item 2).

Under ``axis_name`` the "more than 1 value per feature" rule uses the count after
the cross-device reduction: one sample per device is a batch of ``axis size``.
Without a mask that count is static (values per device times the mapped axis
size, or the group size) and the error stays a ``ValueError`` where it is 1. With a
mask (or ``nan_policy='omit'``) it is known only at run time: concrete counts raise
``ValueError``, traced ones are reported by a ``checkify.debug_check`` and the
feature keeps its running statistics. pmap/shard_map with 4 devices: see
``tests/test_distributed.py``. References are float64 NumPy formulas.
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import assert_close_f32, f32_bound, stats_bounds
from jax.experimental import checkify

import unitnorm as un
from unitnorm import functional as F

EPS = 1e-5


def np_batch_norm(x, eps=EPS):
    """float64 batch normalization over axis 0 (biased variance), and the mean and variance."""
    x = np.asarray(x, np.float64)
    mean, var = x.mean(0), x.var(0)
    return (x - mean) / np.sqrt(var + eps), mean, var


def snapshot(layer):
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    return [np.asarray(leaf).tobytes() for leaf in leaves], treedef, layer.in_unit


def test_the_issue_example_one_sample_per_vmap_lane():
    bn = un.BatchNorm0d(3, axis_name="batch")
    x = jnp.arange(12.0).reshape(4, 3)
    y = jax.vmap(lambda xi: bn(xi), axis_name="batch")(x)
    ref, _, _ = np_batch_norm(x)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-6, atol=1e-6)
    # the issue's figures, from the formula: (0 - 4.5) / sqrt(11.25) etc.
    np.testing.assert_allclose(np.asarray(y)[:, 0], [-1.3416, -0.4472, 0.4472, 1.3416], atol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_layer_running_statistics_under_vmap_with_one_sample_each(fast):
    x = np.random.default_rng(0).normal(-65.0, 0.5, size=(5, 3)).astype(np.float32)
    layer = un.BatchNorm0d(3, axis_name="b", momentum=0.5, in_unit=u.mV, use_fast_variance=fast)
    y, new = jax.vmap(lambda layer, xi: (layer(xi * u.mV), layer), in_axes=(None, 0), axis_name="b")(
        layer, jnp.asarray(x)
    )
    ref, mean, var = np_batch_norm(x)
    # 5 values at -65 mV with sigma 0.5: 130x amplification; bounds derived from the data
    assert_close_f32(y, ref, f32_bound(x, 0, eps=EPS))
    mean_err, var_err = (0.5 * b.max() for b in stats_bounds(x, 0))
    for lane in range(5):  # every lane holds the same running statistics
        assert_close_f32(np.asarray(new.running_mean.value.mantissa)[lane], 0.5 * mean, mean_err)
        assert_close_f32(np.asarray(new.running_var.value.mantissa)[lane], 0.5 + 0.5 * var, var_err)


def test_functional_batch_norm_under_vmap_with_one_sample_each():
    x = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)

    def f(xi):
        return F.batch_norm(xi * u.mV, jnp.zeros(2) * u.mV, jnp.ones(2) * u.mV**2, training=True,
                            momentum=0.0, axis_name="b")  # fmt: skip

    y, mean, var = jax.vmap(f, axis_name="b")(jnp.asarray(x))
    ref, ref_mean, ref_var = np_batch_norm(x)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mean.mantissa)[0], ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(var.mantissa)[0], ref_var, rtol=1e-5)
    # batch statistics without running ones (training=False, no running statistics) too
    y2, _, _ = jax.vmap(
        lambda xi: F.batch_norm(xi, None, None, training=False, axis_name="b"), axis_name="b"
    )(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y2), ref, rtol=1e-5, atol=1e-5)


def test_a_tuple_of_vmap_axes_counts_both():
    x = np.random.default_rng(2).normal(size=(2, 3, 4)).astype(np.float32)  # (a, b, features)
    layer = un.BatchNorm0d(4, axis_name=("a", "b"))
    inner = jax.vmap(lambda xi: layer(xi), axis_name="b")
    y = jax.vmap(inner, axis_name="a")(jnp.asarray(x))
    ref, _, _ = np_batch_norm(x.reshape(6, 4))
    np.testing.assert_allclose(np.asarray(y).reshape(6, 4), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("functional", [False, True])
def test_one_value_in_all_is_still_a_value_error(functional):
    x = jnp.ones((1, 3)) * u.mV
    layer = un.BatchNorm0d(3, axis_name="b")
    before = snapshot(layer)

    def f(xi):
        if functional:
            return F.batch_norm(xi, jnp.zeros(3) * u.mV, jnp.ones(3) * u.mV**2, training=True, axis_name="b")
        return layer(xi)

    with pytest.raises(ValueError, match=r"more than 1 value per feature.*1 device across axis_name='b'"):
        jax.vmap(f, axis_name="b")(x)  # a mapped axis of size 1: one value in all
    assert snapshot(layer) == before


def test_the_static_count_needs_no_run_time_check():
    """Without a mask the rule is settled while tracing: no checkify check is emitted."""
    layer = un.BatchNorm0d(3, axis_name="b")
    step = jax.vmap(lambda xi: layer(xi), axis_name="b")
    jaxpr = str(jax.make_jaxpr(step)(jnp.ones((4, 3))))
    assert "check" not in jaxpr


# ----------------------------------------------------------------------------
# counts known only at run time: masks and nan_policy='omit'


def test_a_concrete_mask_with_one_counted_value_is_a_value_error():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)), jnp.float32) * u.mV
    mask = np.ones((4, 3), bool)
    mask[1:, 2] = False  # feature 2: one counted value
    layer = un.BatchNorm0d(3)
    layer(x)  # adopts mV
    before, kept = snapshot(layer), np.asarray(layer.running_mean.value.mantissa)[2]
    with pytest.raises(
        ValueError, match=r"more than 1 value per feature.*1 counted value for the feature\(s\) at \[\(2,\)\]"
    ):
        layer(x, mask)
    assert snapshot(layer) == before
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per feature"):
        F.batch_norm(x, None, None, training=True, mask=mask)
    # with none counted the feature keeps its statistics, as before (NaN batch statistics, no error)
    mask[0, 2] = False
    layer(x, mask)
    np.testing.assert_array_equal(np.asarray(layer.running_mean.value.mantissa)[2], kept)


def test_omit_leaving_one_finite_value_is_a_value_error():
    x = np.random.default_rng(4).normal(size=(3, 2)).astype(np.float32)
    x[:2, 0] = np.nan
    layer = un.BatchNorm0d(2, nan_policy="omit")
    with pytest.raises(ValueError, match=r"1 counted value.*nan_policy='omit'"):
        layer(jnp.asarray(x))


def masked_case():
    """4 lanes of (2, 3): feature 0 counts 8 values, feature 1 three, feature 2 exactly one (lane 2)."""
    x = np.random.default_rng(5).normal(1.0, 2.0, size=(4, 2, 3)).astype(np.float32)
    mask = np.ones(x.shape, bool)
    mask[:, :, 1] = False
    mask[0, :, 1] = mask[3, 0, 1] = True
    mask[:, :, 2] = False
    mask[2, 1, 2] = True
    return x, mask


def vmapped_step(layer):
    return jax.vmap(lambda layer, x, k: (layer(x, k), layer), in_axes=(None, 0, 0), axis_name="b")


def test_eager_vmap_sees_the_global_count_and_raises():
    """Outside jit the count after the reduction over the lanes is concrete: a ValueError."""
    x, mask = masked_case()
    layer = un.BatchNorm1d((2, 3), axis_name="b")
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"1 counted value for the feature\(s\) at \[\(2,\)\]"):
        vmapped_step(layer)(layer, jnp.asarray(x), jnp.asarray(mask))
    assert snapshot(layer) == before


def test_traced_mask_with_one_counted_value_keeps_the_running_statistics():
    x, mask = masked_case()
    layer = un.BatchNorm1d((2, 3), axis_name="b", momentum=0.5)
    _, new = jax.jit(vmapped_step(layer))(layer, jnp.asarray(x), jnp.asarray(mask))
    rm = np.asarray(new.running_mean.value)
    rv = np.asarray(new.running_var.value)
    for c in (0, 1):  # features with 2 or more counted values over all lanes learn
        vals = x[..., c][mask[..., c]].astype(np.float64)
        np.testing.assert_allclose(rm[:, c], 0.5 * vals.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rv[:, c], 0.5 + 0.5 * vals.var(), rtol=1e-5)
    np.testing.assert_array_equal(rm[:, 2], 0.0)  # one value in all: kept
    np.testing.assert_array_equal(rv[:, 2], 1.0)


def test_traced_mask_with_one_counted_value_is_reported_by_checkify():
    x, mask = masked_case()
    layer = un.BatchNorm1d((2, 3), axis_name="b")
    step = vmapped_step(layer)
    err, _ = checkify.checkify(step, errors=checkify.user_checks)(layer, jnp.asarray(x), jnp.asarray(mask))
    with pytest.raises(checkify.JaxRuntimeError, match=r"more than 1 value per feature.*1 counted value"):
        err.throw()
    mask[:, :, 2] = True  # every feature counted more than once: no report
    err, _ = checkify.checkify(step, errors=checkify.user_checks)(layer, jnp.asarray(x), jnp.asarray(mask))
    assert err.get() is None


def test_functional_traced_mask_under_jit_is_reported_by_checkify():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(4, 2)), jnp.float32)
    mask = jnp.asarray([[True, True], [False, True], [False, True], [False, True]])

    def f(x, k):
        return F.batch_norm(x, jnp.zeros(2), jnp.ones(2), training=True, mask=k, momentum=0.0)

    err, (_, mean, var) = checkify.checkify(jax.jit(f), errors=checkify.user_checks)(x, mask)
    with pytest.raises(checkify.JaxRuntimeError, match="1 counted value"):
        err.throw()
    # feature 0 (one value) keeps its running statistics, feature 1 takes the batch's
    np.testing.assert_array_equal(np.asarray(mean)[0], 0.0)
    np.testing.assert_array_equal(np.asarray(var)[0], 1.0)
    np.testing.assert_allclose(np.asarray(var)[1], np.var(np.asarray(x, np.float64)[:, 1]), rtol=1e-5)
