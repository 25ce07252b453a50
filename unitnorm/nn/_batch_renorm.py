"""BatchRenorm0d/1d/2d/3d: batch renormalization (Ioffe 2017) that keeps physical units."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from unitnorm import functional
from unitnorm.nn._batch_norm import _COMMON_DOC, _BatchNorm

__all__ = ["BatchRenorm0d", "BatchRenorm1d", "BatchRenorm2d", "BatchRenorm3d"]


def _check_limit(value: Any, what: str, lower: float, who: str) -> Any:
    if callable(value):
        return value
    functional.check_scalar(
        value, what, who, f"a float >= {lower:g} or a callable of the step count", math.inf
    )
    value = float(value)
    if value < lower:
        raise ValueError(f"{who}: {what} must be >= {lower:g}, got {value!r}")
    return value


class _BatchRenorm(_BatchNorm):
    r_max: Any = 3.0
    d_max: Any = 5.0

    def __init__(self, *args: Any, r_max: float | Callable[[Any], Any] = 3.0,
                 d_max: float | Callable[[Any], Any] = 5.0, **kwargs: Any) -> None:  # fmt: skip
        who = type(self).__name__
        r_max = _check_limit(r_max, "r_max", 1.0, who)
        d_max = _check_limit(d_max, "d_max", 0.0, who)
        if kwargs.get("track_running_stats", True) is False:
            raise ValueError(
                f"{who}: batch renormalization corrects towards the running statistics; "
                "track_running_stats=False leaves none (use BatchNorm for that)"
            )
        super().__init__(*args, **kwargs)
        self.r_max, self.d_max = r_max, d_max
        if callable(r_max) or callable(d_max):
            # the step count the schedules read: float32 (exact to 2**24 steps) so jax.grad takes the layer
            self.num_steps = type(self.running_mean)(jnp.zeros((), jnp.float32))
            self._state_names = (*self._state_names, "num_steps")

    def _renorm_limits(self) -> tuple[Any, Any]:
        step = self.num_steps.value if "num_steps" in self._state_names else None
        return tuple(v(step) if callable(v) else v for v in (self.r_max, self.d_max))  # type: ignore[return-value]

    def _write_running(self, mean: Any, var: Any, ok: Any = None) -> None:
        super()._write_running(mean, var, ok)
        if "num_steps" in self._state_names:
            self.num_steps.value = self.num_steps.value + 1


def _signature() -> inspect.Signature:
    """BatchNorm's signature plus ``r_max`` and ``d_max`` (for help(), the docs and introspection)."""
    base = inspect.signature(_BatchNorm.__init__)
    extra = [
        inspect.Parameter("r_max", inspect.Parameter.KEYWORD_ONLY, default=3.0),
        inspect.Parameter("d_max", inspect.Parameter.KEYWORD_ONLY, default=5.0),
    ]
    return base.replace(parameters=[*base.parameters.values(), *extra])


_BatchRenorm.__init__.__signature__ = _signature()  # type: ignore[attr-defined]

_RENORM_DOC = """
    Batch renormalization (Ioffe, 2017) trains with the batch statistics but
    corrects the result towards the running statistics:
    ``y = ((x - mu_B) / sigma_B * r + d) * scale + bias`` with
    ``r = clip(sigma_B / sigma, 1/r_max, r_max)`` and
    ``d = clip((mu_B - mu) / sigma, -d_max, d_max)``, where ``sigma_B =
    sqrt(var_B + epsilon)`` and ``sigma = sqrt(running_var + epsilon)``. ``r``
    and ``d`` are constants to the gradient, which flows through ``mu_B`` and
    ``sigma_B`` as in the paper. ``r_max=1, d_max=0`` is batch normalization;
    large limits give ``(x - running_mean) / sigma`` in training. Evaluation is
    batch normalization's.
"""

_RENORM_PARAMS = """    r_max : float or callable, default 3.0
        Bound of ``r`` (>= 1), or a schedule: a function of the step count
        (a float32 scalar, the training steps taken so far, kept in the
        ``num_steps`` State) returning it, e.g.
        ``lambda t: jnp.clip(1 + 2 * t / 5000, 1, 3)``.
    d_max : float or callable, default 5.0
        Bound of ``|d|`` (>= 0), or a schedule like ``r_max``.
"""

_RENORM_NOTES = """
    ``r`` is a ratio of two values in unit(x) and ``d`` a difference in unit(x)
    divided by one: both are dimensionless, so the output unit is ``scale``'s,
    as in BatchNorm. The running statistics are updated like BatchNorm's (an
    average of the batch means and biased variances, ``momentum``, ``debias``
    and ``momentum=None`` alike), not by the paper's average of ``sigma_B``, so
    that ``r_max=1, d_max=0`` is BatchNorm in every State. A layer with a
    schedule (a callable ``r_max`` or ``d_max``) cannot be saved with
    :func:`unitnorm.save` (a checkpoint holds no code); save its States with
    ``state_dict()`` and rebuild the layer in code.
"""


def _doc(summary: str, layout: str, example: str) -> str:
    common = _COMMON_DOC.format(layout=layout).replace(
        "\n    Attributes\n", _RENORM_PARAMS + "\n    Attributes\n", 1
    )
    return summary + _RENORM_DOC + common + _RENORM_NOTES + example


class BatchRenorm0d(_BatchRenorm):
    __doc__ = _doc(
        """0-D batch renormalization, input ``(batch, channels)``.
""",
        "``(channels,)``",
        """
    Examples
    --------
    With wide limits a training step normalizes with the running statistics
    (here mean 0 mV, variance 1 mV^2):

    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchRenorm0d(1, in_unit=u.mV, r_max=100.0, d_max=100.0, epsilon=0.0)
    >>> y = layer(jnp.array([[1.], [3.]]) * u.mV)
    >>> [round(v, 3) for v in y[:, 0].tolist()]
    [1.0, 3.0]

    ``r_max=1, d_max=0`` is batch normalization:

    >>> bn = un.BatchRenorm0d(1, r_max=1.0, d_max=0.0)
    >>> bn(jnp.array([[1.], [3.]]))[:, 0].round(3).tolist()
    [-1.0, 1.0]
""",
    )
    num_spatial_dims = 0


class BatchRenorm1d(_BatchRenorm):
    __doc__ = _doc(
        """1-D batch renormalization, input ``(batch, length, channels)``.
""",
        "``(length, channels)``",
        """
    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchRenorm1d((5, 2), in_unit=u.mV, r_max=lambda t: 1 + t / 100)
    >>> y = layer(jnp.arange(20.).reshape(2, 5, 2) * u.mV)
    >>> print(y.shape, layer.num_steps.value)
    (2, 5, 2) 1.0
""",
    )
    num_spatial_dims = 1


class BatchRenorm2d(_BatchRenorm):
    __doc__ = _doc(
        """2-D batch renormalization, input ``(batch, height, width, channels)``.
""",
        "``(height, width, channels)``",
        """
    Examples
    --------
    >>> import jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchRenorm2d((3, 3, 2))
    >>> print(layer(jnp.ones((2, 3, 3, 2))).shape)
    (2, 3, 3, 2)
""",
    )
    num_spatial_dims = 2


class BatchRenorm3d(_BatchRenorm):
    __doc__ = _doc(
        """3-D batch renormalization, input ``(batch, depth, height, width, channels)``.
""",
        "``(depth, height, width, channels)``",
        """
    Examples
    --------
    >>> import jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchRenorm3d((2, 2, 2, 1)).eval()
    >>> print(layer(jnp.ones((1, 2, 2, 2, 1))).shape)
    (1, 2, 2, 2, 1)
""",
    )
    num_spatial_dims = 3
