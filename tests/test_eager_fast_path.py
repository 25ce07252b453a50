"""The BatchNorm layers' eager fast path gives exactly what the general path gives.

A call with no mask and the default ``nan_policy`` takes a shortcut (cached
checks, no unit conversions); passing ``nan_policy="propagate"`` explicitly takes
the general path, so each case runs both on twin layers and compares the outputs
and every State bit for bit, call after call.
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un
from unitnorm.nn import _batch_norm


def twins(make):
    return make(), make()


def state_leaves(layer):
    values = []
    for name in ("running_mean", "running_var", "num_batches_tracked", "weight"):
        state = getattr(layer, name, None)
        if state is not None:
            values += jax.tree.leaves(state.value, is_leaf=lambda v: isinstance(v, u.Quantity))
    return values


def assert_same(a, b):
    if isinstance(b, u.Quantity):
        assert isinstance(a, u.Quantity) and a.unit == b.unit, (a, b)
        a, b = a.mantissa, b.mantissa
    else:
        assert not isinstance(a, u.Quantity), a
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def run_both(fast, slow, xs, **kw):
    for x in xs:
        assert_same(fast(x, **kw), slow(x, nan_policy="propagate", **kw))
        for a, b in zip(state_leaves(fast), state_leaves(slow), strict=True):
            assert_same(a, b)
        assert fast.in_unit == slow.in_unit


def data(seed, shape=(4, 5, 3), unit=None):
    x = jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 2 - 65, jnp.float32)
    return x if unit is None else x * unit


CASES = {
    "plain": lambda: un.BatchNorm1d((5, 3)),
    "mV": lambda: un.BatchNorm1d((5, 3), in_unit=u.mV),
    "cumulative": lambda: un.BatchNorm1d((5, 3), momentum=None, in_unit=u.mV),
    "no running stats": lambda: un.BatchNorm1d((5, 3), track_running_stats=False),
    "no affine": lambda: un.BatchNorm1d((5, 3), affine=False, in_unit=u.mV),
    "mV affine": lambda: un.BatchNorm1d(
        (5, 3),
        in_unit=u.mV,
        scale_initializer=un.init.Constant(2 * u.mV),
        bias_initializer=un.init.Constant(-65 * u.mV),
    ),
    "quantity epsilon": lambda: un.BatchNorm1d((5, 3), in_unit=u.mV, epsilon=1e-3 * u.mV**2),
    "feature axis 0": lambda: un.BatchNorm1d((5, 3), feature_axis=0),
    "float16 output": lambda: un.BatchNorm1d((5, 3), dtype=jnp.float16),
}
UNITS = {"plain": None, "no running stats": None, "feature axis 0": None, "float16 output": None}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("training", [True, False])
def test_fast_and_general_paths_agree(name, training):
    fast, slow = twins(CASES[name])
    unit = UNITS.get(name, u.mV)
    xs = [data(i, unit=unit) for i in range(3)]
    run_both(fast, slow, xs, training=training)


def test_inputs_in_another_unit_and_unbatched_inputs_agree():
    fast, slow = twins(lambda: un.BatchNorm1d((5, 3), in_unit=u.mV))
    run_both(
        fast, slow, [data(0, unit=u.volt) / 1000, data(1, unit=u.mV), data(2, shape=(2, 5, 3), unit=u.uvolt)]
    )
    fast, slow = twins(lambda: un.BatchNorm1d((5, 3)))
    run_both(fast, slow, [data(3, shape=(5, 3)), data(4)])


def test_first_call_adopts_the_unit_then_the_fast_path_serves():
    fast, slow = twins(lambda: un.BatchNorm1d((5, 3)))
    run_both(fast, slow, [data(0, unit=u.mV), data(1, unit=u.mV), data(2, unit=u.volt) / 1000])
    assert fast.in_unit == u.mV


def test_states_set_by_hand_in_another_unit_or_as_numpy_agree():
    fast, slow = twins(lambda: un.BatchNorm1d((5, 3), in_unit=u.mV))
    for layer in (fast, slow):
        layer.running_mean.value = jnp.full(3, -0.065) * u.volt
        layer.running_var.value = np.ones(3, np.float32) * u.mV**2
        layer.weight.value = {"scale": np.ones(3, np.float32), "bias": np.zeros(3, np.float32)}
    run_both(fast, slow, [data(0, unit=u.mV), data(1, unit=u.mV)], training=False)
    run_both(fast, slow, [data(2, unit=u.mV)], training=True)


def test_brainstate_states_agree():
    brainstate = pytest.importorskip("brainstate")

    def make():
        return un.BatchNorm1d(
            (5, 3), in_unit=u.mV, param_type=brainstate.ParamState, mean_type=brainstate.BatchState
        )

    fast, slow = twins(make)
    run_both(fast, slow, [data(i, unit=u.mV) for i in range(2)])


def test_errors_still_raise_and_leave_states_unchanged():
    layer = un.BatchNorm1d((5, 3), in_unit=u.mV)
    layer(data(0, unit=u.mV))
    before = [np.asarray(u.get_mantissa(v)) for v in state_leaves(layer)]
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 5, 3\)"):
        layer(data(1, shape=(4, 5, 2), unit=u.mV))
    with pytest.raises(u.UnitMismatchError, match="current"):
        layer(data(1, unit=u.nA))
    with pytest.raises(u.UnitMismatchError, match="plain array"):
        layer(data(1))
    after = [np.asarray(u.get_mantissa(v)) for v in state_leaves(layer)]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    single = un.BatchNorm0d(3, in_unit=u.mV)
    single(data(2, shape=(4, 3), unit=u.mV))
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        single(data(3, shape=(1, 3), unit=u.mV))


def test_the_fast_path_is_taken_and_traced_calls_agree():
    probe = un.BatchNorm1d((5, 3), in_unit=u.mV)
    x = data(0, unit=u.mV)
    assert probe._fast_call(x, True) is not _batch_norm._SLOW
    assert probe._fast_call(x * 1.0, True) is not _batch_norm._SLOW
    assert probe._fast_call(data(0, unit=u.volt), True) is _batch_norm._SLOW
    layer = un.BatchNorm1d((5, 3), in_unit=u.mV)
    layer(x)
    step = jax.jit(lambda layer, x: (layer(x), layer))
    twin = un.BatchNorm1d((5, 3), in_unit=u.mV)
    twin(x)
    y, new = step(layer, x)
    assert_same(y, twin(x, nan_policy="propagate"))
    for a, b in zip(state_leaves(new), state_leaves(twin), strict=True):
        assert_same(a, b)
