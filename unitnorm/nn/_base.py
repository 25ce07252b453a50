"""The base class of unitnorm's layers: a JAX pytree with States as leaves."""

from __future__ import annotations

import sys
from typing import Any

import brainunit as u
import jax

from unitnorm import _units

__all__ = ["Module"]


def _brainstate_fit() -> Any:
    """Return brainstate's ``fit`` flag, or ``None`` when brainstate is not imported or it is unset.

    brainstate is looked up in ``sys.modules`` only: unitnorm never imports it.
    """
    brainstate = sys.modules.get("brainstate")
    environ = getattr(brainstate, "environ", None)
    if environ is None:
        return None
    return environ.get("fit", default=None)


class Module:
    """Base class of the stateful layers.

    A layer is a JAX pytree: the values of its States are the leaves, and its
    configuration (shapes, axes, epsilon, mode, reference unit) is static. So
    ``jax.jit(lambda layer, x: (layer(x), layer))`` returns the updated layer,
    and ``jax.grad`` can differentiate with respect to a layer.

    Layers start in training mode. :meth:`train` and :meth:`eval` switch it;
    the ``training=`` keyword of a call overrides it for that call only.

    Notes
    -----
    **Order of precedence of modes** (the one place it is written down). A
    call trains (uses and updates batch statistics) or evaluates according to

    1. the call's ``training=`` keyword, when it is not ``None``;
    2. else brainstate's ``fit`` flag, when brainstate has been imported and
       ``fit`` is set (``brainstate.environ.context(fit=...)`` or
       ``brainstate.environ.set(fit=...)``); unitnorm never imports brainstate
       itself, it only looks for it in ``sys.modules``;
    3. else the layer's own mode, set by :meth:`train` / :meth:`eval`
       (training after construction).

    The mode is resolved in Python when the call runs, that is when a jitted
    function is *traced*, and a compiled function keeps the mode it was traced
    with. :meth:`train` / :meth:`eval` change the layer's static data, so plain
    ``jax.jit`` retraces for them; a ``fit`` context does not reach a cached
    trace (neither ``jax.jit``'s nor ``brainstate.transform.jit``'s), so jit
    one function per mode, as brainstate's own layers require.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(3)
    >>> step = jax.jit(lambda layer, x: (layer(x), layer))
    >>> y, layer = step(layer, jnp.arange(6.).reshape(2, 3))
    >>> [round(v, 3) for v in layer.running_mean.value.tolist()]
    [0.015, 0.025, 0.035]
    """

    _state_names: tuple[str, ...] = ()
    training: bool = True

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls, cls._flatten_with_keys, cls._unflatten, flatten_func=cls._flatten
        )

    # -- pytree ---------------------------------------------------------------
    def _static(self) -> tuple[tuple[str, Any], ...]:
        return tuple(
            (k, v)
            for k, v in sorted(vars(self).items())
            if k not in self._state_names and k != "_state_names"
        )

    def _flatten(self) -> tuple[tuple[Any, ...], Any]:
        children = tuple(getattr(self, n) for n in self._state_names)
        return children, (self._state_names, self._static())

    def _flatten_with_keys(self) -> tuple[tuple[Any, ...], Any]:
        children, aux = self._flatten()
        keys = tuple(jax.tree_util.GetAttrKey(n) for n in self._state_names)
        return tuple(zip(keys, children, strict=True)), aux

    @classmethod
    def _unflatten(cls, aux: Any, children: tuple[Any, ...]) -> Module:
        names, static = aux
        obj = object.__new__(cls)
        obj.__dict__.update(static)
        obj.__dict__.update(zip(names, children, strict=True))
        obj._state_names = names
        return obj

    # -- modes ----------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Switch to training mode (``mode=False``: evaluation); returns the layer."""
        self.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Switch to evaluation mode; returns the layer."""
        return self.train(False)

    def _is_training(self, training: bool | None) -> bool:
        """Resolve one call's mode: keyword, then brainstate's ``fit``, then the layer (class Notes)."""
        if training is not None:
            return bool(training)
        fit = _brainstate_fit()
        return self.training if fit is None else bool(fit)

    # -- helpers for subclasses ----------------------------------------------
    def _unit_error(self, received: Any, unit: Any) -> _units.UnitError:
        who = self._signature()
        if received.is_unitless:
            return _units.UnitError(
                f"{who} received a plain array (dimensionless) but its reference unit is "
                f"{_units.describe(unit)}; pass a Quantity, e.g. x * u.{unit}"
            )
        if u.get_dim(unit).is_dimensionless:
            return _units.UnitError(
                f"{who} received {_units.describe(received)}; pass plain arrays "
                f"(x.to_decimal(u.{received})) or build a layer with in_unit=u.{received}"
            )
        return _units.UnitError(
            f"{who} received {_units.describe(received)}; convert it or build a layer for {received}"
        )

    def _signature(self) -> str:
        """Name the layer and its reference unit for messages, e.g. ``BatchNorm1d(in_unit=mV)``."""
        unit = getattr(self, "in_unit", None)
        if unit is None:
            return type(self).__name__
        if u.get_dim(unit).is_dimensionless:
            return f"{type(self).__name__} (fixed as dimensionless)"
        return f"{type(self).__name__}(in_unit={unit})"

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self._static() if not k.startswith("_"))
        return f"{type(self).__name__}({cfg})"
