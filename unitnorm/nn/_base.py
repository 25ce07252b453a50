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
    def __setattr__(self, name: str, value: Any) -> None:
        # any change of configuration (mode, reference unit, ...) drops the cached pytree aux data
        self.__dict__.pop("_aux", None)
        object.__setattr__(self, name, value)

    def _static(self) -> tuple[tuple[str, Any], ...]:
        return tuple(
            (k, v)
            for k, v in sorted(vars(self).items())
            if k not in self._state_names and k not in ("_state_names", "_aux")
        )

    def _flatten(self) -> tuple[tuple[Any, ...], Any]:
        children = tuple(getattr(self, n) for n in self._state_names)
        aux = self.__dict__.get("_aux")
        if aux is None:  # built once per configuration: flattening is on every jitted call's path
            aux = self.__dict__["_aux"] = (self._state_names, self._static())
        return children, aux

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
        obj.__dict__["_state_names"] = names
        obj.__dict__["_aux"] = aux
        return obj

    # -- modes ----------------------------------------------------------------
    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Call the layer: ``layer.update(x)`` is ``layer(x)``, brainstate's name for the forward pass."""
        return self(*args, **kwargs)

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

    # -- checkpoints ----------------------------------------------------------
    #: State fields held in the reference unit (``in_unit``) to this power.
    _reference_powers: dict[str, int] = {"running_mean": 1, "running_var": 2}

    def state_dict(self) -> dict[str, Any]:
        """Return the values of the layer's States by name, like PyTorch's ``state_dict``.

        A State holding a dict contributes one entry per item, named
        ``'<state>.<item>'`` (``'weight.scale'``, ``'weight.bias'``); the
        others one entry each (``'running_mean'``, ``'running_var'``,
        ``'num_batches_tracked'``). Values are the States' own values, as
        Quantities where they have a unit; items that are ``None`` are left out.

        Returns
        -------
        dict of str to Quantity or array
            A new dict; changing it does not change the layer.

        See Also
        --------
        load_state_dict, unitnorm.save, unitnorm.load

        Examples
        --------
        >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
        >>> layer = un.BatchNorm0d(2, in_unit=u.mV)
        >>> d = layer.state_dict()
        >>> list(d)
        ['weight.scale', 'weight.bias', 'running_mean', 'running_var']
        >>> print(d["running_var"])
        [1. 1.] mV^2
        """
        out: dict[str, Any] = {}
        for name in self._state_names:
            value = getattr(self, name).value
            if isinstance(value, dict):
                out.update((f"{name}.{k}", v) for k, v in value.items() if v is not None)
            elif value is not None:
                out[name] = value
        return out

    def load_state_dict(self, state_dict: Any) -> Module:
        """Load values saved by :meth:`state_dict` into this layer's States.

        Every field must be present, and no other. Each value must have the
        field's shape and the dimension of its unit; a compatible unit is
        converted (running statistics in V into a layer whose reference unit
        is mV), and the mantissa is cast to the dtype the field has now. The
        running statistics of a layer whose reference unit is not fixed yet
        (no ``in_unit``, never called) are taken in the unit they come in,
        which the layer then adopts. Everything is checked before anything is
        written: a failed load changes nothing.

        Parameters
        ----------
        state_dict : mapping of str to Quantity or array_like
            Field names as :meth:`state_dict` gives them.

        Returns
        -------
        Module
            This layer.

        Raises
        ------
        ValueError
            For a missing or unexpected field, or a value of another shape.
        TypeError
            For a value that is not numeric, or a float for an integer field.
        brainunit.UnitMismatchError
            For a value whose unit has another dimension than the field's.

        Examples
        --------
        >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
        >>> layer = un.BatchNorm0d(2, in_unit=u.mV)
        >>> d = layer.state_dict()
        >>> d["running_mean"] = jnp.array([0.001, 0.002]) * u.volt
        >>> print(layer.load_state_dict(d).running_mean.value)
        [1. 2.] mV
        """
        import collections.abc

        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"{who}: expected a dict of field name to value, got {type(state_dict).__name__}")
        current = self.state_dict()
        missing = [k for k in current if k not in state_dict]
        unexpected = [k for k in state_dict if k not in current]
        if missing or unexpected:
            raise ValueError(
                f"{who}: expected the fields {list(current)}; missing {missing}, unexpected {unexpected}"
            )
        ref = self._loaded_reference_unit(state_dict, current)
        loaded = {k: self._load_field(who, k, state_dict[k], v, ref) for k, v in current.items()}
        # every field checked and converted: now write
        for name in self._state_names:
            state = getattr(self, name)
            if isinstance(state.value, dict):
                state.value = {k: loaded.get(f"{name}.{k}", v) for k, v in state.value.items()}
            elif state.value is not None:
                state.value = loaded[name]
        if ref is not None and getattr(self, "in_unit", None) is None and not ref.is_unitless:
            self.in_unit = ref
        return self

    def _loaded_reference_unit(self, state_dict: Any, current: dict[str, Any]) -> Any:
        """Return the unit the reference fields are read in, or ``None`` to keep each field's own."""
        powers = {k: p for k, p in self._reference_powers.items() if k in current}
        if not powers or not hasattr(self, "in_unit"):
            return None
        if self.in_unit is not None:
            return self.in_unit
        first = next((k for k, p in powers.items() if p == 1), None)
        return None if first is None else _units.unit_of(state_dict[first])

    def _load_field(self, who: str, key: str, value: Any, old: Any, ref: Any) -> Any:
        import jax.numpy as jnp

        from unitnorm import functional

        if value is None:
            raise TypeError(f"{who}: field '{key}' expected an array or Quantity, got None")
        m, _ = _units.split(value)
        functional.check_numeric(m, f"{who}: field '{key}'")
        old_m, old_unit = _units.split(old)
        if tuple(m.shape) != tuple(old_m.shape):
            raise ValueError(
                f"{who}: field '{key}' expected shape {tuple(old_m.shape)}, got {tuple(m.shape)}"
            )
        power = self._reference_powers.get(key)
        unit = old_unit if ref is None or power is None else ref**power
        m = _units.to_mantissa(value, unit, what=f"field '{key}'", expected=who)
        if jnp.issubdtype(old_m.dtype, jnp.integer) and not jnp.issubdtype(m.dtype, jnp.integer):
            raise TypeError(f"{who}: field '{key}' expected integers ({old_m.dtype}), got {m.dtype}")
        return _units.restore(m.astype(old_m.dtype), unit)

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

    # -- display --------------------------------------------------------------
    def __repr__(self) -> str:
        """One line: class, ``in_size``, reference unit, mode, statistics' ranges, parameters' shapes.

        Examples
        --------
        >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
        >>> layer = un.BatchNorm0d(2, in_unit=u.mV)
        >>> _ = layer(jnp.array([[-67., 1.], [-63., 3.]]) * u.mV)
        >>> layer  # doctest: +NORMALIZE_WHITESPACE
        BatchNorm0d(in_size=(2,), in_unit=mV, mode=train, scale(2,)∈[1, 1], bias(2,)∈[0, 0],
                    running_mean∈[-0.65, 0.02] mV, running_var∈[1, 1.03] mV^2)
        """
        from unitnorm import _display

        return _display.layer_repr(self)

    def _repr_html_(self) -> str:
        """Return the summary of :meth:`__repr__` as a small HTML table (notebooks show it)."""
        from unitnorm import _display

        return _display.layer_html(self)
