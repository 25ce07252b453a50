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

import functools
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from unitnorm import _units
from unitnorm._moments import (  # noqa: F401 - re-exported: the layers and tests use these names here
    _abs2,
    _explicitly_sharded,
    _finish,
    _first_along,
    _own_buffer,
    axis_size,
    check_dtype,
    gather,
    merge_along,
    moments,
    moments_with_count,
    stats_dtype,
    sum_across,
    wider,
)

__all__ = [
    "batch_norm",
    "compute_stats",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "normalize",
    "rms_norm",
    "weight_standardization",
]

Axes = int | Sequence[int]


# ----------------------------------------------------------------------------
# checks and small helpers (Python-level, run before any math)


def canonical_axes(axes: Axes | None, ndim: int, what: str = "axes") -> tuple[int, ...]:
    """Return ``axes`` as a sorted tuple of non-negative ints, checking the range."""
    if axes is None:
        return tuple(range(ndim))
    try:
        seq = (axes,) if isinstance(axes, int) else tuple(axes)
    except TypeError:
        raise TypeError(f"{what} must be an int or a sequence of ints, got {axes!r}") from None
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


def output_dtype(x_dtype: Any, dtype: Any = None) -> Any:
    """Return the output dtype: ``dtype`` if given, else the input's floating dtype."""
    if dtype is not None:
        return check_dtype(dtype)
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
    kind = getattr(getattr(mask, "dtype", None), "kind", "b")
    try:
        if isinstance(mask, (str, bytes)) or kind in "OSUV":
            raise TypeError
        mask = jnp.asarray(mask)
    except (TypeError, ValueError):
        raise TypeError(
            f"{who}: mask must be a boolean array, got {type(mask).__name__} {mask!r:.40}"
        ) from None
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
    check_scalar(epsilon, "epsilon", who, f"a number (read in {unit**2}) or a Quantity", upper=math.inf)
    return epsilon


def check_scalar(value: Any, what: str, who: str, expected: str, upper: float) -> None:
    """Check a concrete real scalar in ``[0, upper]`` (finite); traced values pass unchecked."""
    if isinstance(value, jax.core.Tracer):
        return
    dtype = getattr(value, "dtype", None)
    numeric = isinstance(value, (int, float)) or (
        dtype is not None and (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))
    )
    if isinstance(value, bool) or dtype == jnp.bool_ or not numeric:
        raise TypeError(f"{who}: {what} must be {expected}, got {type(value).__name__} {value!r:.40}")
    if jnp.ndim(value) != 0:
        raise ValueError(f"{who}: {what} must be a scalar, got shape {tuple(jnp.shape(value))}")
    v = float(value)
    if not (0 <= v <= upper and math.isfinite(v)):
        bound = "finite and >= 0" if upper == math.inf else f"in [0, {upper:g}]"
        raise ValueError(f"{who}: {what} must be {bound}, got {v!r}")


NAN_POLICIES = ("propagate", "omit", "raise")


def check_nan_policy(nan_policy: Any, who: str) -> str:
    """Return ``nan_policy`` when it is one of scipy's names, else raise ``ValueError``."""
    if not isinstance(nan_policy, str) or nan_policy not in NAN_POLICIES:
        raise ValueError(f"{who}: nan_policy must be 'propagate', 'omit' or 'raise', got {nan_policy!r}")
    return nan_policy


def apply_nan_policy(m: jax.Array, mask: jax.Array | None, nan_policy: str, who: str) -> jax.Array | None:
    """Fold ``nan_policy`` into ``mask`` (the elements that count) before any statistic is computed.

    ``'propagate'`` returns ``mask`` unchanged. ``'omit'`` drops the non-finite
    elements of ``m`` (NaN and +-inf) from it. ``'raise'`` raises ``ValueError``
    when a counted element is non-finite and the values are concrete; when they
    are traced (inside ``jax.jit``) no Python error can be raised, so it adds a
    :func:`jax.experimental.checkify.debug_check`, reported when the caller wraps
    the function with ``checkify.checkify`` and a no-op otherwise.
    """
    nan_policy = check_nan_policy(nan_policy, who)
    if nan_policy == "propagate" or not jnp.issubdtype(m.dtype, jnp.inexact):
        return mask
    finite = jnp.isfinite(m)
    if nan_policy == "omit":
        return finite if mask is None else mask & finite
    bad = ~finite if mask is None else mask & ~finite
    if isinstance(bad, jax.core.Tracer):
        from jax.experimental import checkify

        checkify.debug_check(
            ~jnp.any(bad), f"{who}: nan_policy='raise' expected finite input, got non-finite values"
        )
        return mask
    n_bad = int(jnp.sum(bad))
    if n_bad:
        first = tuple(int(i) for i in jnp.argwhere(bad)[0])
        raise ValueError(
            f"{who}: nan_policy='raise' expected finite input, got {n_bad} non-finite value(s) "
            f"(the first at index {first}); use nan_policy='omit' to leave them out of the statistics"
        )
    return mask


def update_allowed(
    m: jax.Array,
    mask: jax.Array | None,
    raxes: tuple[int, ...],
    nan_policy: str,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    count: Any = None,
) -> Any:
    """Per feature, may this batch update the running statistics? ``None`` when all may.

    False where fewer than 2 elements count over all devices (``count``, from
    :func:`batch_norm_mantissa`: an all-false mask, only non-finite values under
    ``'omit'``, or a single counted value), and, under ``'raise'`` with traced
    values (where no error can be raised), where a counted element is
    non-finite on any device. The running statistics of those features keep
    their old values; the verdict is the same on every device, so their
    running statistics stay equal.
    """
    ok = None if count is None else count >= 2
    bad = None
    if nan_policy == "raise" and isinstance(m, jax.core.Tracer) and jnp.issubdtype(m.dtype, jnp.inexact):
        finite = jnp.isfinite(m) if mask is None else jnp.isfinite(m) | ~mask
        bad = ~jnp.all(finite, axis=raxes)
        if axis_name is not None:
            bad = sum_across(bad.astype(jnp.int32), axis_name, axis_index_groups) > 0
    if bad is not None:
        ok = ~bad if ok is None else ok & ~bad
    return ok


_ONE_VALUE = "expected more than 1 value per feature to compute batch statistics"


def check_batch_size(
    shape: tuple[int, ...],
    raxes: tuple[int, ...],
    who: str,
    axis_name: Any = None,
    axis_index_groups: Any = None,
) -> None:
    """Refuse batch statistics computed from a single value per feature (PyTorch's rule).

    Without a mask the count is static: the values per feature on this device
    times the number of devices combined (:func:`unitnorm._moments.axis_size`,
    the group size with ``axis_index_groups``), so one sample per device is
    fine across several devices.
    """
    local = math.prod(shape[a] for a in raxes)
    if local != 1:
        return
    across = ""
    if axis_name is not None:
        devices = axis_size(axis_name, axis_index_groups)
        if devices > 1:
            return
        across = f" and 1 device across axis_name={axis_name!r}"
    raise ValueError(
        f"{who}: {_ONE_VALUE}, got input of shape {tuple(shape)} (1 value per feature over axes "
        f"{raxes}{across}); use a batch of 2 or more, or evaluation mode with running statistics"
    )


def check_layer_dtype(dtype: Any, who: str) -> Any:
    """Check a layer's output ``dtype``: ``None`` or floating (or complex); integers would truncate."""
    out = check_dtype(dtype, who)
    if out is not None and not jnp.issubdtype(out, jnp.inexact):
        raise TypeError(
            f"{who}: dtype must be a floating dtype such as jnp.float32 (the output holds normalized "
            f"values, which an integer dtype would truncate), got {out}"
        )
    return out


def check_batch_counts(count: Any, who: str) -> None:
    """Apply the same rule to counts known only at run time (a mask, or ``nan_policy='omit'``).

    ``count`` is the number of counted values per feature over all devices (or
    ``None``: nothing to check). Concrete counts raise ``ValueError`` where a
    feature has exactly one; traced ones (inside ``jax.jit``, ``vmap``, ...)
    cannot, so a :func:`jax.experimental.checkify.debug_check` reports them
    when the caller wraps the step with ``checkify.checkify``. Either way such a
    feature (like one with none) keeps its running statistics
    (:func:`update_allowed`).
    """
    if count is None:
        return
    single = count == 1
    if isinstance(single, jax.core.Tracer):
        from jax.experimental import checkify

        checkify.debug_check(
            ~jnp.any(single), f"{who}: {_ONE_VALUE}, got a feature with 1 counted value (mask or nan_policy)"
        )
        return
    if bool(jnp.any(single)):
        where = [tuple(int(i) for i in idx) for idx in jnp.argwhere(single)]
        raise ValueError(
            f"{who}: {_ONE_VALUE}, got 1 counted value for the feature(s) at {where[:5]} (masked-out "
            "elements, and non-finite ones under nan_policy='omit', do not count); use a batch with 2 or "
            "more counted values, or evaluation mode with running statistics"
        )


# ----------------------------------------------------------------------------
# normalization on mantissas


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
    """``(m - mean) / sqrt(var + epsilon) * scale + bias`` on bare arrays.

    Every mixed-dtype step casts explicitly to the dtype jax would promote to,
    and every broadcast is explicit, so it runs under jax's strict promotion
    modes with the results of the default ones.
    """
    cdt = wider(m.dtype, mean.dtype)
    mean = jnp.expand_dims(mean, reduction_axes).astype(cdt)
    # rsqrt on the reduced shape, then expanded: expanded first, XLA on CPU lays the size-1 axes out
    # apart and copies the result inside the output pass, which then no longer fuses with the
    # statistics (InstanceNorm 2.0x -> 1.0x the byte floor)
    inv = jnp.expand_dims(lax.rsqrt(var + _cast(epsilon, var.dtype)), reduction_axes)
    fshape = tuple(m.shape[a] if a in feature_axes else 1 for a in range(m.ndim))
    if scale is not None:
        inv, scale = _promoted(inv, _per_feature(scale, fshape))
        inv = inv * scale
    centred, inv = _promoted(m.astype(cdt) - mean, inv)
    y = centred * inv
    if bias is not None:
        y, bias = _promoted(y, _per_feature(bias, fshape))
        y = y + bias
    return y.astype(out_dtype)


def _cast(v: Any, dtype: Any) -> jax.Array:
    """``v`` (an array or a Python number) as an array of ``dtype``."""
    return jnp.asarray(v).astype(dtype)


def _per_feature(v: jax.Array, fshape: tuple[int, ...]) -> jax.Array:
    """Reshape a scale or bias to broadcast along the feature axes (a scalar stays one)."""
    return v if v.ndim == 0 else v.reshape(fshape)


def _promoted(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """Cast arrays of float32-or-wider kinds to the one dtype jax's default promotion would give."""
    dtype = functools.reduce(wider, (a.dtype for a in arrays))
    return tuple(a.astype(dtype) for a in arrays)


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
    nan_policy: str = "propagate",
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
        ``shard_map``; a tuple may mix them), weighting each device by its
        number of valid samples. The one-pass path does it with one ``psum``
        of every device's count, mean and M2, merged in device order.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Compute in this dtype, promoted to at least float32.
    nan_policy : {'propagate', 'omit', 'raise'}, default 'propagate'
        What non-finite values (NaN, +-inf) of ``x`` do, with scipy's names:
        ``'propagate'`` lets them make the statistics non-finite;
        ``'omit'`` leaves them out, as if masked (a slice with no finite value
        gets NaN statistics); ``'raise'`` raises ``ValueError`` when a counted
        element is non-finite. ``'raise'`` needs concrete values: inside
        ``jax.jit`` it becomes a ``checkify.debug_check``, reported only when
        the caller wraps the function with ``jax.experimental.checkify.checkify``.

    Returns
    -------
    mean : Quantity or array
        In ``U`` (a plain array when ``x`` has no unit).
    var : Quantity or array
        In ``U**2``; never negative. NaN where no element is valid.

    Raises
    ------
    ValueError
        When an axis is out of range or empty, the mask does not broadcast, or
        ``nan_policy='raise'`` meets a non-finite value.
    TypeError
        When ``x`` is not numeric.

    Notes
    -----
    The one-pass variance subtracts a shift ``s`` from each slice before
    squaring, so ``E[(x-s)^2] - E[x-s]^2`` cancels no digits for data such as
    -65 mV ± 10 µV in float32, where ``E[x^2] - E[x]^2`` loses them all. The
    shift is the slice's first element; with a mask (whose first element may
    be masked out), or on an explicitly sharded axis, it is the mean of the
    counted elements, which costs one more read of ``x``.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> mean, var = un.functional.compute_stats(jnp.array([1., 2., 3.]) * u.mV, axes=0)
    >>> print(mean, var)
    2. mV 0.6666667 mV^2

    A recording with a gap: ``'omit'`` gives the statistics of the samples that
    are there.

    >>> gap = jnp.array([1., jnp.nan, 2., 3.]) * u.mV
    >>> mean, var = un.functional.compute_stats(gap, axes=0, nan_policy="omit")
    >>> print(mean, var)
    2. mV 0.6666667 mV^2
    """
    m, unit = _units.split(x)
    check_numeric(m, "compute_stats")
    axes = canonical_axes(axes, m.ndim)
    _check_nonempty(m.shape, axes, "compute_stats")
    mask = check_mask(mask, m.shape, "compute_stats")
    mask = apply_nan_policy(m, mask, nan_policy, "compute_stats")
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
    kept = tuple(m.shape[a] for a in range(m.ndim) if a not in raxes)
    for name, v in (("mean", mean_m), ("var", var_m)):
        try:
            fits = v.ndim == len(kept) and jnp.broadcast_shapes(v.shape, kept) == kept
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"normalize: {name} must have the shape of x without the reduction axes, {kept}, "
                f"got {tuple(v.shape)}"
            )
    _check_affine_shape(scale_m, bias_m, tuple(m.shape[a] for a in faxes), "normalize")
    y = normalize_mantissa(m, mean_m, var_m, scale_m, bias_m, eps, raxes, faxes, output_dtype(m.dtype, dtype))
    return _units.restore(y, out_unit)


# ----------------------------------------------------------------------------
# batch statistics and normalization in one step, with a closed-form derivative


def batch_normalize_mantissa(
    m: jax.Array,
    scale: jax.Array | None,
    bias: jax.Array | None,
    mask: jax.Array | None,
    epsilon: Any,
    *,
    reduction_axes: tuple[int, ...],
    feature_axes: tuple[int, ...],
    use_fast_variance: bool,
    axis_name: Any,
    axis_index_groups: Any,
    out_dtype: Any,
    return_count: bool = False,
) -> tuple[jax.Array, ...]:
    """Normalize ``m`` with its own statistics; return ``(y, mean, var)``.

    With ``return_count=True`` also the number of counted elements per feature
    over all devices (broadcast to the mean's shape), a fourth output.

    The values are those of :func:`moments_with_count` followed by
    :func:`normalize_mantissa`. For real floating input the derivative is the
    closed-form batch-norm derivative (a ``jax.custom_jvp``): its transpose,
    the backward pass, reads the cotangent and the input twice for two
    per-feature sums and writes the input's gradient in one fused pass, where
    differentiating the statistics step by step materializes several
    full-size temporaries. It is exact: masks select the elements the
    statistics count, and across ``axis_name`` the per-feature sums are
    ``psum``-ed, as the statistics are. Forward mode (``jax.jvp``,
    ``jax.jacfwd``) and higher derivatives work as before.
    """
    if not jnp.issubdtype(m.dtype, jnp.floating):
        mean, var, count = moments_with_count(
            m,
            reduction_axes,
            mask,
            use_fast_variance=use_fast_variance,
            axis_name=axis_name,
            axis_index_groups=axis_index_groups,
        )
        y = normalize_mantissa(m, mean, var, scale, bias, epsilon, reduction_axes, feature_axes, out_dtype)
        out = (y, mean, var, jnp.broadcast_to(count, mean.shape))
    else:
        fn = _batch_normalizer(
            reduction_axes,
            feature_axes,
            use_fast_variance,
            axis_name,
            axis_index_groups,
            jnp.dtype(out_dtype),
        )
        out = fn(m, scale, bias, mask, epsilon)
    return out if return_count else out[:3]


@functools.lru_cache(maxsize=128)
def _batch_normalizer(
    raxes: tuple[int, ...],
    faxes: tuple[int, ...],
    fast: bool,
    axis_name: Any,
    groups: Any,
    out_dtype: Any,
) -> Any:
    """Build the custom-JVP batch normalization for one static configuration."""

    def forward(m: jax.Array, scale: Any, bias: Any, mask: Any, epsilon: Any) -> tuple[Any, ...]:
        mean, var, count = moments_with_count(
            m, raxes, mask, use_fast_variance=fast, axis_name=axis_name, axis_index_groups=groups
        )
        y = normalize_mantissa(m, mean, var, scale, bias, epsilon, raxes, faxes, out_dtype)
        return y, mean, var, jnp.broadcast_to(count, mean.shape)

    @jax.custom_jvp
    def normalizer(m: jax.Array, scale: Any, bias: Any, mask: Any, epsilon: Any) -> tuple[Any, ...]:
        return forward(m, scale, bias, mask, epsilon)

    @normalizer.defjvp
    def normalizer_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        m, scale, bias, mask, epsilon = primals
        dm, dscale, dbias, _, deps = tangents
        y, mean, var, count = forward(m, scale, bias, mask, epsilon)
        # one dtype for the whole derivative (explicit casts: strict promotion mode)
        dtypes = [m.dtype, mean.dtype] + [v.dtype for v in (scale, bias) if v is not None]
        cdt = functools.reduce(wider, dtypes)
        fshape = tuple(m.shape[a] if a in faxes else 1 for a in range(m.ndim))

        def per_feature(v: Any) -> Any:
            return _per_feature(v, fshape).astype(cdt)

        def counted_sum(v: jax.Array) -> jax.Array:
            counted = v if mask is None else jnp.where(mask, v, jnp.zeros((), cdt))
            return jnp.sum(counted, axis=raxes, keepdims=True)

        x, dx = m.astype(cdt), dm.astype(cdt)
        mb = jnp.expand_dims(mean, raxes).astype(cdt)
        inv = lax.rsqrt(jnp.expand_dims(var, raxes).astype(cdt) + _cast(epsilon, cdt))
        deps = _cast(deps, cdt)
        n = jnp.maximum(jnp.expand_dims(jnp.broadcast_to(count, mean.shape), raxes), 1).astype(cdt)
        # d mean = sum(dx)/n and d var = 2 sum((x - mean) dx)/n over the counted elements (the
        # shift of the one-pass variance cancels). `x - mean`, `-(mean - x)` and `x + (-mean)` are
        # bit-identical, written apart so that XLA fuses each full-size use into its own consumer;
        # the last, a broadcast of its own vector, becomes the backward pass's reduction.
        s1, s2 = counted_sum(dx), counted_sum(dx * (-(mb - x)))
        if axis_name is not None:
            s1, s2 = sum_across((s1, s2), axis_name, groups)
        dmean, dvar = s1 / n, 2 * s2 / n
        dinv = -0.5 * inv * inv * inv * (dvar + deps)
        k, t = inv, dinv
        if scale is not None:
            k, t = inv * per_feature(scale), dinv * per_feature(scale) + inv * per_feature(dscale)
        dy = dx * k - dmean * k + (x + (-mb)) * t
        if bias is not None:
            dy = dy + per_feature(dbias)
        dmean, dvar = jnp.squeeze(dmean, raxes).astype(mean.dtype), jnp.squeeze(dvar, raxes).astype(var.dtype)
        return (y, mean, var, count), (dy.astype(y.dtype), dmean, dvar, jnp.zeros_like(count))

    return normalizer


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
) -> tuple[jax.Array, Any, Any, Any]:
    """Run the batch-norm step on bare arrays (jit-compiled once per configuration).

    Returns ``(y, running_mean, running_var, count)``; ``count`` is the number
    of counted values per feature over all devices when batch statistics were
    computed under a mask (for :func:`check_batch_counts`), else ``None``.
    """
    count = None
    if training or not has_running:
        y, mean, var, count = batch_normalize_mantissa(
            m,
            scale,
            bias,
            mask,
            epsilon,
            reduction_axes=reduction_axes,
            feature_axes=feature_axes,
            use_fast_variance=use_fast_variance,
            axis_name=axis_name,
            axis_index_groups=axis_index_groups,
            out_dtype=out_dtype,
            return_count=True,
        )
        count = None if mask is None else count
    else:
        mean, var = running_mean, running_var
        y = normalize_mantissa(m, mean, var, scale, bias, epsilon, reduction_axes, feature_axes, out_dtype)
    if training and has_running:
        batch_mean, batch_var = lax.stop_gradient(mean), lax.stop_gradient(var)
        running_mean, batch_mean = _promoted(running_mean, batch_mean)
        running_var, batch_var = _promoted(running_var, batch_var)
        w = _cast(momentum, running_mean.dtype)
        running_mean = w * running_mean + (1 - w) * batch_mean
        w = _cast(momentum, running_var.dtype)
        running_var = w * running_var + (1 - w) * batch_var
    return y, running_mean, running_var, count


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
    nan_policy: str = "propagate",
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
        Which elements of ``x`` count towards the batch statistics. A feature
        with no element counted keeps its running statistics.
    dtype : dtype, optional
        Output dtype (default: the input's floating dtype).
    nan_policy : {'propagate', 'omit', 'raise'}, default 'propagate'
        Non-finite values of ``x``: ``'propagate'`` (the default, as in flax
        and brainstate) lets them into the statistics; ``'omit'`` leaves them
        out of the batch statistics, as if masked, and leaves them non-finite
        in ``y``; ``'raise'`` raises ``ValueError`` when a counted element is
        non-finite. Under ``jax.jit`` ``'raise'`` cannot raise: it becomes a
        ``checkify.debug_check`` (reported under ``checkify.checkify``), and a
        feature holding a non-finite value keeps its running statistics.

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
        feature shape, the mask does not broadcast, batch statistics would come
        from a single value per feature, or ``nan_policy='raise'`` meets a
        non-finite value.
    brainunit.UnitMismatchError
        When ``x``, ``running_var``, ``epsilon`` or ``bias`` have the wrong dimension.

    Notes
    -----
    The variance is the biased one (divided by the number of samples), in the
    running statistics and in the normalization, like flax and brainstate.

    Batch statistics need more than one value per feature, counted over all
    devices of ``axis_name`` (one sample per device is fine on several
    devices). Without a mask that count is static and a count of 1 raises
    ``ValueError``. With a mask or ``nan_policy='omit'`` a concrete count of 1
    raises ``ValueError``; a traced one (inside ``jax.jit``) is reported by a
    ``jax.experimental.checkify.debug_check`` under ``checkify.checkify``, and
    the feature keeps its running statistics, as one with no counted value does.

    Every dtype step is an explicit cast and every broadcast explicit, so the
    function runs under ``jax.numpy_dtype_promotion("strict")`` and
    ``jax.numpy_rank_promotion("raise")``.

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

    One sample per device is a batch of four across a mapped axis of size four:

    >>> import jax
    >>> step = lambda xi: un.functional.batch_norm(xi, None, None, training=True, axis_name="b")[0]
    >>> y = jax.vmap(step, axis_name="b")(jnp.arange(4.).reshape(4, 1))
    >>> [round(v, 4) for v in y[:, 0].tolist()]
    [-1.3416, -0.4472, 0.4472, 1.3416]
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
    if training or not has_running:
        check_batch_size(m.shape, raxes, "batch_norm", axis_name, axis_index_groups)
    mask = check_mask(mask, m.shape, "batch_norm")
    mask = apply_nan_policy(m, mask, nan_policy, "batch_norm")
    eps = epsilon_mantissa(epsilon, ref, "batch_norm")
    check_scalar(momentum, "momentum", "batch_norm", "a number in [0, 1]", upper=1.0)
    y, new_mean, new_var, count = batch_norm_mantissa(
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
    check_batch_counts(count, "batch_norm")
    y = _units.restore(y, out_unit)
    if not has_running:
        return y, None, None
    ok = update_allowed(m, mask, raxes, nan_policy, axis_name, axis_index_groups, count) if training else None
    if ok is not None:
        new_mean, new_var = keep_where_not(ok, new_mean, rm), keep_where_not(ok, new_var, rv)
    return y, _units.restore(new_mean, ref), _units.restore(new_var, ref**2)


def keep_where_not(ok: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """Take ``new`` where ``ok``, else ``old`` (cast to ``new``'s dtype: no implicit promotion)."""
    return jnp.where(ok, new, old.astype(new.dtype))


def _hashable_groups(groups: Any) -> Any:
    return None if groups is None else tuple(tuple(int(i) for i in g) for g in groups)


# ----------------------------------------------------------------------------
# per-sample normalizations: layer, RMS, group and instance norm; weight standardization


def mean_square(
    m: jax.Array,
    axes: tuple[int, ...],
    mask: jax.Array | None = None,
    *,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> jax.Array:
    """Mean of ``|m|**2`` over ``axes`` on a bare array (reduced axes dropped).

    The statistic of RMS normalization (not the variance: nothing is
    subtracted). Across devices the masked sums of squares and the counts are
    combined with one ``psum``, so devices holding different numbers of valid
    elements are weighted exactly.

    Parameters
    ----------
    m : jax.Array
        The mantissa.
    axes : tuple of int
        Non-negative axes to reduce.
    mask : jax.Array of bool, optional
        Shaped like ``m``: which elements count. Masked-out elements may hold
        anything, NaN included, without leaking into the value or its gradient.
    axis_name : str or tuple of str, optional
        Combine across this mapped axis (``vmap``, ``pmap``, ``shard_map``).
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Compute in this dtype, promoted to at least float32.

    Returns
    -------
    jax.Array
        Real, float32 or wider; NaN where no element is valid.

    Notes
    -----
    For a mantissa in unit ``U`` the result is in ``U**2``, the unit of the
    epsilon it is added to.

    Examples
    --------
    >>> import jax.numpy as jnp, unitnorm as un
    >>> un.functional.mean_square(jnp.array([[3., 4.], [1., 1.]]), (1,)).tolist()
    [12.5, 1.0]
    """
    cdt = stats_dtype(m.dtype, dtype)
    rdt = jnp.finfo(cdt).dtype
    m = m.astype(cdt)
    if mask is None:
        s2 = jnp.sum(_abs2(m), axis=axes)
        count = jnp.asarray(math.prod(m.shape[a] for a in axes), rdt)
    else:
        s2 = jnp.sum(_abs2(jnp.where(mask, m, 0)), axis=axes)
        count = jnp.sum(mask, axis=axes, dtype=rdt)
    if axis_name is not None:
        s2, count = sum_across((s2, count), axis_name, axis_index_groups)
    return jnp.where(count == 0, jnp.nan, s2 / jnp.maximum(count, 1))


@partial(
    jax.jit,
    static_argnames=(
        "reduction_axes",
        "feature_axes",
        "groups",
        "rms",
        "use_fast_variance",
        "axis_name",
        "axis_index_groups",
        "out_dtype",
    ),
)
def sample_norm_mantissa(
    m: jax.Array,
    scale: Any,
    bias: Any,
    mask: Any,
    epsilon: Any,
    *,
    reduction_axes: tuple[int, ...],
    feature_axes: tuple[int, ...],
    groups: tuple[int, int] | None = None,
    rms: bool = False,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    out_dtype: Any,
) -> jax.Array:
    """Layer / RMS / group / instance normalization on bare arrays (jit-compiled).

    ``groups=(channel_axis, num_groups)`` first splits the channel axis into
    ``(num_groups, group_size)``; ``reduction_axes`` must then list the
    channel axis (reduced within each group) and may list others.
    ``rms=True`` divides by the root mean square instead of subtracting the
    mean and dividing by the standard deviation.
    """
    general = partial(
        _general_sample_norm,
        mask=mask,
        reduction_axes=reduction_axes,
        feature_axes=feature_axes,
        groups=groups,
        rms=rms,
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        out_dtype=out_dtype,
    )
    if (
        groups is not None
        and mask is None
        and axis_name is None
        and not rms
        and _channels_last_groups_fit(m, reduction_axes, groups)
    ):
        # channels-last GroupNorm on CPU: one fused pass (see _channels_last_group_norm); data with
        # a non-finite value, or large enough for a sum of squares to overflow, take the general
        # program, which keeps a NaN inside its own group; derivatives are always the general
        # program's (see _with_derivative_of)
        fused = partial(
            _channels_last_group_norm, others=reduction_axes[:-1], num_groups=groups[1], out_dtype=out_dtype
        )
        return lax.cond(
            _sums_of_squares_fit(lax.stop_gradient(m)),
            _with_derivative_of(fused, general),
            general,
            m,
            scale,
            bias,
            epsilon,
        )
    return general(m, scale, bias, epsilon)


def _general_sample_norm(
    m: jax.Array,
    scale: Any,
    bias: Any,
    epsilon: Any,
    *,
    mask: Any = None,
    reduction_axes: tuple[int, ...],
    feature_axes: tuple[int, ...],
    groups: tuple[int, int] | None = None,
    rms: bool = False,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    out_dtype: Any,
) -> jax.Array:
    """:func:`sample_norm_mantissa` for every layout (traced inside it)."""
    shape = m.shape
    grouped_fast = mask is not None or (use_fast_variance and not _explicitly_sharded(m, reduction_axes))
    if groups is not None and grouped_fast and not rms:
        channel, num_groups = groups
        if mask is None:
            mean, var = _grouped_moments(m, reduction_axes, channel, num_groups, axis_name, axis_index_groups)
        else:
            mean, var = _grouped_masked_moments(
                m, mask, reduction_axes, channel, num_groups, axis_name, axis_index_groups
            )
        others = tuple(a for a in reduction_axes if a != channel)
        return normalize_mantissa(m, mean, var, scale, bias, epsilon, others, (channel,), out_dtype)
    if (
        groups is None
        and mask is None
        and axis_name is None
        and not rms
        and _contiguous_slabs(m, reduction_axes, feature_axes)
        and not _explicitly_sharded(m, reduction_axes)  # a slice of a sharded axis is not implemented
    ):
        # Each slice reduced is a contiguous slab of memory (LayerNorm over the trailing axes,
        # InstanceNorm over time with the channels after it): the slab is still in cache when it is
        # read again, and XLA fuses the plain two-pass statistics and the output into one pass over
        # memory (LayerNorm 1.36x -> 1.03x flax.nnx on 2-core AVX2 EPYC; InstanceNorm 2.0x -> 1.0x
        # the byte floor). The static count needs no empty-slice guard (`_check_nonempty`), whose
        # select would keep the output out of that fusion. At least as accurate as one pass.
        mean, var = _slab_moments(m, reduction_axes)
        return normalize_mantissa(m, mean, var, scale, bias, epsilon, reduction_axes, feature_axes, out_dtype)
    if groups is not None:
        channel, num_groups = groups
        split = (*shape[:channel], num_groups, shape[channel] // num_groups, *shape[channel + 1 :])
        m = m.reshape(split)
        mask = None if mask is None else mask.reshape(split)
        others = {a + 1 if a > channel else a for a in reduction_axes if a != channel}
        reduction_axes = tuple(sorted(others | {channel + 1}))
        feature_axes = (channel, channel + 1)
    if rms:
        var = mean_square(m, reduction_axes, mask, axis_name=axis_name, axis_index_groups=axis_index_groups)
        mean = jnp.zeros_like(var)
    else:
        mean, var = moments(
            m,
            reduction_axes,
            mask,
            use_fast_variance=use_fast_variance,
            axis_name=axis_name,
            axis_index_groups=axis_index_groups,
        )
    y = normalize_mantissa(m, mean, var, scale, bias, epsilon, reduction_axes, feature_axes, out_dtype)
    return y.reshape(shape)


# Channels-last GroupNorm: XLA on CPU fuses the per-channel sums, their sum within each group taken
# as a product with a block matrix of ones, and the output into one loop over each sample (still in
# cache when it is read again): 62 -> 22 ms at (256, 1000, 64) with 8 groups, the input test
# included, where the same statistics through a reshape take four passes. The product adds
# 0 x (another group's sum), so a non-finite sum would reach every group of its sample: such data
# take the general program instead, and so does every derivative (a NaN cotangent of one group's
# statistics would cross the same product backwards).
_BLOCK_DOT_MAX_CHANNELS = 512


def _channels_last_groups_fit(m: jax.Array, reduction_axes: tuple[int, ...], groups: tuple[int, int]) -> bool:
    """Return True where :func:`_channels_last_group_norm` applies and is the faster program."""
    channel, num_groups = groups
    channels = m.shape[channel]
    others = reduction_axes[:-1]
    return (
        all(isinstance(d, int) for d in m.shape)  # not a symbolic shape (jax.export)
        and jax.default_backend() == "cpu"
        and m.dtype == jnp.float32
        and channel == m.ndim - 1
        and reduction_axes[-1] == channel
        and bool(others)
        and num_groups > 1
        and channels <= _BLOCK_DOT_MAX_CHANNELS
        # the block products cost no more than one multiply-add per element of the input
        and channels <= math.prod(m.shape[a] for a in others)
        and not _explicitly_sharded(m, reduction_axes)
    )


@jax.custom_batching.custom_vmap
def _sums_of_squares_fit(m: jax.Array) -> jax.Array:
    """Return whether every channel's sum of squares is at most ``max / (8 * channels)`` (one cheap pass).

    The channel axis is last; the sum runs over all the others. False for any NaN or infinity.
    Then no sum of the fused program can overflow: a group's squared deviations from its mean
    sum to at most its sum of squares, and each channel's to at most four times its own bound.
    Under ``vmap`` the answer covers the whole batch (a stricter test: the sums run over it too),
    so the ``lax.cond`` it drives stays a branch rather than becoming a select that computes
    both sides.
    """
    bound = jnp.finfo(m.dtype).max / (8 * m.shape[-1])
    return jnp.all(jnp.sum(m * m, axis=tuple(range(m.ndim - 1))) <= bound)


@_sums_of_squares_fit.def_vmap
def _sums_of_squares_fit_vmap(axis_size: int, in_batched: list[bool], m: jax.Array) -> tuple[jax.Array, bool]:
    del axis_size, in_batched
    return _sums_of_squares_fit(m), False


def _with_derivative_of(fast: Any, reference: Any) -> Any:
    """``fast``'s values with ``reference``'s derivatives (both take the same arguments).

    For the fused GroupNorm: its transpose would send a NaN or infinite cotangent of one group's
    statistics (a constant group with ``epsilon=0``) through the block product into every group.
    Under differentiation the reference's statistics are computed too; its output pass is not.
    """

    @jax.custom_jvp
    def f(*args: Any) -> Any:
        return fast(*args)

    @f.defjvp
    def f_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        _, out_tangent = jax.jvp(reference, primals, tangents)
        return fast(*primals), out_tangent

    return f


def _channels_last_group_norm(
    m: jax.Array,
    scale: Any,
    bias: Any,
    epsilon: Any,
    *,
    others: tuple[int, ...],
    num_groups: int,
    out_dtype: Any,
) -> jax.Array:
    """GroupNorm of finite float32 data whose channel axis is last, in one fused pass.

    Per channel, the sum of the deviations from the group's first element (a shift, as in
    :func:`moments`: a constant group has the exact mean and output 0); summed within each group by
    a product with the block matrix of ones; then the squared deviations from that mean, the same
    way (two passes' accuracy); then the output.
    """
    channels = m.shape[-1]
    size = channels // num_groups
    count = size * math.prod(m.shape[a] for a in others)
    group_of = lax.broadcasted_iota(jnp.int32, (channels,), 0) // size
    blocks = (group_of[:, None] == group_of[None, :]).astype(m.dtype)
    first = jnp.squeeze(_first_along(m, others), others)[..., ::size]
    shift = lax.stop_gradient(jnp.repeat(first, size, axis=-1))
    s1 = jnp.sum(m - jnp.expand_dims(shift, others), axis=others) @ blocks
    mean = shift + s1 / count
    s2 = jnp.sum(_abs2(m + (-jnp.expand_dims(mean, others))), axis=others) @ blocks
    return normalize_mantissa(m, mean, s2 / count, scale, bias, epsilon, others, (m.ndim - 1,), out_dtype)


def _contiguous_slabs(m: jax.Array, reduction_axes: tuple[int, ...], feature_axes: tuple[int, ...]) -> bool:
    """Return True when every axis from the first reduced one on is reduced or a feature axis."""
    if not reduction_axes:
        return False
    first = min(reduction_axes)
    return all(a in reduction_axes or a in feature_axes for a in range(first, m.ndim))


# the fewest rows from which XLA's CPU backend (jax 0.10) fuses a last-axis norm into one pass
_ROWS_FUSED_WHOLE = 4096


def _slab_moments(m: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Mean, then the mean squared deviation from it, over ``axes`` (no mask, none empty).

    Unless the slices are the trailing axes, the mean is the slice's first element plus the mean
    deviation from it: exact for a constant slice (its output is then exactly zero) and accurate far
    from zero, and XLA still fuses it (InstanceNorm). Over the trailing axes (LayerNorm's rows) the
    plain two-pass mean is kept, as before: there the first element of every row, a strided read
    inside the fused pass, cost LayerNorm ~12% (1.14x against 1.01x a jnp two-pass, here).
    """
    m = m.astype(stats_dtype(m.dtype))
    count = math.prod(m.shape[a] for a in axes)
    if axes == tuple(range(m.ndim - len(axes), m.ndim)):
        mean = jnp.sum(m, axis=axes) / count
    else:
        shift = lax.stop_gradient(_first_along(m, axes))
        mean = jnp.squeeze(shift, axes) + jnp.sum(m - shift, axis=axes) / count
    mean_b = jnp.expand_dims(mean, axes)
    # Over the last axis alone, from 4096 rows on, XLA on CPU fuses everything into one pass over
    # each row, and the output's `m - mean` is shared (one full-size operation less: LayerNorm 19.9
    # -> 18.9 ms at (256, 1000, 64) here). Otherwise `m + (-mean)`, bit-identical, keeps the two
    # apart so that XLA fuses each into its own consumer rather than writing one full-size
    # difference (3.06x the byte floor against 2.07x at (32, 100, 64); 262 against 205 us).
    rows = math.prod(m.shape[:-1])
    shared = axes == (m.ndim - 1,) and rows >= _ROWS_FUSED_WHOLE
    centred = m - mean_b if shared else m + (-mean_b)
    var = jnp.sum(_abs2(centred), axis=axes) / count
    return mean, var


def _grouped_moments(
    m: jax.Array,
    reduction_axes: tuple[int, ...],
    channel: int,
    num_groups: int,
    axis_name: Any = None,
    axis_index_groups: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Each channel's group mean and variance (the reduction axes other than ``channel`` dropped).

    The shifted one-pass sums are taken per channel first (a reduction over the
    other axes, in the input's own layout), then added within each group on the
    small per-channel arrays, so XLA never reduces a reshaped, strided view of
    the full-size input. The shift is the group's first element, as in
    :func:`moments`; the sums are the same, only their order differs. Across
    ``axis_name`` every device's (count, mean, M2) per group are gathered in
    one collective and combined with :func:`merge_along`, as in :func:`moments`.
    """
    cdt = stats_dtype(m.dtype)
    m = m.astype(cdt)
    size = m.shape[channel] // num_groups
    others = tuple(a for a in reduction_axes if a != channel)
    count = size * math.prod(m.shape[a] for a in others)
    # the group's first element: index 0 along the other reduction axes, the group's first channel
    first = lax.slice_in_dim(_first_along(m, others), 0, m.shape[channel], size, axis=channel)
    wide = (*first.shape[: channel + 1], size, *first.shape[channel + 1 :])
    shift = jnp.broadcast_to(jnp.expand_dims(first, channel + 1), wide).reshape(
        (*first.shape[:channel], m.shape[channel], *first.shape[channel + 1 :])
    )
    shift = lax.stop_gradient(shift)
    shift = _own_buffer(shift)
    s1 = jnp.sum(m + (-shift), axis=others)
    s2 = jnp.sum(_abs2(m - shift), axis=others)
    c = channel - sum(1 for a in others if a < channel)  # the channel axis once the others are dropped
    channel_shape = s1.shape
    split = (*channel_shape[:c], num_groups, size, *channel_shape[c + 1 :])
    s1 = jnp.sum(s1.reshape(split), axis=c + 1, keepdims=True)
    s2 = jnp.sum(s2.reshape(split), axis=c + 1, keepdims=True)
    mean = jnp.squeeze(shift, others).reshape(split)[(slice(None),) * (c + 1) + (slice(0, 1),)] + s1 / count
    m2 = jnp.maximum(s2 - _abs2(s1) / count, 0)
    if axis_name is None:
        var = m2 / count
    else:
        n = jnp.full(mean.shape, count, cdt)
        parts = gather(jnp.stack([n, mean, m2.astype(cdt)]), axis_name, axis_index_groups)
        n, mean, m2 = merge_along(parts[:, 0].real, parts[:, 1], parts[:, 2].real)
        var = m2 / n

    def per_channel(v: jax.Array) -> jax.Array:
        return jnp.broadcast_to(v, split).reshape(channel_shape)

    return per_channel(mean), per_channel(var)


def _grouped_masked_moments(
    m: jax.Array,
    mask: jax.Array,
    reduction_axes: tuple[int, ...],
    channel: int,
    num_groups: int,
    axis_name: Any = None,
    axis_index_groups: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """:func:`_grouped_moments` over the elements ``mask`` selects: two passes, per channel first.

    The counted elements' sum per channel (in the input's layout), added within
    each group, gives the group mean; then the squared deviations from it, per
    channel, then per group. Masked-out elements (NaN included) reach no sum.
    Across ``axis_name`` every device's (count, mean, M2) per group are merged
    with :func:`merge_along`, which weights devices by their counts exactly. A
    group with nothing counted gets NaN statistics, as in :func:`moments`.
    """
    cdt = stats_dtype(m.dtype)
    rdt = jnp.finfo(cdt).dtype
    m = m.astype(cdt)
    zero = jnp.zeros((), cdt)
    size = m.shape[channel] // num_groups
    others = tuple(a for a in reduction_axes if a != channel)
    c = channel - sum(1 for a in others if a < channel)
    counts = jnp.sum(mask, axis=others, dtype=rdt)
    channel_shape = counts.shape
    split = (*channel_shape[:c], num_groups, size, *channel_shape[c + 1 :])

    def per_group(v: jax.Array) -> jax.Array:
        return jnp.sum(v.reshape(split), axis=c + 1, keepdims=True)

    def per_channel(v: jax.Array) -> jax.Array:
        return jnp.broadcast_to(v, split).reshape(channel_shape)

    count = per_group(counts)
    safe = jnp.maximum(count, 1).astype(cdt)
    # the plain mean of the counted elements is a shift; the mean deviation from it corrects it, so
    # a constant group's mean is its value exactly (and its output exactly zero)
    shift = lax.stop_gradient(per_group(jnp.sum(jnp.where(mask, m, zero), axis=others)) / safe)
    centred = jnp.where(mask, m - jnp.expand_dims(per_channel(shift), others), zero)
    s1 = per_group(jnp.sum(centred, axis=others))
    mean = shift + s1 / safe
    m2 = jnp.maximum(per_group(jnp.sum(_abs2(centred), axis=others)) - _abs2(s1) / safe.real, 0)
    if axis_name is not None:
        parts = gather(jnp.stack([count.astype(cdt), mean, m2.astype(cdt)]), axis_name, axis_index_groups)
        count, mean, m2 = merge_along(parts[:, 0].real, parts[:, 1], parts[:, 2].real)
    mean, var = _finish(mean, m2, count)  # a group with nothing counted: NaN, as in moments
    return per_channel(mean), per_channel(var)


def _check_affine_shape(scale: Any, bias: Any, fshape: tuple[int, ...], who: str) -> None:
    for name, v in (("scale", scale), ("bias", bias)):
        if v is not None and v.ndim != 0 and math.prod(v.shape) != math.prod(fshape):
            raise ValueError(
                f"{who}: {name} must be a scalar or have the feature shape {fshape}, got {tuple(v.shape)}"
            )


def _sample_norm(
    who: str,
    m: jax.Array,
    unit: Any,
    scale: Any,
    bias: Any,
    epsilon: Any,
    mask: Any,
    raxes: tuple[int, ...],
    faxes: tuple[int, ...],
    *,
    groups: tuple[int, int] | None = None,
    rms: bool = False,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> Any:
    """Check the arguments, strip units, run the core and put the output unit back."""
    _check_nonempty(m.shape, raxes, who)
    mask = check_mask(mask, m.shape, who)
    eps = epsilon_mantissa(epsilon, unit, who)
    scale_m, bias_m, out_unit = _affine_mantissas(scale, bias, who)
    _check_affine_shape(scale_m, bias_m, tuple(m.shape[a] for a in faxes), who)
    y = sample_norm_mantissa(
        m,
        scale_m,
        bias_m,
        mask,
        eps,
        reduction_axes=raxes,
        feature_axes=faxes,
        groups=groups,
        rms=rms,
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=_hashable_groups(axis_index_groups),
        out_dtype=output_dtype(m.dtype, dtype),
    )
    return _units.restore(y, out_unit)


def _split_checked(x: Any, who: str) -> tuple[jax.Array, Any]:
    m, unit = _units.split(x)
    check_numeric(m, who)
    return m, unit


def layer_norm(
    x: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    epsilon: Any = 1e-6,
    mask: Any = None,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> Any:
    """Layer normalization: standardize ``x`` over ``reduction_axes``.

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias``, with ``mean`` and
    the biased ``var`` taken over ``reduction_axes`` separately for every
    position of the other axes, as in ``flax.nnx.LayerNorm``.

    Parameters
    ----------
    x : Quantity or array_like
        The data, in any unit ``U`` (or none). Integers are promoted to
        float32; complex input keeps its imaginary part.
    scale, bias : Quantity or array_like, optional
        Scalars, or arrays with as many elements as ``x``'s ``feature_axes``.
        ``scale`` sets the output unit; ``bias`` must be convertible to it
        (dimensionless when there is no scale).
    reduction_axes : int or sequence of int, default -1
        Axes of ``x`` the statistics are taken over. Negative axes count from
        the end, non-negative ones from the start (as in flax).
    feature_axes : int or sequence of int, default -1
        Axes of ``x`` that ``scale`` and ``bias`` run along.
    epsilon : float or Quantity, default 1e-6
        Added to the variance. A float is read in ``U**2``; a Quantity must
        have that dimension and is converted.
    mask : array_like of bool, optional
        Which elements count towards the statistics (broadcast to ``x``'s
        shape). Every element is normalized.
    use_fast_variance : bool, default True
        One pass around a per-slice shift (accurate far from zero), or two.
        When each slice reduced is contiguous in memory (the reduction axes
        are trailing, or followed only by feature axes; no mask, no
        ``axis_name``) two passes are used either way: the mean, then the
        squared deviations from it. The slice is still in cache for its
        second read, so that costs no extra pass over memory. Over the
        trailing axes the mean is the plain one; otherwise it is the
        slice's first element plus the mean deviation from it (exact for a
        constant slice).
    axis_name : str or tuple of str, optional
        Combine the statistics across this mapped axis (``vmap``, ``pmap``,
        ``shard_map``), weighting each device by its number of valid elements.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Output dtype (default: ``x``'s floating dtype; bf16 in, bf16 out).
        The statistics are computed in float32 or wider either way.

    Returns
    -------
    Quantity or array
        Shaped like ``x``; a plain array unless ``scale`` has a unit.

    Raises
    ------
    ValueError
        When an axis is out of range or empty, the mask does not broadcast, or
        ``scale``/``bias`` do not have the feature size.
    TypeError
        When ``x`` is not numeric or ``mask`` is a Quantity.
    brainunit.UnitMismatchError
        When ``epsilon`` is not in ``U**2`` or ``bias`` not in ``scale``'s dimension.

    See Also
    --------
    rms_norm, group_norm, instance_norm, unitnorm.LayerNorm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; ``mean`` has
    unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets the output unit
    and ``bias`` has the same dimension. A float epsilon is read in
    unit(x)**2, so the same data in V and in mV agree only with a Quantity
    epsilon.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.array([[1., 2., 3.], [10., 20., 30.]]) * u.mV
    >>> [[round(v, 3) for v in row] for row in un.functional.layer_norm(x, epsilon=0.).tolist()]
    [[-1.225, 0.0, 1.225], [-1.225, 0.0, 1.225]]
    >>> y = un.functional.layer_norm(x, scale=2. * u.mV, bias=-65. * u.mV, epsilon=1e-9 * u.volt**2)
    >>> print(y.unit, [round(v, 2) for v in y.mantissa[0].tolist()])
    mV [-67.45, -65.0, -62.55]
    """
    m, unit = _split_checked(x, "layer_norm")
    return _sample_norm(
        "layer_norm",
        m,
        unit,
        scale,
        bias,
        epsilon,
        mask,
        canonical_axes(reduction_axes, m.ndim, "reduction_axes"),
        canonical_axes(feature_axes, m.ndim, "feature_axes"),
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        dtype=dtype,
    )


def rms_norm(
    x: Any,
    scale: Any = None,
    *,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    epsilon: Any = 1e-6,
    mask: Any = None,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> Any:
    """RMS normalization: divide ``x`` by its root mean square over ``reduction_axes``.

    ``y = x / sqrt(mean(|x|**2) + epsilon) * scale``; nothing is subtracted
    (Zhang & Sennrich 2019; ``flax.nnx.RMSNorm``).

    Parameters
    ----------
    x : Quantity or array_like
        The data, in any unit ``U`` (or none). Complex input keeps its
        imaginary part (the mean square is of ``|x|``).
    scale : Quantity or array_like, optional
        A scalar or an array with as many elements as ``x``'s
        ``feature_axes``; its unit is the output unit.
    reduction_axes : int or sequence of int, default -1
        Axes of ``x`` the mean square is taken over (negative ones count from
        the end, as in flax).
    feature_axes : int or sequence of int, default -1
        Axes of ``x`` that ``scale`` runs along.
    epsilon : float or Quantity, default 1e-6
        Added to the mean square. A float is read in ``U**2``; a Quantity must
        have that dimension and is converted.
    mask : array_like of bool, optional
        Which elements count towards the mean square. Every element is scaled.
    axis_name : str or tuple of str, optional
        Combine the mean square across this mapped axis with one ``psum`` of
        the sums of squares and counts.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Output dtype (default: ``x``'s floating dtype).

    Returns
    -------
    Quantity or array
        Shaped like ``x``; a plain array unless ``scale`` has a unit.

    Raises
    ------
    ValueError
        For an axis out of range or empty, a mask that does not broadcast, or
        a ``scale`` without the feature size.
    brainunit.UnitMismatchError
        When ``epsilon`` is not in ``U**2``.

    See Also
    --------
    layer_norm, unitnorm.RMSNorm

    Notes
    -----
    ``x / sqrt(mean(|x|**2) + epsilon)`` is dimensionless: the mean square
    and ``epsilon`` are in unit(x)**2. ``scale`` sets the output unit. Unlike
    :func:`layer_norm` the result changes with an offset ``x + b``; it is
    invariant only under ``a * x`` (``a > 0``, with ``epsilon`` scaled by ``a**2``).

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.array([[3., 4.]]) * u.nA
    >>> [round(v, 4) for v in un.functional.rms_norm(x, epsilon=0.)[0].tolist()]
    [0.8485, 1.1314]
    >>> print(un.functional.rms_norm(x, scale=jnp.array([1., 2.]) * u.mV).unit)
    mV
    """
    m, unit = _split_checked(x, "rms_norm")
    return _sample_norm(
        "rms_norm",
        m,
        unit,
        scale,
        None,
        epsilon,
        mask,
        canonical_axes(reduction_axes, m.ndim, "reduction_axes"),
        canonical_axes(feature_axes, m.ndim, "feature_axes"),
        rms=True,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        dtype=dtype,
    )


def group_counts(channels: int, num_groups: Any, group_size: Any, who: str = "group_norm") -> tuple[int, int]:
    """Check a group specification and return ``(num_groups, group_size)``.

    Exactly one of ``num_groups`` and ``group_size`` must be given, as a
    positive int dividing ``channels``; otherwise a ``ValueError`` names the
    numbers (a ``TypeError`` for a non-int).

    Examples
    --------
    >>> import unitnorm as un
    >>> un.functional.group_counts(12, None, 4)
    (3, 4)
    """
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            f"{who}: give exactly one of num_groups and group_size; got num_groups={num_groups}, "
            f"group_size={group_size} (pass num_groups=None to use group_size)"
        )
    name, value = ("num_groups", num_groups) if group_size is None else ("group_size", group_size)
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{who}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = value.__index__()
    if value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {name}={value}")
    if channels % value:
        raise ValueError(
            f"{who}: the channel count must divide by {name}; got channels={channels}, {name}={value}"
        )
    return (value, channels // value) if name == "num_groups" else (channels // value, value)


def group_norm(
    x: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    num_groups: int | None = 32,
    group_size: int | None = None,
    feature_axis: int = -1,
    reduction_axes: Axes | None = None,
    epsilon: Any = 1e-6,
    mask: Any = None,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> Any:
    """Group normalization: standardize groups of channels (Wu & He 2018).

    The channel axis is split into ``num_groups`` groups of ``group_size``
    consecutive channels; each group is standardized with its own mean and
    variance over the group's channels and the other ``reduction_axes``.
    ``scale`` and ``bias`` are per channel.

    Parameters
    ----------
    x : Quantity or array_like
        The data, in any unit ``U``; any number of axes, e.g.
        ``(batch, length, channels)``. Complex input keeps its imaginary part.
    scale, bias : Quantity or array_like, optional
        Scalars or arrays with one element per channel. ``scale`` sets the
        output unit; ``bias`` must be convertible to it.
    num_groups : int or None, default 32
        The number of groups. Give exactly one of ``num_groups`` and
        ``group_size`` (pass ``num_groups=None`` to use ``group_size``).
    group_size : int, optional
        The number of channels per group.
    feature_axis : int, default -1
        The channel axis of ``x``.
    reduction_axes : int or sequence of int, optional
        Axes of ``x`` the statistics are taken over; must include
        ``feature_axis`` (meaning "within the group"). Default: every axis but
        the first (the batch axis), plus the channel axis.
    epsilon : float or Quantity, default 1e-6
        Added to the variance; a float is read in ``U**2``.
    mask : array_like of bool, optional
        Which elements count towards the statistics.
    use_fast_variance : bool, default True
        One pass around a per-slice shift, or two passes.
    axis_name : str or tuple of str, optional
        Combine the statistics across this mapped axis.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Output dtype (default: ``x``'s floating dtype).

    Returns
    -------
    Quantity or array
        Shaped like ``x``; a plain array unless ``scale`` has a unit.

    Raises
    ------
    ValueError
        When both or neither of ``num_groups``/``group_size`` are given, the
        channel count does not divide by them, ``reduction_axes`` omits the
        channel axis, or shapes do not fit.
    brainunit.UnitMismatchError
        When ``epsilon`` or ``bias`` have the wrong dimension.

    See Also
    --------
    layer_norm, instance_norm, unitnorm.GroupNorm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; each group's
    ``mean`` has unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets
    the output unit. ``num_groups=1`` is layer normalization over the
    reduction axes, ``num_groups=channels`` instance normalization.

    On CPU, float32 input with the channel axis last (the default layout)
    and no ``mask`` or ``axis_name`` runs one fused pass: per-channel sums
    of the deviations from each group's first element, added within each
    group, then the squared deviations from the mean, then the output (two
    passes' accuracy; ``use_fast_variance`` does not change it). A test of
    the whole input chooses it; input holding NaN or infinity, or values
    large enough (about 1e17) for a sum of squares to overflow, takes the
    general program, which keeps them inside their own group. Both give the
    same values up to float32 rounding; derivatives are always the general
    program's; under ``vmap`` one example's NaN sends the whole batch down
    the general program.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.array([[1., 3., 10., 30.]]) * u.uvolt
    >>> un.functional.group_norm(x, num_groups=2, epsilon=0.).round(3).tolist()
    [[-1.0, 1.0, -1.0, 1.0]]
    """
    who = "group_norm"
    m, unit = _split_checked(x, who)
    channel = canonical_axes(feature_axis, m.ndim, "feature_axis")
    if len(channel) != 1:
        raise ValueError(f"{who}: feature_axis must be one channel axis, got feature_axis={feature_axis}")
    (channel,) = channel
    if reduction_axes is None:
        raxes = tuple(sorted(set(range(1, m.ndim)) | {channel}))
    else:
        raxes = canonical_axes(reduction_axes, m.ndim, "reduction_axes")
        if channel not in raxes:
            raise ValueError(
                f"{who}: reduction_axes must include the channel axis {channel} (statistics are "
                f"taken within each group of channels); got reduction_axes={reduction_axes}"
            )
    groups = group_counts(m.shape[channel], num_groups, group_size, who)
    return _sample_norm(
        who,
        m,
        unit,
        scale,
        bias,
        epsilon,
        mask,
        raxes,
        (channel,),
        groups=(channel, groups[0]),
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        dtype=dtype,
    )


def instance_norm(
    x: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    feature_axes: Axes = -1,
    epsilon: Any = 1e-6,
    mask: Any = None,
    use_fast_variance: bool = True,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> Any:
    """Instance normalization: per sample and per channel, over the other axes.

    The first axis of ``x`` is the batch axis; the statistics are taken over
    every axis that is neither the batch axis nor a feature axis (Ulyanov et
    al. 2016; ``flax.nnx.InstanceNorm``).

    Parameters
    ----------
    x : Quantity or array_like
        The data, ``(batch, *spatial, channels)``, in any unit ``U``.
    scale, bias : Quantity or array_like, optional
        Scalars or arrays with as many elements as the feature axes.
        ``scale`` sets the output unit; ``bias`` must be convertible to it.
    feature_axes : int or sequence of int, default -1
        The channel axes; they may not include the batch axis 0.
    epsilon : float or Quantity, default 1e-6
        Added to the variance; a float is read in ``U**2``.
    mask : array_like of bool, optional
        Which elements count towards the statistics.
    use_fast_variance : bool, default True
        One pass around a per-slice shift, or two passes. Without a mask and
        ``axis_name`` every sample's slice is contiguous in memory and two
        passes are used either way (see :func:`layer_norm`).
    axis_name : str or tuple of str, optional
        Combine the statistics across this mapped axis.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these groups of devices.
    dtype : dtype, optional
        Output dtype (default: ``x``'s floating dtype).

    Returns
    -------
    Quantity or array
        Shaped like ``x``; a plain array unless ``scale`` has a unit.

    Raises
    ------
    ValueError
        When ``feature_axes`` includes the batch axis or shapes do not fit.
    brainunit.UnitMismatchError
        When ``epsilon`` or ``bias`` have the wrong dimension.

    See Also
    --------
    layer_norm, group_norm, unitnorm.InstanceNorm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; ``mean`` has
    unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets the output unit
    and ``bias`` has the same dimension.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.array([[[1., 10.], [3., 30.]]]) * u.nS   # (batch, length, channels)
    >>> un.functional.instance_norm(x, epsilon=0.).round(3).tolist()
    [[[-1.0, -1.0], [1.0, 1.0]]]
    """
    who = "instance_norm"
    m, unit = _split_checked(x, who)
    faxes = canonical_axes(feature_axes, m.ndim, "feature_axes")
    if 0 in faxes:
        raise ValueError(
            f"{who}: feature_axes must not include axis 0, the batch axis; got feature_axes={feature_axes}"
        )
    raxes = tuple(a for a in range(1, m.ndim) if a not in faxes)
    return _sample_norm(
        who,
        m,
        unit,
        scale,
        bias,
        epsilon,
        mask,
        raxes,
        faxes,
        use_fast_variance=use_fast_variance,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        dtype=dtype,
    )


@partial(jax.jit, static_argnames=("reduction_axes", "out_axis", "out_dtype"))
def _weight_standardization_mantissa(
    m: jax.Array, eps: Any, gain: Any, *, reduction_axes: tuple[int, ...], out_axis: int, out_dtype: Any
) -> jax.Array:
    mean, var = moments(m, reduction_axes, use_fast_variance=False)
    fan_in = math.prod(m.shape[a] for a in reduction_axes)
    denom = jnp.maximum(var * fan_in, _cast(eps, var.dtype))
    return normalize_mantissa(m, mean, denom, gain, None, 0.0, reduction_axes, (out_axis,), out_dtype)


def weight_standardization(w: Any, eps: Any = 1e-4, gain: Any = None, out_axis: int = -1) -> Any:
    """Scaled weight standardization (Qiao et al. 2019), with units.

    Each output unit's weights (every slice along ``out_axis``) are centred
    and divided by ``sqrt(max(fan_in * var, eps))``, then multiplied by
    ``gain``: ``w_hat = (w - mean) / sqrt(max(fan_in * var, eps)) * gain``,
    where ``mean`` and the biased ``var`` are taken over all other axes and
    ``fan_in`` is their total size (brainstate's formula).

    Parameters
    ----------
    w : Quantity or array_like
        The weight, in any unit ``W``, e.g. ``(in_features, out_features)``.
    eps : float or Quantity, default 1e-4
        Lower bound of ``fan_in * var``. A float is read in ``W**2``; a
        Quantity must have that dimension and is converted.
    gain : Quantity or array_like, optional
        A scalar, or one value per output unit (shape
        ``(w.shape[out_axis],)`` or that size with singleton axes). Its unit
        is the unit of the result.
    out_axis : int, default -1
        The output axis of ``w``.

    Returns
    -------
    Quantity or array
        Shaped like ``w``, with zero mean over the reduced axes; a plain
        array unless ``gain`` has a unit.

    Raises
    ------
    ValueError
        When ``w`` is a scalar, ``out_axis`` is out of range, or ``gain`` has
        another size.
    TypeError
        When ``w`` is not numeric.
    brainunit.UnitMismatchError
        When ``eps`` is not in ``W**2``.

    Notes
    -----
    ``(w - mean) / sqrt(max(fan_in * var, eps))`` is dimensionless: ``mean``
    is in ``W``, ``var`` and ``eps`` in ``W**2``; the result takes ``gain``'s
    unit. brainstate 0.5's unit branch builds ``1 / unit ** 0.5`` (a Quantity,
    not a unit) and fails for a weight with a unit; here the unit is stripped
    first.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> w = jnp.array([[1., 2.], [3., 6.]]) * u.nS
    >>> v = un.weight_standardization(w, eps=1e-8 * u.nS**2, gain=jnp.ones(2) * u.mV)
    >>> print(v.unit, [[round(c, 4) for c in row] for row in v.mantissa.tolist()])
    mV [[-0.7071, -0.7071], [0.7071, 0.7071]]
    """
    who = "weight_standardization"
    m, unit = _split_checked(w, who)
    if m.ndim == 0:
        raise ValueError(f"{who}: w must have at least one axis, got a scalar")
    if isinstance(out_axis, bool) or not hasattr(out_axis, "__index__"):
        raise TypeError(f"{who}: out_axis must be an int, got {type(out_axis).__name__} {out_axis!r}")
    (out,) = canonical_axes(out_axis.__index__(), m.ndim, "out_axis")
    raxes = tuple(a for a in range(m.ndim) if a != out)
    eps_m = epsilon_mantissa(eps, unit, who)
    gain_m, out_unit = (None, _units.UNITLESS) if gain is None else _units.split(gain)
    if gain_m is not None and (gain_m.size not in (1, m.shape[out]) or sum(d != 1 for d in gain_m.shape) > 1):
        raise ValueError(
            f"{who}: gain must be a scalar or have {m.shape[out]} elements (w.shape[out_axis]), "
            f"got shape {tuple(gain_m.shape)}"
        )
    if gain_m is not None and gain_m.size == 1:
        gain_m = gain_m.reshape(())
    y = _weight_standardization_mantissa(
        m, eps_m, gain_m, reduction_axes=raxes, out_axis=out, out_dtype=output_dtype(m.dtype)
    )
    return _units.restore(y, out_unit)
