import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest

from unitnorm import _units


def test_split_quantity_and_plain():
    m, unit = _units.split(jnp.array([1.0, 2.0]) * u.mV)
    assert unit == u.mV and m.tolist() == [1.0, 2.0]
    m, unit = _units.split(np.array([3, 4]))
    assert unit.is_unitless and m.tolist() == [3, 4]


def test_split_rejects_strings():
    with pytest.raises(TypeError, match="numeric array"):
        _units.split(np.array(["a", "b"]))


def test_restore_dimensionless_is_plain_array():
    out = _units.restore(jnp.ones(2), _units.UNITLESS)
    assert not isinstance(out, u.Quantity)
    q = _units.restore(jnp.ones(2), u.nA)
    assert isinstance(q, u.Quantity) and q.unit == u.nA


def test_to_mantissa_converts_compatible_units():
    m = _units.to_mantissa(jnp.array([0.065]) * u.volt, u.mV)
    np.testing.assert_allclose(np.asarray(m), [65.0], rtol=1e-6)


@pytest.mark.parametrize(
    "value, unit, expected, received",
    [
        (jnp.ones(2) * u.nA, u.mV, "voltage (mV)", "current (nA)"),
        (jnp.ones(2), u.mV, "voltage (mV)", "dimensionless"),
        (jnp.ones(2) * u.mV, _units.UNITLESS, "dimensionless", "voltage (mV)"),
    ],
)
def test_to_mantissa_error_names_both_units(value, unit, expected, received):
    with pytest.raises(u.UnitMismatchError) as err:
        _units.to_mantissa(value, unit)
    assert expected in str(err.value) and received in str(err.value)


def test_describe_unknown_dimension_shows_dimension():
    unit = u.mV * u.second  # brainunit names it mWb; no common name in our table
    text = _units.describe(unit)
    assert str(unit) in text and str(u.get_dim(unit)) in text
