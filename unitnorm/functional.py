"""Pure normalization functions with units.

Every function here is free of hidden state and safe under ``jax.jit``,
``jax.grad`` and ``jax.vmap``. Units are stripped once on entry, the arithmetic
runs on mantissas in float32 or wider, and units are put back on the results:
the mean carries the input's unit ``U``, the variance ``U**2``, a normalized
value is dimensionless (a plain array) unless ``scale`` gives it a unit.

A float ``epsilon`` is read in the variance's unit, ``U**2``; a Quantity
epsilon must have that dimension and is converted. So the same data written in
V and in mV give the same output only with a Quantity epsilon (or, in the
layers, a fixed reference unit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from unitnorm import _units

__all__ = ["batch_norm", "compute_stats", "normalize"]

Axes = int | Sequence[int]


# ----------------------------------------------------------------------------
# checks and small helpers (Python-level, run before any math)


def canonical_axes(axes: Axes | None, ndim: int, what: str = "axes") -> tuple[int, ...]:
    """Return ``axes`` as a sorted tuple of non-negative ints, checking the range."""
    if axes is None:
        return tuple(range(ndim))
    seq = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in seq:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{what} must be ints, got {a!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{what}={a} is out of range for an input with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{what} must not repeat an axis, got {seq}")
    return tuple(sorted(out))


def stats_dtype(x_dtype: Any, dtype: Any = None) -> Any:
    """Return the dtype statistics are computed in: at least float32, float64/complex kept."""
    base = jnp.dtype(dtype) if dtype is not None else jnp.dtype(x_dtype)
    if not jnp.issubdtype(base, jnp.inexact):
        base = jnp.dtype(jnp.float32)
    return jnp.promote_types(base, jnp.float32)


def output_dtype(x_dtype: Any, dtype: Any = None) -> Any:
    """Return the output dtype: ``dtype`` if given, else the input's floating dtype."""
    if dtype is not None:
        return jnp.dtype(dtype)
    x_dtype = jnp.dtype(x_dtype)
    return x_dtype if jnp.issubdtype(x_dtype, jnp.inexact) else jnp.dtype(jnp.float32)


def check_numeric(m: jax.Array, who: str) -> None:
    """Reject arrays that cannot be normalized (bool, strings, objects)."""
    if m.dtype == jnp.bool_ or not (
        jnp.issubdtype(m.dtype, jnp.number) or jnp.issubdtype(m.dtype, jnp.inexact)
    ):
        raise TypeError(f"{who} expected a numeric (int, float or complex) array, got dtype {m.dtype}")


def check_mask(mask: Any, shape: tuple[int, ...], who: str) -> jax.Array | None:
    """Return ``mask`` as a bool array broadcast to ``shape``, or raise ``ValueError``."""
    if mask is None:
        return None
    if _units.is_quantity(mask):
        raise TypeError(f"{who}: mask must be a boolean array, got a Quantity")
    mask = jnp.asarray(mask)
    try:
        if jnp.broadcast_shapes(mask.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{who}: mask of shape {tuple(mask.shape)} does not broadcast to the input shape {tuple(shape)}"
        ) from None
    return jnp.broadcast_to(mask.astype(bool), shape)


def epsilon_mantissa(epsilon: Any, unit: Any, who: str) -> Any:
    """Express ``epsilon`` in ``unit**2``; a plain number is read as already in it."""
    if _units.is_quantity(epsilon):
        return _units.to_mantissa(epsilon, unit**2, what="epsilon", expected=who)
    return epsilon


def _abs2(d: jax.Array) -> jax.Array:
    return d.real * d.real + d.imag * d.imag if jnp.iscomplexobj(d) else d * d


# ----------------------------------------------------------------------------
# moments on mantissas


def _first_along(a: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Take ``a`` at index 0 of every axis in ``axes``, keeping those axes with size 1."""
    for ax in axes:
        a = lax.slice_in_dim(a, 0, 1, axis=ax)
    return a


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

    The fast path makes one pass over the data around a shift (the first valid
    element of each slice), so data far from zero keep their digits. Across
    devices, each device's count, mean and sum of squared deviations are
    gathered in one collective and combined with Chan's formula, so devices
    with different numbers of valid samples are weighted exactly.
    """
    cdt = stats_dtype(m.dtype, dtype)
    rdt = jnp.finfo(cdt).dtype  # real counterpart of a complex dtype
    m = m.astype(cdt)
    if mask is None:
        count = jnp.asarray(math.prod(m.shape[a] for a in axes), rdt)
    else:
        count = jnp.sum(mask, axis=axes, dtype=rdt)
    safe = jnp.maximum(count, 1)

    def masked_sum(v: jax.Array) -> jax.Array:
        return jnp.sum(v if mask is None else jnp.where(mask, v, 0), axis=axes)

    if not use_fast_variance:
        s1 = masked_sum(m)
        if axis_name is not None:
            s1, count = lax.psum((s1, count), axis_name, axis_index_groups=axis_index_groups)
            safe = jnp.maximum(count, 1)
        mean = s1 / safe
        m2 = masked_sum(_abs2(m - jnp.expand_dims(mean, axes)))
        if axis_name is not None:
            m2 = lax.psum(m2, axis_name, axis_index_groups=axis_index_groups)
        return _finish(mean, m2, count)

    shift = _first_along(m, axes)
    if mask is not None:
        shift = jnp.where(_first_along(mask, axes), shift, 0)
    shift = lax.stop_gradient(shift)
    d = m - shift
    s1 = masked_sum(d)
    s2 = masked_sum(_abs2(d))
    mean = jnp.squeeze(shift, axes) + s1 / safe
    m2 = jnp.maximum(s2 - _abs2(s1) / safe, 0)
    if axis_name is not None:
        count = jnp.broadcast_to(count, mean.shape)
        gathered = lax.all_gather(
            jnp.stack([count.astype(cdt), mean, m2.astype(cdt)]),
            axis_name,
            axis_index_groups=axis_index_groups,
        )
        counts, means, m2s = gathered[:, 0].real, gathered[:, 1], gathered[:, 2].real
        count = jnp.sum(counts, axis=0)
        mean = jnp.sum(counts * means, axis=0) / jnp.maximum(count, 1)
        m2 = jnp.sum(m2s, axis=0) + jnp.sum(counts * _abs2(means - mean), axis=0)
    return _finish(mean, m2, count)


def _finish(mean: jax.Array, m2: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    # An empty selection (count 0) gives NaN statistics rather than silent zeros.
    empty = count == 0
    mean = jnp.where(empty, jnp.nan, mean)
    var = jnp.where(empty, jnp.nan, jnp.maximum(m2 / jnp.maximum(count, 1), 0))
    return mean, var


def normalize_mantissa(
    m: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array | None,
    bias: jax.Array | None,
    epsilon: Any,
    reduction_axes: tuple[int, ...],
    feature_axes: tuple[int, ...],
    out_dtype: Any,
) -> jax.Array:
    """``(m - mean) / sqrt(var + epsilon) * scale + bias`` on bare arrays."""
    cdt = jnp.promote_types(stats_dtype(m.dtype), mean.dtype)
    mean = jnp.expand_dims(mean, reduction_axes)
    inv = lax.rsqrt(jnp.expand_dims(var, reduction_axes) + epsilon)
    fshape = tuple(m.shape[a] if a in feature_axes else 1 for a in range(m.ndim))
    if scale is not None:
        inv = inv * (scale if scale.ndim == 0 else scale.reshape(fshape))
    y = (m.astype(cdt) - mean) * inv
    if bias is not None:
        y = y + (bias if bias.ndim == 0 else bias.reshape(fshape))
    return y.astype(out_dtype)


# ----------------------------------------------------------------------------
# public functions


def compute_stats(
    x: Any,
    axes: Axes,
    *,
    mask: Any = None,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """Mean and (biased) variance of ``x`` over ``axes``, with units.

    Parameters
    ----------
    x : Quantity or array_like
        The data, in any unit ``U`` (or none). Integers are promoted to float32.
    axes : int or sequence of int
        The axes to reduce; they are dropped from the results.
    mask : array_like of bool, optional
        Which elements count (broadcast to ``x``'s shape). Masked-out
        elements may hold anything, NaN included.
    use_fast_variance : bool, default True
        One pass over the data around a per-slice shift (accurate for data far
        from zero). ``False`` computes the mean first, then the squared
        deviations (two passes).
    axis_name : str or tuple of str, optional
        Combine the statistics across this mapped axis (``pmap``, ``vmap``,
        ``shard_map``), weighting each device by its number of valid samples.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Compute in this dtype, promoted to at least float32.

    Returns
    -------
    mean : Quantity or array
        In ``U`` (a plain array when ``x`` has no unit).
    var : Quantity or array
        In ``U**2``; never negative. NaN where no element is valid.

    Raises
    ------
    ValueError
        When an axis is out of range or empty, or the mask does not broadcast.
    TypeError
        When ``x`` is not numeric.

    Notes
    -----
    The one-pass variance subtracts the first valid element of each slice
    before squaring, so ``E[(x-s)^2] - E[x-s]^2`` cancels no digits for data
    such as -65 mV ± 10 µV in float32, where ``E[x^2] - E[x]^2`` loses them all.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> mean, var = un.functional.compute_stats(jnp.array([1., 2., 3.]) * u.mV, axes=0)
    >>> print(mean, var)
    2. mV 0.6666667 mV^2
    """
    m, unit = _units.split(x)
    check_numeric(m, "compute_stats")
    axes = canonical_axes(axes, m.ndim)
    _check_nonempty(m.shape, axes, "compute_stats")
    mask = check_mask(mask, m.shape, "compute_stats")
    mean, var = moments(
        m,
        axes,
        mask,
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        dtype=dtype,
    )
    return _units.restore(mean, unit), _units.restore(var, unit**2)


def _check_nonempty(shape: tuple[int, ...], axes: tuple[int, ...], who: str) -> None:
    empty = [a for a in axes if shape[a] == 0]
    if empty:
        raise ValueError(f"{who}: cannot compute statistics over empty axes {empty} of shape {tuple(shape)}")


def _affine_mantissas(scale: Any, bias: Any, who: str) -> tuple[Any, Any, Any]:
    """Split scale and bias; bias is expressed in scale's unit (dimensionless without scale)."""
    scale_m, out_unit = (None, _units.UNITLESS) if scale is None else _units.split(scale)
    bias_m = None
    if bias is not None:
        bias_m = _units.to_mantissa(
            bias, out_unit, what="bias", expected=f"{who}: bias must have the unit of scale"
        )
    return scale_m, bias_m, out_unit


def normalize(
    x: Any,
    mean: Any,
    var: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    reduction_axes: Axes,
    feature_axes: Axes = -1,
    epsilon: Any = 1e-5,
    dtype: Any = None,
) -> Any:
    """Normalize ``x`` with given statistics, then apply ``scale`` and ``bias``.

    Parameters
    ----------
    x : Quantity or array_like
        The data, in unit ``U``.
    mean, var : Quantity or array_like
        Statistics with ``reduction_axes`` dropped, in ``U`` and ``U**2``.
    scale, bias : Quantity or array_like, optional
        Shaped like ``x``'s ``feature_axes``. ``scale`` sets the output unit;
        ``bias`` must be convertible to it (dimensionless when there is no scale).
    reduction_axes : int or sequence of int
        The axes the statistics were reduced over.
    feature_axes : int or sequence of int, default -1
        The axes ``scale`` and ``bias`` run along.
    epsilon : float or Quantity, default 1e-5
        Added to ``var``; a float is read in ``U**2``.
    dtype : dtype, optional
        Output dtype (default: the input's floating dtype).

    Returns
    -------
    Quantity or array
        ``(x - mean) / sqrt(var + epsilon) * scale + bias``, a plain array
        when dimensionless.

    Raises
    ------
    brainunit.UnitMismatchError
        When ``mean``, ``var``, ``epsilon`` or ``bias`` have the wrong dimension.

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; ``mean`` has
    unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets the output unit.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.array([1., 2., 3.]) * u.mV
    >>> mean, var = un.functional.compute_stats(x, axes=0)
    >>> y = un.functional.normalize(x, mean, var, scale=2. * u.mV, reduction_axes=0, epsilon=0.)
    >>> print(y.unit, [round(v, 3) for v in y.mantissa.tolist()])
    mV [-2.449, 0.0, 2.449]
    """
    m, unit = _units.split(x)
    check_numeric(m, "normalize")
    raxes = canonical_axes(reduction_axes, m.ndim, "reduction_axes")
    faxes = canonical_axes(feature_axes, m.ndim, "feature_axes")
    mean_m = _units.to_mantissa(mean, unit, what="mean", expected="normalize")
    var_m = _units.to_mantissa(var, unit**2, what="var", expected="normalize")
    eps = epsilon_mantissa(epsilon, unit, "normalize")
    scale_m, bias_m, out_unit = _affine_mantissas(scale, bias, "normalize")
    y = normalize_mantissa(m, mean_m, var_m, scale_m, bias_m, eps, raxes, faxes, output_dtype(m.dtype, dtype))
    return _units.restore(y, out_unit)


@partial(
    jax.jit,
    static_argnames=(
        "training",
        "has_running",
        "reduction_axes",
        "feature_axes",
        "use_fast_variance",
        "axis_name",
        "axis_index_groups",
        "out_dtype",
    ),
)
def batch_norm_mantissa(
    m: jax.Array,
    running_mean: Any,
    running_var: Any,
    scale: Any,
    bias: Any,
    mask: Any,
    momentum: Any,
    epsilon: Any,
    *,
    training: bool,
    has_running: bool,
    reduction_axes: tuple[int, ...],
    feature_axes: tuple[int, ...],
    use_fast_variance: bool,
    axis_name: Any,
    axis_index_groups: Any,
    out_dtype: Any,
) -> tuple[jax.Array, Any, Any]:
    """Run the batch-norm step on bare arrays (jit-compiled once per configuration)."""
    if training or not has_running:
        mean, var = moments(
            m,
            reduction_axes,
            mask,
            use_fast_variance=use_fast_variance,
            axis_name=axis_name,
            axis_index_groups=axis_index_groups,
        )
    else:
        mean, var = running_mean, running_var
    y = normalize_mantissa(m, mean, var, scale, bias, epsilon, reduction_axes, feature_axes, out_dtype)
    if training and has_running:
        batch_mean, batch_var = lax.stop_gradient(mean), lax.stop_gradient(var)
        running_mean = momentum * running_mean + (1 - momentum) * batch_mean
        running_var = momentum * running_var + (1 - momentum) * batch_var
    return y, running_mean, running_var


def batch_norm(
    x: Any,
    running_mean: Any,
    running_var: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    training: bool,
    momentum: Any = 0.99,
    epsilon: Any = 1e-5,
    feature_axes: Axes = (-1,),
    axis_name: Any = None,
    axis_index_groups: Any = None,
    use_fast_variance: bool = True,
    mask: Any = None,
    dtype: Any = None,
) -> tuple[Any, Any, Any]:
    """Batch normalization with running statistics, as a pure function.

    Statistics reduce over every axis of ``x`` that is not a feature axis. In
    training the batch statistics normalize ``x`` and update the running ones
    (``new = momentum * old + (1 - momentum) * batch``); in evaluation the
    running statistics normalize ``x`` and are returned unchanged.

    Parameters
    ----------
    x : Quantity or array_like
        The batch.
    running_mean, running_var : Quantity or array_like or None
        Shaped like the feature axes. Their units fix the unit ``x`` is read
        in (``x`` is converted; its dimension must match). ``None`` for both
        means "no running statistics": batch statistics are always used and
        ``None`` is returned for them.
    scale, bias : Quantity or array_like, optional
        Affine parameters shaped like the feature axes.
    training : bool
        Use (and update with) batch statistics, or use the running ones.
    momentum : float, default 0.99
        Weight of the old running value (brainstate/flax convention; PyTorch's
        0.1 is 0.9 here). May be a traced scalar.
    epsilon : float or Quantity, default 1e-5
        A float is read in the running statistics' unit squared.
    feature_axes : int or sequence of int, default (-1,)
        The axes that keep separate statistics.
    axis_name, axis_index_groups : optional
        Combine batch statistics across devices (see :func:`compute_stats`).
    use_fast_variance : bool, default True
        One-pass shifted variance, or two passes.
    mask : array_like of bool, optional
        Which elements of ``x`` count towards the batch statistics.
    dtype : dtype, optional
        Output dtype (default: the input's floating dtype).

    Returns
    -------
    y : Quantity or array
        Dimensionless unless ``scale`` has a unit.
    new_mean, new_var : Quantity or array or None
        The updated running statistics, in the units they came in.

    Raises
    ------
    ValueError
        When the running statistics or affine parameters do not have the
        feature shape, or the mask does not broadcast.
    brainunit.UnitMismatchError
        When ``x``, ``running_var``, ``epsilon`` or ``bias`` have the wrong dimension.

    Notes
    -----
    The variance is the biased one (divided by the number of samples), in the
    running statistics and in the normalization, like flax and brainstate.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.array([[1.], [3.]]) * u.volt
    >>> y, mean, var = un.functional.batch_norm(
    ...     x, jnp.zeros(1) * u.mV, jnp.ones(1) * u.mV**2, training=True, momentum=0.9)
    >>> print(mean.unit, var.unit, y.tolist())
    mV mV^2 [[-1.0], [1.0]]
    >>> print(round(float(mean.mantissa[0]), 2), round(float(var.mantissa[0]), 1))
    200.0 100000.9
    """
    m, xunit = _units.split(x)
    check_numeric(m, "batch_norm")
    faxes = canonical_axes(feature_axes, m.ndim, "feature_axes")
    raxes = tuple(a for a in range(m.ndim) if a not in faxes)
    fshape = tuple(m.shape[a] for a in faxes)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    has_running = running_mean is not None
    ref = _units.unit_of(running_mean) if has_running else xunit
    m = _units.to_mantissa(x, ref, what="x", expected=f"batch_norm (running_mean in {ref})")
    rm = rv = None
    if has_running:
        rm = _units.split(running_mean)[0]
        rv = _units.to_mantissa(running_var, ref**2, what="running_var", expected="batch_norm")
        for name, v in (("running_mean", rm), ("running_var", rv)):
            if tuple(v.shape) != fshape:
                raise ValueError(
                    f"batch_norm: {name} must have the feature shape {fshape}, got {tuple(v.shape)}"
                )
    scale_m, bias_m, out_unit = _affine_mantissas(scale, bias, "batch_norm")
    for name, v in (("scale", scale_m), ("bias", bias_m)):
        if v is not None and math.prod(v.shape) != math.prod(fshape):
            raise ValueError(f"batch_norm: {name} must have the feature shape {fshape}, got {tuple(v.shape)}")
    if training:
        _check_nonempty(m.shape, raxes, "batch_norm")
    mask = check_mask(mask, m.shape, "batch_norm")
    eps = epsilon_mantissa(epsilon, ref, "batch_norm")
    y, new_mean, new_var = batch_norm_mantissa(
        m,
        rm,
        rv,
        scale_m,
        bias_m,
        mask,
        momentum,
        eps,
        training=bool(training),
        has_running=has_running,
        reduction_axes=raxes,
        feature_axes=faxes,
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=_hashable_groups(axis_index_groups),
        out_dtype=output_dtype(m.dtype, dtype),
    )
    y = _units.restore(y, out_unit)
    if not has_running:
        return y, None, None
    return y, _units.restore(new_mean, ref), _units.restore(new_var, ref**2)


def _hashable_groups(groups: Any) -> Any:
    return None if groups is None else tuple(tuple(int(i) for i in g) for g in groups)
