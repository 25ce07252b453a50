"""Split values into mantissa and unit, restore them, and convert between units.

This is the only module of unitnorm that touches brainunit's ``Quantity``
internals; everything else works on bare mantissas plus a :class:`brainunit.Unit`.
"""

from __future__ import annotations

from typing import Any

import brainunit as u
import jax.numpy as jnp
import numpy as np

__all__ = [
    "UNITLESS",
    "UnitError",
    "describe",
    "is_quantity",
    "restore",
    "same_dim",
    "split",
    "to_mantissa",
    "unit_of",
]

UNITLESS = u.UNITLESS


class UnitError(u.UnitMismatchError):
    """A unit of the wrong dimension arrived.

    A subclass of :class:`brainunit.UnitMismatchError`, so existing
    ``except UnitMismatchError`` clauses keep working; its message is the
    sentence it was given, naming the expected and the received units.
    """

    def __str__(self) -> str:
        return str(self.args[0])


# Names for the dimensions neuroscience data usually carry, used in messages.
_DIM_NAMES = {
    u.get_dim(u.volt): "voltage",
    u.get_dim(u.amp): "current",
    u.get_dim(u.siemens): "conductance",
    u.get_dim(u.ohm): "resistance",
    u.get_dim(u.tesla): "magnetic flux density",
    u.get_dim(u.tesla / u.meter): "magnetic field gradient",
    u.get_dim(u.second): "time",
    u.get_dim(u.hertz): "frequency",
    u.get_dim(u.meter): "length",
    u.get_dim(u.farad): "capacitance",
    u.get_dim(u.kelvin): "temperature",
    u.get_dim(u.mole / u.liter): "concentration",
    u.get_dim(u.volt**2): "voltage squared",
    u.get_dim(u.amp**2): "current squared",
}


def is_quantity(x: Any) -> bool:
    """Return True when ``x`` is a brainunit Quantity."""
    return isinstance(x, u.Quantity)


def unit_of(x: Any) -> u.Unit:
    """Return the unit of ``x`` (``UNITLESS`` for plain numbers and arrays)."""
    if isinstance(x, u.Unit):
        return x
    return u.get_unit(x) if isinstance(x, u.Quantity) else UNITLESS


def same_dim(a: u.Unit, b: u.Unit) -> bool:
    """Return True when units ``a`` and ``b`` have the same physical dimension."""
    return u.get_dim(a) == u.get_dim(b)


def describe(unit: u.Unit) -> str:
    """Describe a unit for an error message, e.g. ``'current (nA)'``."""
    dim = u.get_dim(unit)
    if dim.is_dimensionless:
        return "dimensionless" if unit.is_unitless else f"dimensionless ({unit})"
    name = _DIM_NAMES.get(dim)
    return f"{name} ({unit})" if name else f"{unit} [{dim}]"


def split(x: Any) -> tuple[jnp.ndarray, u.Unit]:
    """Split ``x`` into a jax array mantissa and a unit.

    Plain numbers and arrays are returned as arrays with ``UNITLESS``.
    """
    if isinstance(x, u.Quantity):
        return jnp.asarray(x.mantissa), x.unit
    if isinstance(x, (str, bytes)):
        raise TypeError(f"expected a numeric array or Quantity, got a {type(x).__name__} {x!r:.60}")
    if isinstance(x, np.ndarray) and x.dtype.kind in "OSUV":
        kind = {"O": "object", "S": "bytes", "U": "str", "V": "void"}[x.dtype.kind]
        raise TypeError(f"expected a numeric array or Quantity, got an array of {kind} (dtype {x.dtype})")
    try:
        return jnp.asarray(x), UNITLESS
    except (TypeError, ValueError):
        raise TypeError(f"expected a numeric array or Quantity, got {type(x).__name__} {x!r:.60}") from None


def restore(mantissa: Any, unit: u.Unit) -> Any:
    """Attach ``unit`` to ``mantissa``.

    A dimensionless unit gives a plain array (scaled when the unit has a
    scale), like :func:`brainunit.maybe_decimal`.
    """
    if unit.is_unitless:
        return mantissa
    if u.get_dim(unit).is_dimensionless:
        return mantissa * (1 * unit).to_decimal(UNITLESS)
    return u.Quantity(mantissa, unit=unit)


def to_mantissa(x: Any, unit: u.Unit, *, what: str = "input", expected: str | None = None) -> Any:
    """Express ``x`` in ``unit`` and return the bare mantissa.

    A plain array is read as already being in ``unit`` only when ``unit`` is
    dimensionless; otherwise any value whose dimension differs from ``unit``'s
    raises :class:`UnitError` naming both.

    Parameters
    ----------
    x : Quantity or array_like
        The value to convert.
    unit : brainunit.Unit
        The unit to express it in.
    what : str, default 'input'
        What ``x`` is, for the error message.
    expected : str, optional
        Who expects it, for the error message (e.g. ``'BatchNorm1d(in_unit=mV)'``).
    """
    xu = unit_of(x)
    if not same_dim(xu, unit):
        who = expected or f"expected {describe(unit)}"
        raise UnitError(
            f"{who}: {what} must be {describe(unit)}, got {describe(xu)}; "
            f"convert it (e.g. x.in_unit(...)) or use a matching unit"
        )
    if isinstance(x, u.Quantity):
        if xu == unit:
            return jnp.asarray(x.mantissa)
        return jnp.asarray(x.to_decimal(unit))
    try:
        m = split(x)[0]
    except TypeError as err:
        raise TypeError(f"{what}: {err}") from None
    if unit.is_unitless:
        return m
    # dimensionless but scaled unit (rare): plain x is a pure number
    return m / (1 * unit).to_decimal(UNITLESS)
