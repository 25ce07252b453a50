"""The one moment merge: count, mean and M2 (sum of squared deviations), combined exactly.

Layers (on devices, in float32 or wider, with jax), streams and corpora (in float64,
with NumPy) all combine partial statistics with :func:`merge` (Chan, Golub and
LeVeque's parallel update), so a statistic computed in parts equals the one computed
at once up to rounding, whatever the split. Parts are always merged in a fixed order
by the callers, so results never depend on scheduling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["merge"]


def _xp(*values: Any) -> Any:
    """NumPy for NumPy/Python values, ``jax.numpy`` as soon as one value is a jax array or tracer."""
    for v in values:
        if type(v).__module__.startswith(("jax", "jaxlib")):
            import jax.numpy as jnp

            return jnp
    return np


def _abs2(d: Any) -> Any:
    return d.real * d.real + d.imag * d.imag if np.iscomplexobj(d) else d * d


def merge(count_a: Any, mean_a: Any, m2_a: Any, count_b: Any, mean_b: Any, m2_b: Any) -> tuple[Any, Any, Any]:
    """Combine the moments of two disjoint sets of values (Chan et al.'s parallel formula).

    Parameters
    ----------
    count_a, mean_a, m2_a : array_like
        Number of values, their mean and the sum of their squared deviations from
        that mean, for the first set (broadcastable to one another).
    count_b, mean_b, m2_b : array_like
        The same for the second set.

    Returns
    -------
    count, mean, m2 : array_like
        The moments of the union. Where one side is empty (count 0) the other is
        returned unchanged, bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> from unitnorm._moments import merge
    >>> x = np.array([1.0, 2.0, 4.0, 8.0])
    >>> a, b = x[:1], x[1:]
    >>> n, mean, m2 = merge(1, a.mean(), 0.0, 3, b.mean(), ((b - b.mean()) ** 2).sum())
    >>> print(n, mean, m2 / n == x.var())
    4 3.75 True
    """
    xp = _xp(count_a, mean_a, m2_a, count_b, mean_b, m2_b)
    count = count_a + count_b
    safe = xp.maximum(count, 1)
    delta = mean_b - mean_a
    wb = count_b / safe
    mean = mean_a + delta * wb
    m2 = m2_a + m2_b + _abs2(delta) * (count_a * wb)
    # an empty side leaves the other exactly as it was
    mean = xp.where(count_b == 0, mean_a, xp.where(count_a == 0, mean_b, mean))
    m2 = xp.where(count_b == 0, m2_a, xp.where(count_a == 0, m2_b, m2))
    return count, mean, m2
