"""Statistics across devices: pmap, shard_map and sharded jax.jit on 4 CPU devices.

The rest of the suite runs on one device, and XLA fixes the device count when jax starts, so
the multi-device cases run in a child process: ``test_four_device_suite`` starts
``python -m pytest tests/test_distributed.py`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu`` and
``UNITNORM_DISTRIBUTED_CHILD=1``; in the parent those cases are skipped, in the child they run.
To run them by hand::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu UNITNORM_DISTRIBUTED_CHILD=1 \\
        python -m pytest tests/test_distributed.py

Every combined statistic must equal the float64 NumPy statistic of the full batch within
1e-5 (relative and absolute), also when the devices hold different numbers of valid samples.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import U32, U64, assert_close_f32, f32_bound, group_norm64, norm64, stats_bounds
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import unitnorm as un

F = un.functional
N_DEV = 4
IN_CHILD = os.environ.get("UNITNORM_DISTRIBUTED_CHILD") == "1"
child_only = pytest.mark.skipif(not IN_CHILD, reason="runs in the 4-device child of test_four_device_suite")
TOL = dict(rtol=1e-5, atol=1e-5)
GROUPS = ((0, 2), (1, 3))  # not contiguous on purpose


# --- the parent: start the child ---------------------------------------------------------------------


def run_child(marker):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEV}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["UNITNORM_DISTRIBUTED_CHILD"] = "1"
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-p", "no:cacheprovider"]
    cmd += ["-m", marker, "-k", "not four_device_suite", "-rfEsx", "-n", "0"]  # one process: 4 devices
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), out
    assert not re.search(r"\b(failed|skipped|errors?|xfailed|xpassed)\b", summary), out
    return summary


@pytest.mark.skipif(IN_CHILD, reason="this is the child")
def test_four_device_suite():
    run_child("not slow")


@pytest.mark.slow
@pytest.mark.skipif(IN_CHILD, reason="this is the child")
def test_four_device_suite_slow():
    run_child("slow")


# --- helpers -----------------------------------------------------------------------------------------


def device_data(seed=0, loc=1.0, scale=2.0, shape=(N_DEV, 12, 3)):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


def ragged_mask(shape=(N_DEV, 12, 3), counts=(12, 3, 7, 0)):
    """Device i holds counts[i] valid samples (trials padded at the end); one device holds none."""
    mask = np.zeros(shape, bool)
    for i, n in enumerate(counts):
        mask[i, :n] = True
    return mask


def random_mask(seed=1, shape=(N_DEV, 12, 3)):
    """Whole samples (all features) valid at random, with a different rate on each device."""
    rate = np.array([0.9, 0.2, 0.5, 0.7]).reshape((N_DEV,) + (1,) * (len(shape) - 1))
    mask = np.random.default_rng(seed).random(shape[:2] + (1,) * (len(shape) - 2)) < rate
    return np.broadcast_to(mask, shape).copy()


MASKS = {"none": None, "ragged": ragged_mask(), "random": random_mask()}


def np_stats(x, mask=None, devices=None):
    """float64 mean and biased variance per channel over every sample of the chosen devices."""
    x = np.asarray(x, np.float64)
    mask = np.ones(x.shape, bool) if mask is None else mask
    if devices is not None:
        x, mask = x[list(devices)], mask[list(devices)]
    flat, m = x.reshape(-1, x.shape[-1]), mask.reshape(-1, x.shape[-1])
    mean = np.array([flat[m[:, c], c].mean() for c in range(flat.shape[1])])
    var = np.array([flat[m[:, c], c].var() for c in range(flat.shape[1])])
    return mean, var


def value(v):
    return np.asarray(v.mantissa if isinstance(v, u.Quantity) else v)


def mesh(axis_type=AxisType.Auto):
    return jax.make_mesh((N_DEV,), ("b",), axis_types=(axis_type,))


def shard(x, m):
    return jax.device_put(x, NamedSharding(m, P("b")))


def stats_fn(fast, groups=None, axis_name="b"):
    def f(x, mask):
        return F.compute_stats(
            x, 0, mask=mask, axis_name=axis_name, axis_index_groups=groups, use_fast_variance=fast
        )

    return f


# --- the child: the checks ---------------------------------------------------------------------------


@child_only
def test_child_sees_four_cpu_devices():
    assert jax.device_count() == N_DEV and jax.devices()[0].platform == "cpu"


PMAP_CASES = [
    (unit, mask_name, fast) for unit in (None, u.mV) for mask_name in MASKS for fast in (True, False)
]


@child_only
@pytest.mark.parametrize("unit,mask_name,fast", PMAP_CASES)
def test_pmap_compute_stats_equals_full_batch(unit, mask_name, fast):
    x, mask = device_data(loc=1.0 if unit is None else -65.0), MASKS[mask_name]
    xin = x if unit is None else x * unit
    mask_in = np.ones(x.shape, bool) if mask is None else mask
    mean, var = jax.pmap(stats_fn(fast), axis_name="b")(xin, mask_in)
    if unit is not None:
        assert mean.unit == u.mV and var.unit == u.mV**2
    ref_mean, ref_var = np_stats(x, mask)
    for d in range(N_DEV):
        np.testing.assert_allclose(value(mean)[d], ref_mean, **TOL)
        np.testing.assert_allclose(value(var)[d], ref_var, **TOL)


@child_only
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_shard_map_compute_stats_equals_full_batch(fast, mask_name):
    m = mesh()
    x, mask = device_data(seed=2), MASKS[mask_name]
    mask = np.ones(x.shape, bool) if mask is None else mask
    f = jax.shard_map(
        lambda x, k: tuple(s[None] for s in stats_fn(fast)(x[0], k[0])),
        mesh=m,
        in_specs=(P("b"), P("b")),
        out_specs=P("b"),
    )
    mean, var = jax.jit(f)(shard(x, m), shard(mask, m))
    ref_mean, ref_var = np_stats(x, MASKS[mask_name])
    np.testing.assert_allclose(np.asarray(mean), np.broadcast_to(ref_mean, (N_DEV, 3)), **TOL)
    np.testing.assert_allclose(np.asarray(var), np.broadcast_to(ref_var, (N_DEV, 3)), **TOL)


@child_only
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("use_mask", [False, True])
def test_sharded_jit_equals_single_device(fast, use_mask):
    """No axis_name: jit partitions the reductions itself (Auto mesh axes)."""
    m = mesh(AxisType.Auto)
    x = device_data(seed=3, loc=-65.0).reshape(N_DEV * 12, 3)
    mask = ragged_mask().reshape(N_DEV * 12, 3) if use_mask else None
    f = jax.jit(lambda x, k: F.compute_stats(x * u.mV, 0, mask=k, use_fast_variance=fast))
    mean, var = f(shard(x, m), None if mask is None else shard(mask, m))
    ref_mean, ref_var = np_stats(x, mask)
    np.testing.assert_allclose(value(mean), ref_mean, **TOL)
    np.testing.assert_allclose(value(var), ref_var, **TOL)


@child_only
def test_sharded_jit_training_step_equals_single_device():
    m = mesh(AxisType.Auto)
    x = device_data(seed=4, loc=-65.0, shape=(N_DEV * 4, 10, 3))
    step = jax.jit(lambda layer, x: (layer(x * u.mV), layer))
    y1, l1 = step(un.BatchNorm1d((10, 3), in_unit=u.mV, momentum=0.5), jnp.asarray(x))
    y4, l4 = step(un.BatchNorm1d((10, 3), in_unit=u.mV, momentum=0.5), shard(x, m))
    assert y4.sharding.spec[0] == "b"  # the output stays split over the batch
    # sharded and single-device float32 sum in different orders (-65 mV, sigma 2: 30x amplified):
    # each is compared with the float64 truth within the bound derived from the data
    xs = x.reshape(-1, 10, 3)
    truth, bound = norm64(xs, (0, 1), eps=1e-5), f32_bound(xs, (0, 1), eps=1e-5)
    assert_close_f32(y4, truth, bound)
    assert_close_f32(y1, truth, bound)
    ref_mean, ref_var = np_stats(xs)
    mean_err, var_err = (0.5 * b.max() for b in stats_bounds(xs, (0, 1)))
    for layer in (l4, l1):
        assert_close_f32(value(layer.running_mean.value), 0.5 * ref_mean, mean_err)
        assert_close_f32(value(layer.running_var.value), 0.5 + 0.5 * ref_var, var_err + U32)


@child_only
def test_sharded_jit_with_explicit_mesh_axes_two_pass():
    """jax.make_mesh's default axis type is Explicit; the two-pass path works there."""
    m = mesh(AxisType.Explicit)
    x = device_data(seed=5, loc=-65.0).reshape(N_DEV * 12, 3)
    mean, var = jax.jit(lambda x: F.compute_stats(x, 0, use_fast_variance=False))(shard(x, m))
    ref_mean, ref_var = np_stats(x)
    np.testing.assert_allclose(np.asarray(mean), ref_mean, **TOL)
    np.testing.assert_allclose(np.asarray(var), ref_var, **TOL)


@child_only
def test_sharded_jit_with_explicit_mesh_axes_fast():
    """The fast path shifts by a reduction, not a slice, where a reduced axis is explicitly sharded."""
    m = mesh(AxisType.Explicit)
    x = device_data(seed=5, loc=-65.0).reshape(N_DEV * 12, 3)
    mean, var = jax.jit(lambda x: F.compute_stats(x, 0))(shard(x, m))
    np.testing.assert_allclose(np.asarray(var), np_stats(x)[1], **TOL)


@child_only
@pytest.mark.parametrize("norm", ["instance", "group"])
def test_sample_norms_with_an_explicitly_sharded_time_axis(norm):
    """A reduced axis sharded over an Explicit mesh axis: no slice of it is taken (XLA refuses one)."""
    m = mesh(AxisType.Explicit)
    x = np.random.default_rng(9).normal(-65.0, 3.0, (2, N_DEV * 16, 4)).astype(np.float32)
    xs = jax.device_put(x, NamedSharding(m, P(None, "b", None)))
    if norm == "instance":
        y, truth = jax.jit(F.instance_norm)(xs), norm64(x, (1,), eps=1e-6)
        bound = f32_bound(x, (1,), eps=1e-6)
    else:
        y = jax.jit(lambda v: F.group_norm(v, num_groups=2))(xs)
        truth = group_norm64(x, 2, eps=1e-6)
        bound = f32_bound(x.reshape(2, N_DEV * 16, 2, 2), (1, 3), eps=1e-6)
    assert_close_f32(y, truth, bound)


@child_only
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_channels_last_group_norm_with_a_sharded_batch(axis_type):
    """The batch axis spread over 4 devices: the fused channels-last GroupNorm and its finiteness
    test (a reduction across devices) give every sample its float64 truth, and a NaN stays in its
    own group of its own sample."""
    m = mesh(axis_type)
    x = np.random.default_rng(10).normal(-65.0, 3.0, (N_DEV * 2, 64, 8)).astype(np.float32)
    f = jax.jit(lambda v: F.group_norm(v, num_groups=4))
    assert F._channels_last_groups_fit(jnp.asarray(x), (1, 2), (2, 4))
    y = f(jax.device_put(x, NamedSharding(m, P("b", None, None))))
    bound = f32_bound(x.reshape(N_DEV * 2, 64, 4, 2), (1, 3), eps=1e-6)
    assert_close_f32(y, group_norm64(x, 4, eps=1e-6), bound)
    x[5, 3, 2] = np.nan  # sample 5 (device 2), group 1
    y = np.asarray(f(jax.device_put(x, NamedSharding(m, P("b", None, None)))))
    nan = np.isnan(y).any(axis=1).reshape(N_DEV * 2, 4, 2).any(axis=-1)
    expected = np.zeros_like(nan)
    expected[5, 1] = True
    np.testing.assert_array_equal(nan, expected)


def assert_equal_within_groups(mean, var, x, mask):
    """Every device of each group in GROUPS holds its group's full-batch statistics."""
    for group in GROUPS:
        ref_mean, ref_var = np_stats(x, mask, devices=group)
        for d in group:
            np.testing.assert_allclose(np.asarray(mean)[d], ref_mean, **TOL)
            np.testing.assert_allclose(np.asarray(var)[d], ref_var, **TOL)


@child_only
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("mask_name", ["none", "ragged", "random"])
def test_pmap_axis_index_groups(fast, mask_name):
    x, mask = device_data(seed=6), MASKS[mask_name]
    mask_in = np.ones(x.shape, bool) if mask is None else mask
    mean, var = jax.pmap(stats_fn(fast, GROUPS), axis_name="b")(x, mask_in)
    assert_equal_within_groups(mean, var, x, mask)


@child_only
@pytest.mark.parametrize("mask_name", ["none", "ragged"])
def test_shard_map_axis_index_groups_fast(mask_name):
    m = mesh()
    x, mask = device_data(seed=7), MASKS[mask_name]
    mask_in = np.ones(x.shape, bool) if mask is None else mask
    f = jax.shard_map(
        lambda x, k: tuple(s[None] for s in stats_fn(True, GROUPS)(x[0], k[0])),
        mesh=m,
        in_specs=(P("b"), P("b")),
        out_specs=P("b"),
    )
    mean, var = jax.jit(f)(shard(x, m), shard(mask_in, m))
    assert_equal_within_groups(mean, var, x, mask)


@child_only
def test_shard_map_axis_index_groups_two_pass():
    """jax's psum refuses axis_index_groups under shard_map: the two-pass sums are all_gathered."""
    m = mesh()
    x = device_data(seed=7)
    f = jax.shard_map(
        lambda x: tuple(s[None] for s in stats_fn(False, GROUPS)(x[0], None)),
        mesh=m,
        in_specs=P("b"),
        out_specs=P("b"),
    )
    mean, var = jax.jit(f)(shard(x, m))
    assert_equal_within_groups(mean, var, x, None)


LAYER_MASKS = {
    "ragged": lambda shape: ragged_mask(shape, counts=(6, 2, 4, 1)),
    "random": lambda shape: random_mask(9, shape),
    "empty_device": lambda shape: ragged_mask(shape, counts=(6, 2, 4, 0)),
}


@child_only
@pytest.mark.parametrize(
    "mask_name,fast",
    [
        ("ragged", True),
        ("ragged", False),
        ("random", True),
        ("random", False),
        ("empty_device", True),
        ("empty_device", False),
    ],
)
def test_batch_norm_layer_under_pmap_equals_one_big_batch(mask_name, fast):
    shape = (N_DEV, 6, 10, 3)
    x = device_data(seed=8, loc=-65.0, shape=shape)
    mask = LAYER_MASKS[mask_name](shape)
    kw = dict(in_unit=u.mV, momentum=0.5, use_fast_variance=fast)
    layer = un.BatchNorm1d((10, 3), axis_name="b", **kw)
    y, layers = jax.pmap(lambda layer, x, k: (layer(x, k), layer), axis_name="b", in_axes=(None, 0, 0))(
        layer, x * u.mV, mask
    )
    single = un.BatchNorm1d((10, 3), **kw)
    xs, ms = x.reshape(-1, 10, 3), mask.reshape(-1, 10, 3)
    y1 = single(xs * u.mV, ms)
    # pmap and one batch sum in different orders: each within the derived bound of the float64 truth
    counted = ms.any((0, 1))  # a feature with no counted value has no truth to compare with
    truth = norm64(xs, (0, 1), eps=1e-5, mask=ms)[..., counted]
    bound = f32_bound(xs[..., counted], (0, 1), eps=1e-5, mask=ms[..., counted])
    assert_close_f32(np.asarray(y).reshape(-1, 10, 3)[..., counted], truth, bound)
    assert_close_f32(np.asarray(y1)[..., counted], truth, bound)
    ref_mean, ref_var = np_stats(x, mask)
    for d in range(N_DEV):
        np.testing.assert_allclose(value(layers.running_mean.value)[d], 0.5 * ref_mean, **TOL)
        np.testing.assert_allclose(value(layers.running_var.value)[d], 0.5 + 0.5 * ref_var, **TOL)
    np.testing.assert_allclose(value(single.running_var.value), 0.5 + 0.5 * ref_var, **TOL)


@child_only
def test_batch_norm_layer_under_shard_map_with_groups():
    m = mesh()
    x = device_data(seed=10, loc=-65.0, shape=(N_DEV * 5, 10, 3))
    layer = un.BatchNorm1d((10, 3), in_unit=u.mV, momentum=0.0, axis_name="b", axis_index_groups=GROUPS)

    def body(layer, x):
        y = layer(x * u.mV)
        return y, layer.running_mean.value.mantissa[None], layer.running_var.value.mantissa[None]

    f = jax.shard_map(body, mesh=m, in_specs=(P(), P("b")), out_specs=(P("b"), P("b"), P("b")))
    y, rm, rv = jax.jit(f)(layer, shard(x, m))
    per_device = x.reshape(N_DEV, 5, 10, 3)
    for group in GROUPS:
        ref_mean, ref_var = np_stats(per_device, devices=group)
        for d in group:
            np.testing.assert_allclose(np.asarray(rm)[d], ref_mean, **TOL)
            np.testing.assert_allclose(np.asarray(rv)[d], ref_var, **TOL)
            ref_y = (per_device[d] - ref_mean) / np.sqrt(ref_var + 1e-5)
            np.testing.assert_allclose(np.asarray(y).reshape(N_DEV, 5, 10, 3)[d], ref_y, rtol=1e-4, atol=1e-4)


@child_only
@pytest.mark.parametrize("fast", [True, False])
def test_two_dimensional_mesh_with_a_tuple_of_axis_names(fast):
    """A (2, 2) mesh, the batch split over both axes: axis_name=('x', 'y') combines over all four."""
    m = jax.make_mesh((2, 2), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
    x, mask = device_data(seed=11, loc=-65.0), ragged_mask()
    f = jax.shard_map(
        lambda x, k: tuple(s[None] for s in stats_fn(fast, axis_name=("x", "y"))(x[0], k[0])),
        mesh=m,
        in_specs=(P(("x", "y")), P(("x", "y"))),
        out_specs=P(("x", "y")),
    )
    sharding = NamedSharding(m, P(("x", "y")))
    mean, var = jax.jit(f)(jax.device_put(x, sharding), jax.device_put(mask, sharding))
    ref_mean, ref_var = np_stats(x, mask)
    np.testing.assert_allclose(np.asarray(mean), np.broadcast_to(ref_mean, (N_DEV, 3)), **TOL)
    np.testing.assert_allclose(np.asarray(var), np.broadcast_to(ref_var, (N_DEV, 3)), **TOL)


@child_only
@pytest.mark.parametrize("fast", [True, False])
def test_nested_pmap_vmap_with_a_tuple_of_axis_names(fast):
    """Devices x recordings: axis_name=('b', 'r') combines over both mapped axes.

    The one-pass path used to end in jax's bare "axis size doesn't match" (an all_gather over a
    tuple of axis names that includes a vmap axis); it now gathers with one psum.
    """
    x = device_data(seed=11, shape=(N_DEV, 2, 8, 3))
    mask = np.ones(x.shape, bool)
    mask[1, 0, 2:] = False
    mask[3, :, 5:] = False
    inner = jax.vmap(stats_fn(fast, axis_name=("b", "r")), axis_name="r")
    mean, var = jax.pmap(inner, axis_name="b")(x, mask)
    ref_mean, ref_var = np_stats(x, mask)
    np.testing.assert_allclose(
        np.asarray(mean).reshape(-1, 3), np.broadcast_to(ref_mean, (2 * N_DEV, 3)), **TOL
    )
    np.testing.assert_allclose(
        np.asarray(var).reshape(-1, 3), np.broadcast_to(ref_var, (2 * N_DEV, 3)), **TOL
    )


@child_only
def test_data_parallel_gradients_equal_single_device_gradients():
    """A data-parallel step: per-device grads psummed equal the grads of the full-batch loss.

    Two unitnorm programs summing in different orders, on -65 mV data where a gradient (a sum of
    terms of both signs) is far smaller than its terms: compared in float64, where the derived bound
    is 1e-10 of the gradients (in float32 it was a few percent of them, too loose to catch a bug).
    """
    with jax.enable_x64(True):
        x = device_data(seed=12, loc=-65.0, shape=(N_DEV, 4, 10, 3)).astype(np.float64)
        w = device_data(seed=13, shape=(N_DEV, 4, 10, 3)).astype(np.float64)
        layer = un.BatchNorm1d((10, 3), in_unit=u.mV, axis_name="b", param_dtype=jnp.float64)
        single = un.BatchNorm1d((10, 3), in_unit=u.mV, param_dtype=jnp.float64)
        n = w.size

        def local_loss(params, x, w):
            return jnp.sum(jnp.tanh(un.load_params(layer, params)(x * u.mV)) * w) / n

        def dp_grads(params, x, w):
            return jax.lax.psum(jax.grad(local_loss)(params, x, w), "b")

        g4 = jax.pmap(dp_grads, axis_name="b", in_axes=(None, 0, 0))(un.params(layer), x, w)

        def full_loss(params):
            y = un.load_params(single, params)(x.reshape(-1, 10, 3) * u.mV)
            return jnp.sum(jnp.tanh(y) * w.reshape(-1, 10, 3)) / n

        g1 = jax.grad(full_loss)(un.params(single))
    # the truth: d/d scale = sum xhat (1 - tanh(xhat)**2) w / n, d/d bias = sum (1 - tanh(xhat)**2) w / n.
    # Each result is off by the error in xhat times the derivative of its terms (at most
    # |w| (1 + 2|xhat|) and |w|), plus the rounding of the sum and of tanh (a few ulps).
    xs, ws = x.reshape(-1, 10, 3), w.reshape(-1, 10, 3)
    xhat = norm64(xs, (0, 1), eps=1e-5)
    d_xhat = f32_bound(xs, (0, 1), eps=1e-5, roundoff=U64)
    sech2 = 1 - np.tanh(xhat) ** 2
    terms = {"scale": xhat * sech2 * ws / n, "bias": sech2 * ws / n}
    slope = {"scale": np.abs(ws) * (1 + 2 * np.abs(xhat)) / n, "bias": np.abs(ws) / n}
    for k in ("scale", "bias"):
        truth = terms[k].sum((0, 1))
        bound = (d_xhat + 16 * U64) * float(slope[k].sum((0, 1)).max())
        bound += 8 * U64 * np.sqrt(xs.shape[0] * xs.shape[1]) * float(np.abs(terms[k]).sum((0, 1)).max())
        assert np.asarray(g1["weight"][k]).dtype == np.float64
        assert_close_f32(g1["weight"][k], truth, bound)
        for d in range(N_DEV):
            assert_close_f32(np.asarray(g4["weight"][k])[d], g1["weight"][k], 2 * bound)


@child_only
def test_far_from_zero_with_a_device_whose_first_sample_is_masked():
    x = np.asarray(-65.0 + 0.01 * np.random.default_rng(14).normal(size=(N_DEV, 50, 2)), np.float32)
    mask = np.ones(x.shape, bool)
    mask[1, :3] = False  # device 1's first trials are padding
    _, var = jax.pmap(stats_fn(True), axis_name="b")(x * u.mV, mask)
    np.testing.assert_allclose(value(var)[0], np_stats(x, mask)[1], rtol=1e-3)


@child_only
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_random_masks_and_groups_sweep(seed):
    """Many random valid-count patterns, both paths, pmap with and without groups."""
    rng = np.random.default_rng(100 + seed)
    x = device_data(seed=200 + seed, loc=float(rng.uniform(-5, 5)), shape=(N_DEV, 9, 2))
    mask = rng.random((N_DEV, 9, 1)) < rng.uniform(0, 1, size=(N_DEV, 1, 1))
    mask[rng.integers(N_DEV), 0] = True  # at least one valid sample in total
    mask = np.broadcast_to(mask, x.shape)
    for fast in (True, False):
        for groups in (None, GROUPS):
            mean, var = jax.pmap(stats_fn(fast, groups), axis_name="b")(x, mask)
            for group in groups or (tuple(range(N_DEV)),):
                if not mask[list(group)].any():
                    assert np.isnan(np.asarray(mean)[list(group)]).all()
                    continue
                ref_mean, ref_var = np_stats(x, mask, devices=group)
                for d in group:
                    np.testing.assert_allclose(np.asarray(mean)[d], ref_mean, **TOL)
                    np.testing.assert_allclose(np.asarray(var)[d], ref_var, **TOL)


@child_only
@pytest.mark.parametrize("fast", [True, False])
def test_shard_map_returns_the_layer_replicated(fast):
    """out_specs=P() for the layer: its running statistics are identical on every device."""
    m = mesh()
    x = device_data(seed=15, loc=-65.0, shape=(N_DEV * 6, 3))
    layer = un.BatchNorm0d(3, in_unit=u.mV, momentum=0.5, axis_name="b", use_fast_variance=fast)
    # both paths combine with psum, so shard_map's replication check (check_vma) holds
    f = jax.shard_map(
        lambda layer, x: (layer(x * u.mV), layer),
        mesh=m,
        in_specs=(P(), P("b")),
        out_specs=(P("b"), P()),
    )
    y, new = jax.jit(f)(layer, shard(x, m))
    single = un.BatchNorm0d(3, in_unit=u.mV, momentum=0.5, use_fast_variance=fast)
    # shard_map and one device sum in different orders: each within the bound of the float64 truth
    truth, bound = norm64(x, 0, eps=1e-5), f32_bound(x, 0, eps=1e-5)
    assert_close_f32(y, truth, bound)
    assert_close_f32(single(x * u.mV), truth, bound)
    ref_mean, ref_var = np_stats(x)
    mean_err, var_err = (0.5 * b.max() for b in stats_bounds(x, 0))
    for layer in (new, single):
        assert_close_f32(value(layer.running_mean.value), 0.5 * ref_mean, mean_err)
        assert_close_f32(value(layer.running_var.value), 0.5 + 0.5 * ref_var, var_err + U32)


@child_only
@pytest.mark.slow
def test_training_page_runs_on_four_devices():
    from test_training import run_doc_page

    result, report = run_doc_page()
    assert result.failed == 0, report


# --- one sample per device: the batch-of-one rule counts the global batch (issue 11, item 2) ---------


def np_normalized(x, mean, var, eps=1e-5):
    return (np.asarray(x, np.float64) - mean) / np.sqrt(var + eps)


@child_only
@pytest.mark.parametrize("fast", [True, False])
def test_one_sample_per_device_under_pmap(fast):
    x = device_data(seed=16, loc=-65.0, shape=(N_DEV, 3))
    layer = un.BatchNorm0d(3, in_unit=u.mV, momentum=0.0, axis_name="b", use_fast_variance=fast)
    y, new = jax.pmap(lambda layer, x: (layer(x * u.mV), layer), axis_name="b", in_axes=(None, 0))(layer, x)
    ref_mean, ref_var = np_stats(x)
    # 4 values at -65 mV: the float32 statistics are compared within their derived bounds
    truth, bound = np_normalized(x, ref_mean, ref_var), f32_bound(x, 0, eps=1e-5)
    assert_close_f32(y, truth, bound)
    mean_err, var_err = (b.max() for b in stats_bounds(x, 0))
    for d in range(N_DEV):
        assert_close_f32(value(new.running_mean.value)[d], ref_mean, mean_err)
        assert_close_f32(value(new.running_var.value)[d], ref_var, var_err)

    def functional(x):
        return F.batch_norm(x * u.mV, jnp.zeros(3) * u.mV, jnp.ones(3) * u.mV**2, training=True,
                            momentum=0.0, axis_name="b", use_fast_variance=fast)  # fmt: skip

    y2, mean, var = jax.pmap(functional, axis_name="b")(x)
    # the functional form is another float32 program: compared with the truth, not with the layer's
    assert_close_f32(y2, truth, bound)
    assert_close_f32(value(var)[0], ref_var, var_err)


@child_only
@pytest.mark.parametrize("fast", [True, False])
def test_one_sample_per_device_under_shard_map_with_groups(fast):
    """Groups of 2 devices, one sample each: 2 values per feature in each group."""
    m = mesh()
    x = device_data(seed=17, loc=-65.0, shape=(N_DEV, 3))
    layer = un.BatchNorm0d(3, in_unit=u.mV, momentum=0.0, axis_name="b", axis_index_groups=GROUPS,
                           use_fast_variance=fast)  # fmt: skip

    def body(layer, x):
        return layer(x * u.mV), layer.running_var.value.mantissa[None]

    f = jax.shard_map(body, mesh=m, in_specs=(P(), P("b")), out_specs=(P("b"), P("b")))
    y, rv = jax.jit(f)(layer, shard(x, m))
    for group in GROUPS:
        ref_mean, ref_var = np_stats(x, devices=group)
        for d in group:
            np.testing.assert_allclose(np.asarray(rv)[d], ref_var, **TOL)
            np.testing.assert_allclose(
                np.asarray(y)[d], np_normalized(x[d], ref_mean, ref_var), rtol=1e-4, atol=1e-4
            )


@child_only
def test_one_sample_per_device_under_shard_map_functional():
    m = mesh()
    x = device_data(seed=18, shape=(N_DEV, 3))
    f = jax.shard_map(
        lambda x: F.batch_norm(x, None, None, training=True, axis_name="b")[0],
        mesh=m,
        in_specs=P("b"),
        out_specs=P("b"),
    )
    y = jax.jit(f)(shard(x, m))
    np.testing.assert_allclose(np.asarray(y), np_normalized(x, *np_stats(x)), rtol=1e-4, atol=1e-4)


@child_only
def test_groups_of_one_device_with_one_sample_is_a_value_error():
    x = device_data(seed=19, shape=(N_DEV, 3))
    layer = un.BatchNorm0d(3, axis_name="b", axis_index_groups=((0,), (1,), (2,), (3,)))
    with pytest.raises(ValueError, match=r"more than 1 value per feature.*1 device across axis_name='b'"):
        jax.pmap(lambda x: layer(x), axis_name="b")(x)


@child_only
def test_one_counted_value_over_all_devices_keeps_the_running_statistics():
    """A mask leaves feature 1 one value on one device: reported by checkify, the statistics are kept."""
    from jax.experimental import checkify

    x = device_data(seed=20, shape=(N_DEV, 2, 2))
    mask = np.ones(x.shape, bool)
    mask[:, :, 1] = False
    mask[2, 0, 1] = True
    layer = un.BatchNorm0d(2, momentum=0.5, axis_name="b")
    step = jax.pmap(lambda layer, x, k: (layer(x, k), layer), axis_name="b", in_axes=(None, 0, 0))
    _, new = step(layer, x, mask)
    ref_mean, ref_var = np_stats(x[..., :1])
    np.testing.assert_allclose(value(new.running_mean.value)[:, 0], 0.5 * ref_mean[0], **TOL)
    np.testing.assert_array_equal(value(new.running_mean.value)[:, 1], 0.0)
    np.testing.assert_array_equal(value(new.running_var.value)[:, 1], 1.0)
    err, _ = checkify.checkify(step, errors=checkify.user_checks)(layer, x, mask)
    with pytest.raises(checkify.JaxRuntimeError, match="1 counted value"):
        err.throw()


# --- a tuple of axis names with a vmap axis, far from zero; one collective (issue 11, item 4) ----------


@child_only
def test_nested_pmap_vmap_far_from_zero():
    """-65 mV +- 10 uV in float32 over devices x recordings keeps its variance's digits."""
    rng = np.random.default_rng(21)
    x = np.asarray(-65.0 + 0.01 * rng.normal(size=(N_DEV, 2, 40, 2)), np.float32)
    mask = np.ones(x.shape, bool)
    mask[1, 1, :7] = False  # one recording's first samples are padding: the shift is not its first value
    inner = jax.vmap(stats_fn(True, axis_name=("b", "r")), axis_name="r")
    _, var = jax.pmap(inner, axis_name="b")(x * u.mV, mask)
    ref_var = np_stats(x, mask)[1]
    np.testing.assert_allclose(value(var).reshape(-1, 2), np.broadcast_to(ref_var, (2 * N_DEV, 2)), rtol=1e-3)


def collectives(f, *args):
    text = str(jax.make_jaxpr(f)(*args))
    return {name: len(re.findall(rf"\b{name}\[", text)) for name in ("psum", "all_gather", "psum_invariant")}


@child_only
@pytest.mark.parametrize("mask_name", ["none", "ragged"])
def test_the_one_pass_path_combines_devices_with_one_collective(mask_name):
    x, mask = device_data(seed=22), MASKS[mask_name]
    mask_in = np.ones(x.shape, bool) if mask is None else mask
    counts = collectives(jax.pmap(stats_fn(True), axis_name="b"), x, mask_in)
    assert sum(counts.values()) == 1, counts
