"""``ScalerLayer``: a fitted scaler's statistics at the front of a model (evaluation only)."""

from __future__ import annotations

from typing import Any

import brainunit as u
import jax.numpy as jnp
import numpy as np

from unitnorm import _units
from unitnorm.nn._base import Module
from unitnorm.state import State

__all__ = ["ScalerLayer"]


class ScalerLayer(Module):
    """Apply fitted per-channel statistics: ``(x - center) / scale + offset``; ``inverse`` undoes it.

    Built by ``scaler.as_layer()`` from a fitted :class:`StandardScaler`,
    :class:`RobustScaler` or :class:`QuantileScaler`. A JAX pytree (``center`` and
    ``scale`` are States, the unit is static), so ``jax.jit`` and ``jax.vmap`` take
    it; it never updates its statistics (evaluation only). Channels are the last axis.

    Parameters
    ----------
    center, scale : array_like
        Per channel, mantissas in ``unit``.
    unit : brainunit.Unit
        The fitted unit; inputs in any unit of its dimension are converted.
    offset : float, default 0.0
        Added after scaling (``QuantileScaler``'s ``median``).

    See Also
    --------
    StandardScaler.as_layer

    Notes
    -----
    Units: ``center`` and ``scale`` have unit(x); the output is dimensionless and
    ``inverse(y)`` has unit(x). Computed in float32 (float64 under ``jax_enable_x64``),
    so it equals ``transform`` to float32 precision.

    Examples
    --------
    >>> import brainunit as u, jax, numpy as np
    >>> from unitnorm.preprocessing import StandardScaler
    >>> x = np.array([[1., 10.], [2., 20.], [3., 30.]]) * u.mV
    >>> layer = StandardScaler().fit(x).as_layer()
    >>> y = jax.jit(lambda layer, x: layer(x))(layer, x.in_unit(u.volt))
    >>> print(np.asarray(y).round(4) + 0.0)
    [[-1.2247 -1.2247]
     [ 0.      0.    ]
     [ 1.2247  1.2247]]
    >>> back = layer.inverse(y)
    >>> print(back.unit, np.round(np.asarray(back.mantissa[:, 0]), 4))
    mV [1. 2. 3.]
    """

    _state_names = ("center", "scale")
    _reference_powers = {"center": 1, "scale": 1}

    def __init__(self, center: Any, scale: Any, *, unit: u.Unit = _units.UNITLESS, offset: float = 0.0):
        center = np.asarray(center)
        scale = np.asarray(scale)
        if center.ndim != 1 or center.shape != scale.shape:
            raise ValueError(
                "ScalerLayer: center and scale must be 1-D of one length, "
                f"got {center.shape} and {scale.shape}"
            )
        if not isinstance(unit, u.Unit):
            raise TypeError(f"ScalerLayer: unit must be a brainunit Unit, got {unit!r}")
        self.in_unit = unit
        self.offset = float(offset)
        self.training = False
        self.center = State(jnp.asarray(center))
        self.scale = State(jnp.asarray(scale))

    def __call__(self, x: Any) -> Any:
        """Normalize ``x`` of shape ``(..., channels)``, a Quantity in the fitted dimension."""
        m = _units.to_mantissa(x, self.in_unit, what="input", expected=self._signature())
        n = self.center.value.shape[0]
        if m.ndim < 1 or m.shape[-1] != n:
            raise ValueError(f"ScalerLayer expected input of shape (..., {n}), got {tuple(m.shape)}")
        dtype = m.dtype if jnp.issubdtype(m.dtype, jnp.floating) else jnp.float32
        return ((m - self.center.value) / self.scale.value + self.offset).astype(dtype)

    def inverse(self, y: Any) -> Any:
        """Denormalize: ``(y - offset) * scale + center``, a Quantity in the fitted unit."""
        m = _units.to_mantissa(y, _units.UNITLESS, what="inverse's input", expected="ScalerLayer.inverse")
        return _units.restore((m - self.offset) * self.scale.value + self.center.value, self.in_unit)
