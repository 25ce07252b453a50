"""BatchNorm's options: debias, the per-feature cumulative count, freeze, ghost batches, param_dtype."""

import os
import tempfile

import brainunit as u
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import assert_close_f32, f32_bound
from hypothesis import given

import unitnorm as un

EPS32 = float(np.finfo(np.float32).eps)


def data(shape, seed=0, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


def mantissa(v):
    return np.asarray(v.mantissa if isinstance(v, u.Quantity) else v)


def states(layer):
    return [np.asarray(leaf).tobytes() for leaf in jax.tree_util.tree_leaves(layer)]


# -- debias ------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.99, 0.9, 0.5])
def test_debiased_running_statistics_are_adams_corrected_average(momentum):
    batches = [data((8, 3), seed=s, loc=2.0 * s, scale=1.0 + s) for s in range(5)]
    layer = un.BatchNorm0d(3, momentum=momentum, debias=True)
    for t, b in enumerate(batches, start=1):
        layer(jnp.asarray(b))
        x = np.asarray(batches[:t], np.float64)
        w = (1 - momentum) * momentum ** np.arange(t - 1, -1, -1) / (1 - momentum**t)
        mean_ref = np.einsum("t,tf->f", w, x.mean(1))
        var_ref = np.einsum("t,tf->f", w, x.var(1))
        np.testing.assert_allclose(mantissa(layer.running_mean.value), mean_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mantissa(layer.running_var.value), var_ref, rtol=1e-5)
    assert mantissa(layer.num_batches_tracked.value).tolist() == [5.0] * 3


def test_evaluation_after_one_debiased_step_uses_that_steps_statistics():
    x = jnp.asarray(data((16, 4), seed=1, loc=-65.0, scale=3.0)) * u.mV
    layer = un.BatchNorm0d(4, momentum=0.99, debias=True, in_unit=u.mV)
    y_train = mantissa(layer(x))
    y_eval = mantissa(layer(x, training=False))
    # the same statistics; the one-pass variance around the first sample rounds once more
    np.testing.assert_allclose(y_eval, y_train, atol=64 * EPS32 * 65 / 3, rtol=0)
    biased = un.BatchNorm0d(4, momentum=0.99, in_unit=u.mV)
    biased(x)
    assert np.abs(mantissa(biased(x, training=False)) - y_train).max() > 1  # what debias fixes


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_bad_debias_configuration(momentum):
    if momentum is None:
        with pytest.raises(ValueError, match="debias=True .* momentum=None"):
            un.BatchNorm0d(2, momentum=None, debias=True)
    else:
        with pytest.raises(ValueError, match="momentum=1.0"):
            un.BatchNorm0d(2, momentum=1.0, debias=True)


# -- per-feature cumulative count ------------------------------------------------------------------
@pytest.mark.parametrize("how", ["mask", "omit"])
@pytest.mark.parametrize("debias", [False, True])
def test_a_feature_left_without_values_is_not_counted(how, debias):
    batches = [data((6, 3), seed=10 + s, loc=s, scale=1.0 + s) for s in range(4)]
    counted = [[True] * 3, [True, False, True], [True] * 3, [False, False, True]]
    layer = un.BatchNorm0d(3, momentum=0.8 if debias else None, debias=debias, nan_policy="omit")
    for b, c in zip(batches, counted, strict=True):
        m = np.broadcast_to(np.asarray(c), b.shape)
        if how == "mask":
            layer(jnp.asarray(b), mask=jnp.asarray(m))
        else:
            layer(jnp.asarray(np.where(m, b, np.nan)))
    for f in range(3):
        used = [b[:, f].astype(np.float64) for b, c in zip(batches, counted, strict=True) if c[f]]
        t = len(used)
        if debias:
            w = 0.2 * 0.8 ** np.arange(t - 1, -1, -1) / (1 - 0.8**t)
        else:
            w = np.full(t, 1 / t)
        np.testing.assert_allclose(
            mantissa(layer.running_mean.value)[f], w @ [v.mean() for v in used], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            mantissa(layer.running_var.value)[f], w @ [v.var() for v in used], rtol=1e-5
        )
    assert mantissa(layer.num_batches_tracked.value).tolist() == [3.0, 2.0, 4.0]


def test_a_saved_scalar_count_is_spread_over_the_features():
    layer = un.BatchNorm0d(3, momentum=None)
    d = layer.state_dict()
    d["num_batches_tracked"] = jnp.asarray(5.0)  # a checkpoint from before the per-feature count
    layer.load_state_dict(d)
    assert mantissa(layer.num_batches_tracked.value).tolist() == [5.0] * 3


# -- freeze ---------------------------------------------------------------------------------------
class Parent:
    """A container that switches its children like PyTorch's Module.train()/eval()."""

    def __init__(self, *children):
        self.children = children

    def train(self, mode=True):
        for c in self.children:
            c.train(mode)
        return self


@pytest.mark.parametrize("cls", [un.BatchNorm1d, un.BatchRenorm1d])
def test_frozen_layer_unchanged_by_train_and_by_ten_training_calls(cls):
    x = jnp.asarray(data((4, 5, 2), seed=2, loc=-60.0, scale=4.0)) * u.mV
    layer = cls((5, 2), in_unit=u.mV, momentum=0.5)
    layer(x)  # some running statistics
    layer.freeze()
    before = states(layer)
    want = mantissa(layer(x, training=False))
    Parent(layer).train()
    assert layer.training
    step = jax.jit(lambda layer, x: (layer(x, training=True), layer))
    for i in range(10):
        y = layer(x, training=True) if i % 2 else step(layer, x)[0]
        np.testing.assert_array_equal(mantissa(y), want)
    assert states(layer) == before
    layer.unfreeze()
    layer(x)
    assert states(layer) != before


def test_freeze_honours_brainstates_fit_flag():
    brainstate = pytest.importorskip("brainstate")
    layer = un.BatchNorm0d(2, mean_type=brainstate.BatchState, param_type=brainstate.ParamState).freeze()
    with brainstate.environ.context(fit=True):
        layer(jnp.asarray(data((4, 2), seed=3, loc=5.0)))
    assert mantissa(layer.running_mean.value).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("affine", [False, True])
def test_affine_parameters_train_unless_frozen_too(affine):
    layer = un.BatchNorm0d(2).freeze(affine=affine)
    x = jnp.asarray(data((4, 2), seed=4, loc=1.0))
    grads = jax.grad(lambda w: jnp.sum(jnp.sin(layer.__class__._unflatten(*_with_weight(layer, w))(x))))(
        layer.weight.value
    )
    norm = float(sum(jnp.abs(g).sum() for g in jax.tree_util.tree_leaves(grads)))
    assert (norm == 0.0) is affine


def _with_weight(layer, w):
    leaves, aux = layer._flatten()
    leaves = tuple(
        un.NormalizationParamState(w) if n == "weight" else s for n, s in zip(aux[0], leaves, strict=True)
    )
    return aux, leaves


def test_freeze_without_running_statistics_is_refused():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        un.BatchNorm0d(2, track_running_stats=False).freeze()


# -- ghost batches -----------------------------------------------------------------------------
def by_hand(x, size):
    """Normalize each consecutive chunk of ``size`` samples with its own statistics (float64)."""
    x = x.astype(np.float64)
    out = []
    for s in range(0, len(x), size):
        c = x[s : s + size]
        axes = tuple(range(c.ndim - 1))
        out.append((c - c.mean(axes)) / np.sqrt(c.var(axes) + 1e-5))
    return np.concatenate(out)


def by_hand_bound(x, size):
    """The float32 error bound of the chunks' normalizations (2 close values are ill conditioned)."""
    chunks = [x[s : s + size] for s in range(0, len(x), size)]
    return max(f32_bound(c, tuple(range(c.ndim - 1)), eps=1e-5) for c in chunks)


@pytest.mark.parametrize(("batch", "size"), [(12, 4), (10, 4), (6, 2), (7, 5)])
@pytest.mark.parametrize("cls", [un.BatchNorm0d, un.BatchNorm2d])
def test_ghost_batches_equal_splitting_the_batch_by_hand(batch, size, cls):
    in_size = (3,) if cls is un.BatchNorm0d else (2, 2, 3)
    x = data((batch, *in_size), seed=batch, loc=3.0, scale=2.0)
    layer = cls(in_size, virtual_batch_size=size, momentum=0.75)
    y = mantissa(layer(jnp.asarray(x)))
    assert_close_f32(y, by_hand(x, size), by_hand_bound(x, size))
    # running statistics from the whole batch, merged from the virtual batches'
    axes = tuple(range(x.ndim - 1))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(
        mantissa(layer.running_mean.value), 0.25 * x64.mean(axes), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(mantissa(layer.running_var.value), 0.75 + 0.25 * x64.var(axes), rtol=1e-5)
    # evaluation is unaffected
    plain = cls(in_size, momentum=0.75)
    plain(jnp.asarray(x))
    np.testing.assert_allclose(
        mantissa(layer(jnp.asarray(x), training=False)),
        mantissa(plain(jnp.asarray(x), training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_ghost_batches_with_a_mask_equal_numpy():
    x = data((8, 2), seed=5, loc=1.0, scale=3.0)
    mask = np.ones_like(x, bool)
    mask[[0, 5, 6], 0] = False
    layer = un.BatchNorm0d(2, virtual_batch_size=4, momentum=0.0)
    y = mantissa(layer(jnp.asarray(x), mask=jnp.asarray(mask)))
    for s in (0, 4):
        for f in range(2):
            c = x[s : s + 4, f].astype(np.float64)
            k = mask[s : s + 4, f]
            want = (c - c[k].mean()) / np.sqrt(c[k].var() + 1e-5)
            np.testing.assert_allclose(y[s : s + 4, f][k], want[k], atol=64 * EPS32, rtol=0)
    for f in range(2):
        v = x[mask[:, f], f].astype(np.float64)
        np.testing.assert_allclose(mantissa(layer.running_mean.value)[f], v.mean(), rtol=1e-5)
        np.testing.assert_allclose(mantissa(layer.running_var.value)[f], v.var(), rtol=1e-5)


def test_a_leftover_of_one_sample_is_an_error_eagerly_and_at_trace_time():
    layer = un.BatchNorm0d(2, virtual_batch_size=4, in_unit=u.mV)
    before = states(layer)
    x = jnp.asarray(data((9, 2), seed=6)) * u.mV
    with pytest.raises(ValueError, match="a batch of 9 leaves 1 sample after virtual batches of 4"):
        layer(x)
    with pytest.raises(ValueError, match="leaves 1 sample"):
        jax.jit(lambda layer, x: layer(x))(layer, x)
    assert states(layer) == before
    layer(x, training=False)  # evaluation does not split


@pytest.mark.parametrize(
    ("size", "err"), [(1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_virtual_batch_size(size, err):
    with pytest.raises(err, match="virtual_batch_size"):
        un.BatchNorm0d(2, virtual_batch_size=size)


# -- param_dtype ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [un.BatchNorm1d, un.BatchRenorm1d])
def test_param_dtype_keeps_parameters_and_statistics_apart_from_activations(cls):
    extra = {"r_max": 1.0, "d_max": 0.0} if cls is un.BatchRenorm1d else {}  # the batch-norm limit
    layer = cls((4, 2), dtype=jnp.bfloat16, param_dtype=jnp.float32, **extra)
    assert layer.weight.value["scale"].dtype == jnp.float32
    x = jnp.asarray(data((3, 4, 2), seed=7, loc=2.0), jnp.bfloat16)
    y = layer(x)
    assert y.dtype == jnp.bfloat16 and layer.running_mean.value.dtype == jnp.float32
    want = by_hand(np.asarray(x, np.float32), 3)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=4 * 2.0**-8 * np.abs(want).max(), rtol=0)
    with pytest.raises(TypeError, match="param_dtype"):
        cls((4, 2), param_dtype=jnp.int32)


# -- every option at once: units, jit, strict promotion, checkpoints ---------------------------------
def configured(unit):
    return un.BatchNorm1d(
        (3, 2), in_unit=unit, epsilon=1e-4 * u.mV**2, debias=True, momentum=0.9, virtual_batch_size=2
    )


@given(st.sampled_from([u.volt, u.mV, u.uvolt]), st.floats(0.1, 10.0))
def test_same_outputs_in_mv_and_v(unit, spread):
    x = jnp.asarray(data((6, 3, 2), seed=8, loc=-65.0, scale=spread)) * u.mV
    ref, other = configured(u.mV), configured(unit)
    for _ in range(2):
        y_ref, y = mantissa(ref(x)), mantissa(other(x.in_unit(unit)))
        np.testing.assert_allclose(y, y_ref, atol=64 * EPS32 * (65 / spread + 1), rtol=0)
    ref.freeze(), other.freeze()
    np.testing.assert_allclose(
        mantissa(other(x.in_unit(unit))), mantissa(ref(x)), atol=64 * EPS32 * (65 / spread + 1), rtol=0
    )
    np.testing.assert_allclose(
        mantissa(other.running_mean.value.in_unit(u.mV)), mantissa(ref.running_mean.value), rtol=1e-5
    )


def test_jit_strict_promotion_and_checkpoint():
    x = jnp.asarray(data((6, 3, 2), seed=9, loc=-65.0, scale=2.0)) * u.mV
    eager, traced = configured(u.mV), configured(u.mV)
    step = jax.jit(lambda layer, x: (layer(x), layer))
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        for _ in range(3):
            y_e = eager(x)
            y_t, traced = step(traced, x)
            np.testing.assert_allclose(mantissa(y_t), mantissa(y_e), atol=16 * EPS32 * 10, rtol=0)
    np.testing.assert_allclose(
        mantissa(traced.running_var.value), mantissa(eager.running_var.value), rtol=1e-6
    )
    eager.freeze()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bn.npz")
        un.save(path, eager)
        back = un.load(path)
        assert (back.debias, back.virtual_batch_size, back.frozen) == (True, 2, True)
        np.testing.assert_array_equal(mantissa(back(x, training=True)), mantissa(eager(x, training=True)))
        assert mantissa(back.num_batches_tracked.value).tolist() == [3.0, 3.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: un.LayerNorm((4, 6), **kw),
        lambda **kw: un.RMSNorm((4, 6), **kw),
        lambda **kw: un.GroupNorm((4, 6), num_groups=2, **kw),
        lambda **kw: un.InstanceNorm((4, 6), **kw),
    ],
)
def test_param_dtype_on_the_sample_norms(make):
    layer = make(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    assert all(v.dtype == jnp.float32 for v in layer.weight.value.values())
    x = jnp.asarray(data((3, 4, 6), seed=11, loc=1.0), jnp.bfloat16)
    y = layer(x)
    assert y.dtype == jnp.bfloat16
    ref = make(param_dtype=jnp.float32)(x.astype(jnp.float32))  # the same math in float32
    np.testing.assert_allclose(
        np.asarray(y, np.float32), np.asarray(ref), atol=2.0**-7 * np.abs(ref).max(), rtol=0
    )
    with pytest.raises(TypeError, match="param_dtype"):
        make(param_dtype=jnp.int8)


@pytest.mark.parametrize(
    "make",
    [
        lambda: un.LayerNorm((3, 4)),
        lambda: un.GroupNorm((3, 4), num_groups=2),
        lambda: un.RMSNorm((3, 4)),
        lambda: un.BatchRenorm1d((3, 4), r_max=2.0),
    ],
)
def test_freeze_affine_on_every_layer_with_scale_and_bias(make):
    x = jnp.asarray(data((2, 3, 4), seed=15, loc=1.0))

    def grad_norm(layer):
        g = jax.grad(lambda p: jnp.sum(jnp.sin(un.load_params(layer, p)(x))))(un.params(layer))
        return float(sum(jnp.abs(v).sum() for v in jax.tree_util.tree_leaves(g)))

    layer = make()
    assert grad_norm(layer.freeze()) > 0  # statistics frozen, affine parameters still train
    assert grad_norm(layer.freeze(affine=True)) == 0.0
    assert grad_norm(layer.unfreeze()) > 0


def test_ghost_batches_across_devices_combine_each_virtual_batch():
    # two mapped devices, each with a batch of 4 and virtual batches of 2: virtual batch g is
    # samples 2g, 2g+1 of every device
    x = data((2, 4, 3), seed=16, loc=2.0, scale=3.0)
    layer = un.BatchNorm0d(3, virtual_batch_size=2, axis_name="d", momentum=0.0)
    y, new = jax.vmap(lambda xi: (layer(xi), layer), axis_name="d", out_axes=(0, None))(jnp.asarray(x))
    x64 = x.astype(np.float64)
    for g in range(2):
        part = x64[:, 2 * g : 2 * g + 2]
        want = (part - part.mean((0, 1))) / np.sqrt(part.var((0, 1)) + 1e-5)
        np.testing.assert_allclose(
            np.asarray(y)[:, 2 * g : 2 * g + 2], want, atol=64 * EPS32 * np.abs(want).max(), rtol=0
        )
    np.testing.assert_allclose(mantissa(new.running_mean.value), x64.mean((0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mantissa(new.running_var.value), x64.var((0, 1)), rtol=1e-5)
