import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unitnorm import init


def test_constant_keeps_unit_and_broadcasts():
    v = init.Constant(-65.0 * u.mV)((3, 2))
    assert v.unit == u.mV and v.shape == (3, 2)
    np.testing.assert_array_equal(np.asarray(v.mantissa), np.full((3, 2), -65.0))


def test_zeros_ones_and_names():
    np.testing.assert_array_equal(np.asarray(init.resolve("zeros", 3)), np.zeros(3))
    np.testing.assert_array_equal(np.asarray(init.resolve("ones", (2,))), np.ones(2))
    assert init.resolve(init.Zeros(), 2).dtype == jnp.float32


def test_random_initializers_take_key_or_seed():
    a = init.Normal(seed=1)((5,))
    b = init.Normal(seed=1)((5,))
    c = init.Normal(key=jax.random.PRNGKey(2))((5,))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    w = init.Uniform(-1 * u.mV, 1 * u.mV, seed=0)((1000,))
    assert w.unit == u.mV and float(w.mantissa.min()) >= -1 and float(w.mantissa.max()) < 1


def test_plain_default_is_read_in_the_other_parameter_unit():
    w = init.Normal(std=0.1 * u.mV, seed=0)((4000,))
    assert w.unit == u.mV and abs(float(w.mantissa.std()) - 0.1) < 0.01
    v = init.Uniform(high=2 * u.mV, seed=0)((1000,))
    assert v.unit == u.mV and 0 <= float(v.mantissa.min()) and float(v.mantissa.max()) < 2


def test_normal_std_of_other_dimension_is_unit_error():
    with pytest.raises(u.UnitMismatchError, match="Normal std"):
        init.Normal(0 * u.mV, 1 * u.nA)((2,))


def test_callable_and_arrays():
    v = init.resolve(lambda shape, dtype: jnp.full(shape, 2.0, dtype) * u.nA, (2,))
    assert v.unit == u.nA
    q = init.resolve(jnp.array([1.0, 2.0]) * u.mV, (2,), unit=u.volt)
    np.testing.assert_allclose(np.asarray(q.mantissa), [0.001, 0.002], rtol=1e-6)
    assert init.resolve(1.5, (2, 2)).shape == (2, 2)


def test_wrong_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        init.resolve(jnp.ones(3), (2,))
    with pytest.raises(ValueError, match=r"returned shape \(3,\), expected \(2,\)"):
        init.resolve(lambda shape, dtype: jnp.ones(3), (2,))


def test_unknown_name_and_kind():
    with pytest.raises(TypeError, match="unknown initializer name 'nope'"):
        init.resolve("nope", 2)
    with pytest.raises(TypeError, match="got object"):
        init.resolve(object(), 2)


def test_register_name_and_type():
    init.register("sevens", lambda shape, dtype=None: jnp.full(shape, 7.0))
    assert init.resolve("sevens", 2).tolist() == [7.0, 7.0]

    class Spec:
        def __init__(self, v):
            self.v = v

    init.register(Spec, lambda spec, shape, dtype: jnp.full(shape, spec.v) * u.mV)
    v = init.resolve(Spec(3.0), (2,))
    assert v.unit == u.mV and v.mantissa.tolist() == [3.0, 3.0]
    with pytest.raises(TypeError, match="name"):
        init.register(3, lambda *a: None)


def test_resolve_unit_of_other_dimension():
    with pytest.raises(u.UnitMismatchError, match="initial value"):
        init.resolve(1.0 * u.nA, (2,), unit=u.mV)
