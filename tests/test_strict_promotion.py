"""The whole public surface works under jax's strict promotion modes (issue 11, item 3).

Equinox runs its suite with ``jax.numpy_dtype_promotion("strict")`` (no implicit dtype
promotion: bf16 + f32, f32 + f64, f32 * c64 all raise) and
``jax.numpy_rank_promotion("raise")`` (no implicit rank broadcast). unitnorm casts and
broadcasts explicitly, so every layer, every ``functional`` function, the initializers
and the parameter helpers run in both modes. Each case is computed first in jax's
default modes, then under the mode, and the two results must be identical: the
explicit casts are the promotions jax would have made (the numbers themselves are
checked against float64 references elsewhere).
"""

import contextlib
import inspect

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un
from unitnorm import functional as F

DTYPES = (jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64)


@contextlib.contextmanager
def strict_modes():
    """Both of equinox's settings at once: whatever runs here runs under each of them alone."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def mode():
    return strict_modes


def x64_if(dtype):
    """float64 cases run with x64 enabled."""
    return jax.enable_x64(True) if dtype == jnp.float64 else contextlib.nullcontext()


def test_the_modes_are_in_force():
    """The fixture really turns the checks on: jax itself refuses mixed dtypes and ranks there."""
    with strict_modes():
        with pytest.raises(jax.dtypes.TypePromotionError):
            jnp.ones(2, jnp.bfloat16) + jnp.ones(2, jnp.float32)
        with pytest.raises(ValueError, match="rank_promotion"):
            jnp.ones((2, 3)) + jnp.ones(3)
        with pytest.raises(jax.dtypes.TypePromotionError):
            jax.jit(lambda a, b: a * b)(jnp.ones(2, jnp.float16), jnp.ones(2, jnp.float32))


# (input dtype, unit, layer dtype, with a mask): each dtype once with and once without a unit
# in the default run; the whole product in the slow one
COMBOS = [
    (jnp.bfloat16, u.mV, None, True),
    (jnp.float16, None, jnp.float16, False),
    (jnp.float32, None, None, True),
    (jnp.float64, u.mV, jnp.float64, False),
]
ALL_COMBOS = [
    (d, unit, ld, m) for d in DTYPES for unit in (None, u.mV) for ld in (None, d) for m in (False, True)
]


def leaves(tree):
    out = []
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=lambda v: isinstance(v, u.Quantity)):
        if isinstance(leaf, u.Quantity):
            out.append((str(leaf.unit), np.asarray(leaf.mantissa)))
        elif leaf is not None:
            out.append(("", np.asarray(leaf)))
    return out


def same_in_mode(mode, case):
    """Run ``case()`` in the default modes, then under ``mode``; the results must be identical."""
    expected = leaves(case())
    with mode():
        got = leaves(case())
    assert len(got) == len(expected)
    for (unit_a, a), (unit_b, b) in zip(got, expected, strict=True):
        assert unit_a == unit_b and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    return got


def data(shape, dtype, seed=0, loc=-65.0):
    x = np.random.default_rng(seed).normal(loc, 2.0, size=shape)
    return jnp.asarray(x, dtype)


def mask_for(shape, seed=1):
    mask = np.random.default_rng(seed).random(shape) < 0.8
    mask[:2] = True  # at least two counted values everywhere
    return jnp.asarray(mask)


# ----------------------------------------------------------------------------
# layers


def bn_affine(unit):
    if unit is None:
        return {}
    return dict(scale_initializer=un.init.Constant(2 * u.mV), bias_initializer=un.init.Constant(-65 * u.mV))


def sample_affine(unit):
    return (
        {}
        if unit is None
        else dict(scale_init=un.init.Constant(2 * u.mV), bias_init=un.init.Constant(-65 * u.mV))
    )


def rms_affine(unit):
    return {} if unit is None else dict(scale_init=un.init.Constant(2 * u.mV))


# name: (class, in_size, extra keywords, affine keywords for a unit)
SPECS = {
    "BatchNorm0d": (un.BatchNorm0d, (3,), {}, bn_affine),
    "BatchNorm1d": (un.BatchNorm1d, (5, 3), dict(momentum=None), bn_affine),
    "BatchNorm2d": (un.BatchNorm2d, (2, 2, 3), {}, bn_affine),
    "BatchNorm3d": (un.BatchNorm3d, (2, 2, 2, 3), {}, bn_affine),
    "BatchRenorm0d": (un.BatchRenorm0d, (3,), dict(r_max=1.5, d_max=0.5), bn_affine),
    "BatchRenorm1d": (un.BatchRenorm1d, (5, 3), dict(r_max=1.5, d_max=0.5), bn_affine),
    "BatchRenorm2d": (un.BatchRenorm2d, (2, 2, 3), dict(r_max=3.0, d_max=5.0), bn_affine),
    "BatchRenorm3d": (un.BatchRenorm3d, (2, 2, 2, 3), dict(r_max=1.0, d_max=0.0), bn_affine),
    "LayerNorm": (un.LayerNorm, (5, 3), {}, sample_affine),
    "RMSNorm": (un.RMSNorm, (5, 3), {}, rms_affine),
    "GroupNorm": (un.GroupNorm, (5, 4), dict(num_groups=2), sample_affine),
    "InstanceNorm": (un.InstanceNorm, (5, 3), {}, sample_affine),
}


def maker(name):
    cls, in_size, extra, affine = SPECS[name]
    return lambda unit, **kw: cls(in_size, in_unit=unit, **extra, **affine(unit), **kw)


LAYERS = {name: (maker(name), spec[1]) for name, spec in SPECS.items()}


def test_every_public_layer_is_covered():
    public = {
        n for n in un.__all__ if isinstance(getattr(un, n), type) and issubclass(getattr(un, n), un.Module)
    }
    # SpectralNorm and WeightNorm wrap a weight, not an input: tests/test_weight_norms.py runs them strict
    wrappers = {n for n in public if getattr(getattr(un, n), "wraps_weight", False)}
    assert wrappers == {"SpectralNorm", "WeightNorm"}
    assert public - {"Module"} - wrappers == set(LAYERS)


def layer_calls(name, dtype, unit, layer_dtype, masked):
    make, in_size = LAYERS[name]
    x = data((4, *in_size), dtype)
    xin = x if unit is None else x * unit
    mask = mask_for(x.shape) if masked else None
    is_bn = name.startswith("Batch")

    def case():
        layer = make(unit, dtype=layer_dtype)
        out = [layer(xin, mask)]
        if is_bn:
            out.append(layer(xin, training=False))
            step = jax.jit(lambda layer, x: (layer(x), layer))
            out.extend(step(layer, xin))
        else:
            out.append(jax.jit(lambda layer, x: layer(x))(layer, xin))
        out.append(layer.state_dict())
        # gradients with respect to the parameters, through the closed-form derivative
        if jnp.issubdtype(dtype, jnp.floating):
            loss = lambda p: jnp.sum(u.get_mantissa(un.load_params(layer, p)(xin)).astype(jnp.float32))  # noqa: E731
            out.append(jax.grad(loss)(un.params(layer)))
        return out

    return case


# each layer under two of the four combinations, each combination under four layers
# one combination per layer in the default run (rotating, so all four are covered), a second one slow;
# test_layers_every_combination (slow) runs the whole product
LAYER_CASES = [(name, i % 4) for i, name in enumerate(LAYERS)] + [
    pytest.param(name, (i + 1) % 4, marks=pytest.mark.slow) for i, name in enumerate(LAYERS)
]


@pytest.mark.parametrize("name,k", LAYER_CASES)
def test_layers(mode, name, k):
    dtype, unit, layer_dtype, masked = COMBOS[k]
    with x64_if(dtype):
        same_in_mode(mode, layer_calls(name, dtype, unit, layer_dtype, masked))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_every_combination(mode, name):
    for dtype, unit, layer_dtype, masked in ALL_COMBOS:
        with x64_if(dtype):
            same_in_mode(mode, layer_calls(name, dtype, unit, layer_dtype, masked))


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_under_vmap_with_axis_name(mode, name):
    make, in_size = LAYERS[name]
    x = data((2, 3, *in_size), jnp.bfloat16) * u.mV
    mask = mask_for((2, 3, *in_size))

    def case():
        layer = make(u.mV, axis_name="d", use_fast_variance=name != "LayerNorm")
        f = jax.vmap(lambda layer, x, k: (layer(x, k), layer), in_axes=(None, 0, 0), axis_name="d")
        return f(layer, x, mask), jax.jit(f)(layer, x, mask)

    same_in_mode(mode, case)


# ----------------------------------------------------------------------------
# functional


def functional_calls(dtype, unit, fast, masked, part):
    """Batch statistics (part 0) or the per-sample norms and weight standardization (part 1)."""
    x = data((6, 4), dtype)
    xin = x if unit is None else x * unit
    mask = mask_for(x.shape) if masked else None
    scale = jnp.linspace(0.5, 2.0, 4, dtype=jnp.float32)
    bias = jnp.linspace(-1.0, 1.0, 4, dtype=jnp.float32)
    rm = jnp.zeros(4) if unit is None else jnp.zeros(4) * unit
    rv = jnp.ones(4) if unit is None else jnp.ones(4) * unit**2
    kw = dict(use_fast_variance=fast)

    def batch_part():
        mean, var = F.compute_stats(xin, 0, mask=mask, **kw)
        out = [mean, var, F.compute_stats(xin, (0, 1), mask=mask, dtype=jnp.float32, **kw)]
        out.append(F.normalize(xin, mean, var, scale, bias, reduction_axes=0))
        for training in (True, False):
            out.append(
                F.batch_norm(xin, rm, rv, scale, bias, training=training, mask=mask, momentum=0.9, **kw)
            )
        out.append(F.batch_norm(xin, None, None, training=True, mask=mask, nan_policy="omit", **kw))
        g = jax.grad(
            lambda s: jnp.sum(F.batch_norm(x, None, None, s, training=True, **kw)[0].astype(jnp.float32))
        )
        out.append(g(scale))
        return out

    def sample_part():
        out = [F.layer_norm(xin, scale, bias, mask=mask, **kw)]
        out.append(F.rms_norm(xin, scale, mask=mask))
        out.append(F.group_norm(xin, scale, bias, num_groups=2, mask=mask, **kw))
        out.append(F.instance_norm(x.reshape(2, 3, 4), scale, bias, **kw))
        out.append(F.mean_square(u.get_mantissa(xin), (0,), mask))
        out.append(F.weight_standardization(xin, gain=scale))
        out.append(un.weight_standardization(xin.reshape((2, 3, 4)), eps=1e-4, out_axis=0))
        return out

    return (batch_part, sample_part)[part]


@pytest.mark.parametrize("part", [0, 1])
@pytest.mark.parametrize("k", range(len(COMBOS)))
def test_functional(mode, k, part):
    dtype, unit, _, masked = COMBOS[k]
    with x64_if(dtype):
        same_in_mode(mode, functional_calls(dtype, unit, k % 2 == 0, masked, part))


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False])
def test_functional_every_combination(mode, fast):
    for dtype, unit, layer_dtype, masked in ALL_COMBOS:
        if layer_dtype is None:
            with x64_if(dtype):
                for part in (0, 1):
                    same_in_mode(mode, functional_calls(dtype, unit, fast, masked, part))


def test_every_public_function_is_covered():
    source = inspect.getsource(functional_calls) + inspect.getsource(
        test_functional_under_vmap_with_axis_name
    )
    assert all(f"F.{name}(" in source for name in F.__all__)


@pytest.mark.parametrize("fast", [True, False])
def test_functional_under_vmap_with_axis_name(mode, fast):
    x = data((2, 3, 4), jnp.float16) * u.mV
    mask = mask_for(x.shape)

    def case():
        def per_device(x, k):
            return (
                F.compute_stats(x, 0, mask=k, axis_name="d", use_fast_variance=fast),
                F.batch_norm(x, jnp.zeros(4) * u.mV, jnp.ones(4) * u.mV**2, training=True, mask=k,
                             axis_name="d", use_fast_variance=fast),
                F.layer_norm(x, mask=k, axis_name="d", reduction_axes=(0, 1), use_fast_variance=fast),
                F.rms_norm(x, mask=k, axis_name="d"),
            )  # fmt: skip

        return jax.vmap(per_device, axis_name="d")(x, mask)

    same_in_mode(mode, case)


@pytest.mark.parametrize("fast", [True, False])
def test_complex_input(mode, fast):
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 2)) + 1j, jnp.complex64)

    def case():
        out = [F.compute_stats(x, 0, use_fast_variance=fast), F.layer_norm(x, use_fast_variance=fast)]
        out.append(un.BatchNorm0d(2, use_fast_variance=fast)(x))
        stats = lambda v: F.compute_stats(v, 0, axis_name="d", use_fast_variance=fast)  # noqa: E731
        out.append(jax.vmap(stats, axis_name="d")(x.reshape(2, 3, 2)))
        return out

    same_in_mode(mode, case)


def test_integer_input(mode):
    x = jnp.arange(12, dtype=jnp.int32).reshape(4, 3)

    def case():
        return [
            F.compute_stats(x, 0),
            F.layer_norm(x),
            un.BatchNorm0d(3)(x),
            F.batch_norm(x, None, None, training=True),
        ]

    same_in_mode(mode, case)


# ----------------------------------------------------------------------------
# initializers and parameter helpers


@pytest.mark.parametrize("dtype", DTYPES)
def test_initializers(mode, dtype):
    with x64_if(dtype):
        same_in_mode(mode, initializer_calls(dtype))


def initializer_calls(dtype):
    def case():
        out = []
        for spec in (
            un.init.Constant(-65 * u.mV),
            un.init.Constant(jnp.arange(3.0)),
            un.init.Zeros(),
            un.init.Ones(),
            un.init.Normal(0.0, 2.0, seed=1),
            un.init.Normal(-65 * u.mV, 1 * u.mV, seed=1),
            un.init.Uniform(-1.0, 1.0, seed=2),
            un.init.Uniform(0 * u.mV, 1 * u.mV, seed=2),
            "zeros",
            "ones",
            jnp.ones(3, jnp.float32) * u.mV,
            lambda shape, dtype: jnp.full(shape, 2.0, dtype),
        ):
            out.append(un.init.resolve(spec, (2, 3), dtype))
        return out

    return case


def test_parameter_helpers_and_checkpoints(mode, tmp_path):
    def case():
        layer = un.BatchNorm1d((5, 3), in_unit=u.mV)
        layer(data((4, 5, 3), jnp.bfloat16) * u.mV)
        p = un.params(layer)
        layer = un.load_params(layer, jax.tree_util.tree_map(lambda v: v * 2, p))
        params, rest = un.partition(layer, un.ParamState)
        merged = un.merge(params, rest)
        path = tmp_path / "layer.npz"
        un.save(path, merged)
        loaded = un.load(path)
        fresh = un.BatchNorm1d((5, 3), in_unit=u.mV).load_state_dict(merged.state_dict())
        return [merged.state_dict(), loaded.state_dict(), fresh.state_dict()]

    same_in_mode(mode, case)
