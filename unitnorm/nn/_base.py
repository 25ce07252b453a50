"""The base class of unitnorm's layers: a JAX pytree with States as leaves."""

from __future__ import annotations

from typing import Any

import jax

from unitnorm import _units

__all__ = ["Module"]


class Module:
    """Base class of the stateful layers.

    A layer is a JAX pytree: the values of its States are the leaves, and its
    configuration (shapes, axes, epsilon, mode, reference unit) is static. So
    ``jax.jit(lambda layer, x: (layer(x), layer))`` returns the updated layer,
    and ``jax.grad`` can differentiate with respect to a layer.

    Layers start in training mode. :meth:`train` and :meth:`eval` switch it;
    the ``training=`` keyword of a call overrides it for that call only.

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
        """Mode precedence: the call's ``training=`` keyword, then the layer's mode."""
        return self.training if training is None else bool(training)

    # -- helpers for subclasses ----------------------------------------------
    def _unit_error(self, received: Any, unit: Any) -> _units.UnitError:
        return _units.UnitError(
            f"{self._signature()} received {_units.describe(received)}; "
            f"convert it or build a layer for {received}"
            if not received.is_unitless
            else f"{self._signature()} received a plain array (dimensionless) but its reference "
            f"unit is {_units.describe(unit)}; pass a Quantity, e.g. x * u.{unit}"
        )

    def _signature(self) -> str:
        unit = getattr(self, "in_unit", None)
        return f"{type(self).__name__}(in_unit={unit})" if unit is not None else type(self).__name__

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self._static() if not k.startswith("_"))
        return f"{type(self).__name__}({cfg})"
