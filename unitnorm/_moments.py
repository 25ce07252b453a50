"""The one moment merge, and the moment helpers it leans on.

Count, mean and M2 (sum of squared deviations) are combined exactly by :func:`merge`
(Chan, Golub and LeVeque's parallel update): layers (on devices, in float32 or wider,
with jax), streams and corpora (in float64, with NumPy) all use it, so a statistic
computed in parts equals the one computed at once up to rounding, whatever the split.
Parts are always merged in a fixed order, so results never depend on scheduling.

The rest of this module computes the moments of one array on one device
(:func:`moments_with_count`, with the statistics dtype :func:`stats_dtype` and the
shift of the one-pass variance) and combines them across mapped axes
(:func:`gather` then :func:`merge_along`, or :func:`sum_across`). ``functional`` and
``preprocessing`` both import it; it imports nothing from unitnorm.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "axis_size",
    "gather",
    "merge",
    "merge_along",
    "moments",
    "moments_with_count",
    "stats_dtype",
    "sum_across",
]


def _xp(*values: Any) -> Any:
    """NumPy for NumPy/Python values, ``jax.numpy`` as soon as one value is a jax array or tracer."""
    for v in values:
        if type(v).__module__.startswith(("jax", "jaxlib")):
            return jnp
    return np


def _abs2(d: Any) -> Any:
    """``|d|**2``, real, for real and complex NumPy or jax values."""
    return d.real * d.real + d.imag * d.imag if np.iscomplexobj(d) else d * d


def _like(v: Any, ref: Any) -> Any:
    """``v`` cast to the dtype of the jax array ``ref`` (explicit, so strict promotion accepts it)."""
    dtype = getattr(ref, "dtype", None)
    return v if dtype is None or getattr(v, "dtype", None) == dtype else jnp.asarray(v).astype(dtype)


# ----------------------------------------------------------------------------
# the merge


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

    Notes
    -----
    With jax values every mixed-dtype product is cast explicitly (the weights to the
    mean's dtype, which may be complex), so the merge runs under
    ``jax.numpy_dtype_promotion("strict")``; NumPy values follow NumPy's promotion.

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
    wm2 = count_a * wb
    if xp is jnp:
        wb, wm2 = _like(wb, delta), _like(wm2, m2_a)
    mean = mean_a + delta * wb
    m2 = m2_a + m2_b + _abs2(delta) * wm2
    # an empty side leaves the other exactly as it was
    mean = xp.where(count_b == 0, mean_a, xp.where(count_a == 0, mean_b, mean))
    m2 = xp.where(count_b == 0, m2_a, xp.where(count_a == 0, m2_b, m2))
    return count, mean, m2


def merge_along(counts: Any, means: Any, m2s: Any) -> tuple[Any, Any, Any]:
    """Merge parts stacked along the first axis with :func:`merge`, pairwise in a fixed order.

    Part ``2k`` is merged with part ``2k + 1`` (all pairs at once), then the
    results likewise, until one is left: ``ceil(log2(n))`` vectorised calls of
    :func:`merge`, the same tree whatever the values. An odd part out is merged
    with an empty part (count 0), which leaves it unchanged.

    Parameters
    ----------
    counts, means, m2s : array_like
        Shape ``(n, ...)``, one row per part, the three of one shape.

    Returns
    -------
    count, mean, m2 : array_like
        Shape ``(...)``: the moments of all parts together.

    Examples
    --------
    >>> import numpy as np
    >>> from unitnorm._moments import merge_along
    >>> parts = [np.array([1.0, 2.0]), np.array([4.0]), np.array([8.0, 16.0, 32.0])]
    >>> n, mean, m2 = merge_along(np.array([len(p) for p in parts]), np.array([p.mean() for p in parts]),
    ...                           np.array([((p - p.mean()) ** 2).sum() for p in parts]))
    >>> x = np.concatenate(parts)
    >>> print(n, bool(np.isclose(mean, x.mean())), bool(np.isclose(m2 / n, x.var())))
    6 True True
    """
    xp = _xp(counts, means, m2s)
    while counts.shape[0] > 1:
        if counts.shape[0] % 2:
            counts, means, m2s = (xp.concatenate([v, xp.zeros_like(v[:1])]) for v in (counts, means, m2s))
        counts, means, m2s = merge(counts[0::2], means[0::2], m2s[0::2], counts[1::2], means[1::2], m2s[1::2])
    return counts[0], means[0], m2s[0]


# ----------------------------------------------------------------------------
# dtypes


def check_dtype(dtype: Any, who: str = "") -> Any:
    """Return ``dtype`` as a numeric NumPy dtype (``None`` stays ``None``), or raise ``TypeError``."""
    if dtype is None:
        return None
    try:
        out = jnp.dtype(dtype)
    except TypeError:
        out = None
    if out is None or not jnp.issubdtype(out, jnp.number):
        prefix = f"{who}: " if who else ""
        raise TypeError(f"{prefix}dtype must be a numeric dtype such as jnp.float32, got {dtype!r:.40}")
    return out


def stats_dtype(x_dtype: Any, dtype: Any = None) -> Any:
    """Return the dtype statistics are computed in: at least float32, float64/complex kept.

    Written out rather than left to ``jnp.promote_types``, which refuses
    bfloat16 and float16 under ``jax.numpy_dtype_promotion("strict")``.
    """
    base = check_dtype(dtype) if dtype is not None else jnp.dtype(x_dtype)
    if not jnp.issubdtype(base, jnp.inexact):
        return jnp.dtype(jnp.float32)
    if jnp.issubdtype(base, jnp.complexfloating):
        return base if base.itemsize >= 8 else jnp.dtype(jnp.complex64)
    return base if base.itemsize >= 4 else jnp.dtype(jnp.float32)


def wider(a: Any, b: Any) -> Any:
    """Return the dtype that holds two statistics dtypes (float32 or wider), chosen explicitly.

    ``np.promote_types`` on float32/float64/complex64/complex128 gives jax's answer,
    and is not subject to jax's strict promotion mode.
    """
    return jnp.dtype(np.promote_types(stats_dtype(a), stats_dtype(b)))


# ----------------------------------------------------------------------------
# across mapped axes


def axis_size(axis_name: Any, axis_index_groups: Any = None) -> int:
    """How many devices' statistics are combined: the product of the mapped axes' sizes, or the group size.

    A static int under ``vmap``, ``pmap`` and ``shard_map`` alike; with groups of
    unequal sizes, the smallest.
    """
    if axis_index_groups is not None:
        return min(len(g) for g in axis_index_groups)
    return int(lax.axis_size(axis_name))


def sum_across(tree: Any, axis_name: Any, axis_index_groups: Any = None) -> Any:
    """Sum ``tree`` across the mapped axis ``axis_name`` (within ``axis_index_groups`` if given).

    ``psum`` without groups; with groups an ``all_gather`` then a sum, since jax's
    ``psum`` refuses ``axis_index_groups`` under ``shard_map``.
    """
    if axis_index_groups is None:
        return lax.psum(tree, axis_name)
    return jax.tree_util.tree_map(lambda v: jnp.sum(gather(v, axis_name, axis_index_groups), axis=0), tree)


def gather(v: jax.Array, axis_name: Any, axis_index_groups: Any = None) -> jax.Array:
    """Stack ``v`` from every device along a new first axis, in device order, with one collective.

    Without groups it is a ``psum`` of ``v`` placed in the device's own row of
    zeros (adding zeros is exact), which works for a tuple of axis names that
    includes a ``vmap`` axis, where jax's ``all_gather`` fails, and whose result
    ``shard_map`` knows to be the same on every device. With groups (which
    ``vmap`` does not support) it is ``all_gather``: jax's ``psum`` refuses groups
    under ``shard_map``.
    """
    if axis_index_groups is not None:
        return lax.all_gather(v, axis_name, axis_index_groups=axis_index_groups)
    n = axis_size(axis_name)
    rows = (n,) + v.shape
    mine = lax.broadcasted_iota(jnp.int32, rows, 0) == lax.axis_index(axis_name)
    return lax.psum(jnp.where(mine, jnp.broadcast_to(v, rows), jnp.zeros((), v.dtype)), axis_name)


# ----------------------------------------------------------------------------
# moments on mantissas


def _first_along(a: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Take ``a`` at index 0 of every axis in ``axes``, keeping those axes with size 1."""
    for ax in axes:
        a = lax.slice_in_dim(a, 0, 1, axis=ax)
    return a


def _explicitly_sharded(m: jax.Array, axes: tuple[int, ...]) -> bool:
    """Return True when one of ``axes`` of ``m`` is sharded over an Explicit mesh axis."""
    spec = getattr(getattr(jax.typeof(m), "sharding", None), "spec", None)
    if not spec:
        return False
    return any(a < len(spec) and spec[a] is not None for a in axes)


def _own_buffer(v: jax.Array) -> jax.Array:
    """Return ``v`` unchanged (``v + 0``), computed by a reduction so XLA keeps it in a buffer of its own.

    XLA would otherwise re-read the shift (a slice of the input) inside every full-size pass that
    uses the mean, and a pass that reads its input at other indices cannot write its output in
    place of a donated input: XLA then copies the whole input first.
    """
    return jnp.sum(jnp.stack([v, jnp.zeros_like(v)]), axis=0)


def _finish(mean: jax.Array, m2: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    # An empty selection (count 0) gives NaN statistics rather than silent zeros.
    count = jnp.broadcast_to(count, m2.shape)
    empty = count == 0
    mean = jnp.where(empty, jnp.nan, mean)
    var = jnp.where(empty, jnp.nan, jnp.maximum(m2 / jnp.maximum(count, 1), 0))
    return mean, var


def moments(
    m: jax.Array,
    axes: tuple[int, ...],
    mask: jax.Array | None = None,
    *,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance of a bare array over ``axes`` (reduced axes dropped).

    The fast path makes one pass over the data around a shift (the first element
    of each slice; the mean of the counted elements under a mask or on an
    explicitly sharded axis), so data far from zero keep their digits. Across
    devices, each device's count, mean and sum of squared deviations are
    gathered in one collective (:func:`gather`) and combined with
    :func:`merge_along`, so devices with different numbers of valid samples
    are weighted exactly.
    """
    mean, var, _ = moments_with_count(
        m,
        axes,
        mask,
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        dtype=dtype,
    )
    return mean, var


def moments_with_count(
    m: jax.Array,
    axes: tuple[int, ...],
    mask: jax.Array | None = None,
    *,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`moments`, plus the number of counted elements (over all devices), broadcastable to the mean."""
    cdt = stats_dtype(m.dtype, dtype)
    rdt = jnp.finfo(cdt).dtype  # real counterpart of a complex dtype
    m = m.astype(cdt)
    if mask is None:
        count = jnp.asarray(math.prod(m.shape[a] for a in axes), rdt)
    else:
        count = jnp.sum(mask, axis=axes, dtype=rdt)
        # masked-out elements may hold anything, NaN included: zero them before any arithmetic
        # so that they reach neither the sums nor the gradients
        m = jnp.where(mask, m, jnp.zeros((), cdt))
    safe = jnp.maximum(count, 1)

    def masked_sum(v: jax.Array) -> jax.Array:
        return jnp.sum(v if mask is None else jnp.where(mask, v, jnp.zeros((), v.dtype)), axis=axes)

    def per_slice(c: jax.Array, like: jax.Array) -> jax.Array:
        """Cast a count to ``like``'s dtype, keeping the reduced axes (explicit rank promotion)."""
        c = c.astype(like.dtype)
        return c if c.ndim == 0 else jnp.expand_dims(c, axes)

    if not use_fast_variance:
        s1 = jnp.sum(m, axis=axes)  # masked-out elements are zeros already: no second select
        if axis_name is not None:
            s1, count = sum_across((s1, count), axis_name, axis_index_groups)
            safe = jnp.maximum(count, 1)
        mean = s1 / safe.astype(cdt)
        # `m + (-mean)` equals `m - mean` bit for bit; written apart from the normalize step's
        # `m - mean` so that XLA fuses it into this reduction rather than sharing (and
        # materializing) one full-size difference between the two.
        m2 = masked_sum(_abs2(m + (-jnp.expand_dims(mean, axes))))
        if axis_name is not None:
            m2 = sum_across(m2, axis_name, axis_index_groups)
        return (*_finish(mean, m2, count), count)

    if mask is None and not _explicitly_sharded(m, axes):
        shift = _first_along(m, axes)
    else:
        # The first element may be masked out, or (on an explicitly sharded axis) not reachable by a
        # slice: shift by the mean of the counted elements instead, at the cost of one more read.
        shift = jnp.sum(m, axis=axes, keepdims=True) / per_slice(safe, m)
    shift = _own_buffer(lax.stop_gradient(shift))
    # The same difference written two ways (bit-identical: `a + (-b)` is `a - b` in IEEE
    # arithmetic), one per sum: XLA then fuses each into its own reduction over `m` instead
    # of materializing `m - shift` as a full-size temporary that both sums read.
    s1 = masked_sum(m + (-shift))
    s2 = masked_sum(_abs2(m - shift))
    mean = jnp.squeeze(shift, axes) + s1 / safe.astype(cdt)
    m2 = jnp.maximum(s2 - _abs2(s1) / safe, 0)
    if axis_name is not None:
        # one collective: every device's (count, mean, M2), merged in device order
        count = jnp.broadcast_to(count, mean.shape)
        parts = gather(jnp.stack([count.astype(cdt), mean, m2.astype(cdt)]), axis_name, axis_index_groups)
        count, mean, m2 = merge_along(parts[:, 0].real, parts[:, 1], parts[:, 2].real)
    return (*_finish(mean, m2, count), count)
