"""Initializer registry: turn a specification into a value of a given shape.

A specification can be an :class:`Initializer` (:class:`Constant`, :class:`Zeros`,
:class:`Ones`, :class:`Normal`, :class:`Uniform`), a callable ``f(shape, dtype)``,
a plain array or Quantity (broadcast to the shape), or a registered name such as
``"zeros"``. :func:`register` adds names or types. Units are kept throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unitnorm import _units

__all__ = [
    "Constant",
    "Initializer",
    "Normal",
    "Ones",
    "Uniform",
    "Zeros",
    "register",
    "resolve",
]


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    seq = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        if isinstance(seq, (str, bytes)):
            raise TypeError
        seq = tuple(seq)
    except TypeError:
        seq = None
    if seq is None or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seq):
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r:.60}")
    if any(s < 0 for s in seq):
        raise ValueError(f"shape must hold non-negative ints, got {shape!r}")
    return tuple(int(s) for s in seq)


def _float_dtype(dtype: Any, like: Any = None) -> Any:
    """Return the dtype of an initialized value: ``dtype`` if given, else a float type."""
    if dtype is not None:
        return jnp.dtype(dtype)
    if like is not None and jnp.issubdtype(jnp.asarray(like).dtype, jnp.inexact):
        return jnp.asarray(like).dtype
    return jnp.dtype(jnp.float32)


def _key(key: Any, seed: int | None) -> jax.Array:
    if key is not None:
        return key
    return jax.random.PRNGKey(0 if seed is None else seed)


class Initializer:
    """Base class of initializers: ``init(shape, dtype=None)`` returns a value.

    Subclasses implement :meth:`__call__`. The value is a jax array or a
    brainunit Quantity of exactly ``shape``.

    Examples
    --------
    >>> import unitnorm as un
    >>> class Twos(un.init.Initializer):
    ...     def __call__(self, shape, dtype=None):
    ...         return un.init.Constant(2.0)(shape, dtype)
    >>> un.init.resolve(Twos(), (3,)).tolist()
    [2.0, 2.0, 2.0]
    """

    def __call__(self, shape: int | Sequence[int], dtype: Any = None) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Constant(Initializer):
    """Fill with a constant scalar, array or Quantity (broadcast to the shape).

    Parameters
    ----------
    value : float, array_like or Quantity, default 0.0
        The value; its unit, if any, is kept.

    Examples
    --------
    >>> import brainunit as u, unitnorm as un
    >>> v = un.init.Constant(-65.0 * u.mV)((2,))
    >>> print(v)
    [-65. -65.] mV
    """

    def __init__(self, value: Any = 0.0):
        self.value = value

    def __call__(self, shape: int | Sequence[int], dtype: Any = None) -> Any:
        return _broadcast(self.value, _shape(shape), dtype, "Constant")


class Zeros(Constant):
    """Fill with zeros (dimensionless).

    Examples
    --------
    >>> import unitnorm as un
    >>> un.init.Zeros()((2,)).tolist()
    [0.0, 0.0]
    """

    def __init__(self):
        super().__init__(0.0)

    def __repr__(self) -> str:
        return "Zeros()"


class Ones(Constant):
    """Fill with ones (dimensionless).

    Examples
    --------
    >>> import unitnorm as un
    >>> un.init.Ones()((2,)).tolist()
    [1.0, 1.0]
    """

    def __init__(self):
        super().__init__(1.0)

    def __repr__(self) -> str:
        return "Ones()"


class Normal(Initializer):
    """Draw from a normal distribution ``mean + std * N(0, 1)``.

    Parameters
    ----------
    mean : float or Quantity, default 0.0
    std : float or Quantity, default 1.0
        Of one dimension; the value carries ``mean``'s unit (``std``'s when
        ``mean`` is a plain number, which is then read in that unit).
    key : jax.Array, optional
        A PRNG key. Without one, ``jax.random.PRNGKey(seed)`` is used.
    seed : int, default 0
        Seed used when no key is given.

    Examples
    --------
    >>> import brainunit as u, unitnorm as un
    >>> w = un.init.Normal(0.0 * u.mV, 2.0 * u.mV, seed=1)((1000,))
    >>> print(w.unit, abs(float(w.std().mantissa) - 2.0) < 0.2)
    mV True
    """

    def __init__(self, mean: Any = 0.0, std: Any = 1.0, *, key: Any = None, seed: int = 0):
        self.mean, self.std, self.key, self.seed = mean, std, key, seed

    def __call__(self, shape: int | Sequence[int], dtype: Any = None) -> Any:
        unit = _units.unit_of(self.mean if _units.is_quantity(self.mean) else self.std)
        mean = _read_in(self.mean, unit, "Normal mean")
        std = _read_in(self.std, unit, "Normal std")
        dtype = _float_dtype(dtype)
        z = jax.random.normal(_key(self.key, self.seed), _shape(shape), dtype)
        return _units.restore((mean + std * z).astype(dtype), unit)


class Uniform(Initializer):
    """Draw uniformly from ``[low, high)``.

    Parameters
    ----------
    low : float or Quantity, default 0.0
    high : float or Quantity, default 1.0
        Of one dimension; the value carries ``low``'s unit (``high``'s when
        ``low`` is a plain number, which is then read in that unit).
    key : jax.Array, optional
        A PRNG key. Without one, ``jax.random.PRNGKey(seed)`` is used.
    seed : int, default 0
        Seed used when no key is given.

    Examples
    --------
    >>> import unitnorm as un
    >>> w = un.init.Uniform(-1.0, 1.0, seed=3)((100,))
    >>> bool((w >= -1).all() and (w < 1).all())
    True
    """

    def __init__(self, low: Any = 0.0, high: Any = 1.0, *, key: Any = None, seed: int = 0):
        self.low, self.high, self.key, self.seed = low, high, key, seed

    def __call__(self, shape: int | Sequence[int], dtype: Any = None) -> Any:
        unit = _units.unit_of(self.low if _units.is_quantity(self.low) else self.high)
        low = _read_in(self.low, unit, "Uniform low")
        high = _read_in(self.high, unit, "Uniform high")
        dtype = _float_dtype(dtype)
        r = jax.random.uniform(_key(self.key, self.seed), _shape(shape), dtype)
        return _units.restore((low + (high - low) * r).astype(dtype), unit)


def _read_in(value: Any, unit: Any, what: str) -> Any:
    """Express a distribution parameter in ``unit``; a plain number is read as already in it."""
    if _units.is_quantity(value):
        return _units.to_mantissa(value, unit, what=what, expected=what.split()[0])
    return jnp.asarray(value)


def _broadcast(value: Any, shape: tuple[int, ...], dtype: Any, what: str) -> Any:
    mantissa, unit = _units.split(value)
    try:
        out = jnp.broadcast_to(mantissa, shape)
    except ValueError:
        raise ValueError(
            f"{what}: a value of shape {tuple(mantissa.shape)} cannot fill shape {shape}; "
            f"give a scalar or an array broadcastable to {shape}"
        ) from None
    return _units.restore(out.astype(_float_dtype(dtype, mantissa)), unit)


_BY_NAME: dict[str, Callable[..., Any]] = {
    "zeros": lambda shape, dtype=None: Zeros()(shape, dtype),
    "ones": lambda shape, dtype=None: Ones()(shape, dtype),
}
_BY_TYPE: dict[type, Callable[..., Any]] = {}


def register(name_or_type: str | type, resolver: Callable[..., Any]) -> None:
    """Teach :func:`resolve` a new name or a new kind of specification.

    Parameters
    ----------
    name_or_type : str or type
        A name (then ``resolver(shape, dtype)`` makes the value) or a type
        (then ``resolver(spec, shape, dtype)`` turns an instance into a value).
    resolver : callable
        As described above.

    Examples
    --------
    >>> import unitnorm as un
    >>> un.init.register("halves", lambda shape, dtype=None: un.init.Constant(0.5)(shape, dtype))
    >>> un.init.resolve("halves", (2,)).tolist()
    [0.5, 0.5]
    """
    if isinstance(name_or_type, str):
        _BY_NAME[name_or_type] = resolver
    elif isinstance(name_or_type, type):
        _BY_TYPE[name_or_type] = resolver
    else:
        raise TypeError(f"register expects a name (str) or a type, got {type(name_or_type).__name__}")


def resolve(spec: Any, shape: int | Sequence[int], dtype: Any = None, unit: Any = None) -> Any:
    """Turn an initializer specification into a value of ``shape``.

    Parameters
    ----------
    spec : Initializer, callable, str, array_like or Quantity
        What to build: an :class:`Initializer`, a callable ``f(shape, dtype)``
        returning an array or Quantity, a registered name (``"zeros"``,
        ``"ones"``), or a value broadcast to ``shape``.
    shape : int or sequence of int
        The shape of the result.
    dtype : dtype, optional
        The mantissa dtype (default: float32, or the value's own float type).
    unit : brainunit.Unit, optional
        When given, the result is expressed in this unit; a value of another
        dimension is an error. When omitted the value's own unit is kept.

    Returns
    -------
    array or Quantity
        A value of exactly ``shape``.

    Raises
    ------
    ValueError
        When the value cannot be broadcast to ``shape`` (both shapes named).
    TypeError
        When ``spec`` is none of the accepted kinds, or an unknown name.
    brainunit.UnitMismatchError
        When ``unit`` is given and the value has another dimension.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> un.init.resolve("ones", 3).tolist()
    [1.0, 1.0, 1.0]
    >>> print(un.init.resolve(jnp.array([1.0, 2.0]) * u.mV, (2,), unit=u.volt))
    [0.001 0.002] V
    """
    shape = _shape(shape)
    for typ, resolver in _BY_TYPE.items():
        if isinstance(spec, typ):
            value = resolver(spec, shape, dtype)
            break
    else:
        if isinstance(spec, str):
            if spec not in _BY_NAME:
                known = ", ".join(sorted(_BY_NAME))
                raise TypeError(f"unknown initializer name {spec!r}; known names: {known}")
            value = _BY_NAME[spec](shape, dtype)
        elif isinstance(spec, Initializer) or (callable(spec) and not _is_value(spec)):
            value = spec(shape, dtype)
        elif _is_value(spec):
            value = _broadcast(spec, shape, dtype, "initializer")
        else:
            raise TypeError(
                "an initializer must be an Initializer, a callable f(shape, dtype), a registered "
                f"name, an array or a Quantity; got {type(spec).__name__}"
            )
    mantissa, vunit = _units.split(value)
    if tuple(mantissa.shape) != shape:
        raise ValueError(f"initializer {spec!r:.60} returned shape {tuple(mantissa.shape)}, expected {shape}")
    if unit is not None:
        value = _units.restore(_units.to_mantissa(value, unit, what="initial value"), unit)
    return value


def _is_value(x: Any) -> bool:
    return _units.is_quantity(x) or isinstance(x, (int, float, complex, np.ndarray, jax.Array, np.number))
