"""BatchNorm0d/1d/2d/3d: batch normalization that keeps physical units."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import brainunit as u
import jax
import jax.numpy as jnp
from jax import lax

from unitnorm import _units, functional, init
from unitnorm._moments import merge_along
from unitnorm.nn._base import Module
from unitnorm.nn._freeze import Freezable
from unitnorm.state import BatchState, NormalizationParamState, State

__all__ = ["BatchNorm0d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


def _size(in_size: Any, who: str) -> tuple[int, ...]:
    seq = (in_size,) if isinstance(in_size, (int, jnp.integer)) else in_size
    try:
        if isinstance(seq, (str, bytes)) or not all(isinstance(s, (int, jnp.integer)) for s in seq):
            raise TypeError
        out = tuple(int(s) for s in seq)
    except TypeError:
        raise TypeError(f"{who}: in_size must be an int or a sequence of ints, got {in_size!r}") from None
    if any(s <= 0 for s in out) or any(isinstance(s, bool) for s in seq):
        raise ValueError(f"{who}: in_size must hold positive ints, got {in_size!r}")
    return out


def check_epsilon(epsilon: Any, who: str) -> tuple[float, Any]:
    """Split a layer's epsilon into a non-negative float mantissa and a unit (or None)."""
    if _units.is_quantity(epsilon):
        mantissa, unit = _units.split(epsilon)
        if mantissa.ndim != 0:
            raise ValueError(f"{who}: epsilon must be a scalar, got shape {tuple(mantissa.shape)}")
        value = float(mantissa)
    else:  # a Python or NumPy/jax scalar
        functional.check_scalar(epsilon, "epsilon", who, "a float or a Quantity", upper=math.inf)
        value, unit = float(epsilon), None
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{who}: epsilon must be finite and >= 0, got {epsilon}")
    return value, unit


def check_in_unit(in_unit: Any, who: str) -> Any:
    """Accept a brainunit Unit (or None) as a layer's reference unit."""
    if in_unit is None or isinstance(in_unit, u.Unit):
        return in_unit
    raise TypeError(
        f"{who}: in_unit must be a brainunit Unit such as u.mV, got {type(in_unit).__name__} {in_unit!r}"
    )


def check_virtual_batch_size(size: Any, who: str) -> int | None:
    """Accept ``None`` or an int >= 2 as a ghost-batch size."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, jnp.integer)):
        raise TypeError(
            f"{who}: virtual_batch_size must be an int >= 2 or None, got {type(size).__name__} {size!r}"
        )
    if int(size) < 2:
        raise ValueError(f"{who}: virtual_batch_size must be >= 2 (statistics need 2 values), got {size}")
    return int(size)


def ghost_parts(batch: int, size: int, who: str) -> tuple[tuple[int, int], ...]:
    """Split a batch into ``(number, size)`` groups of virtual batches: full ones, then the leftover."""
    full, rest = divmod(batch, size)
    if rest == 1:
        raise ValueError(
            f"{who}: a batch of {batch} leaves 1 sample after virtual batches of {size}; statistics need "
            f"2 or more: use a batch size that leaves 0 or >= 2 (e.g. {batch - 1} or {batch + 1})"
        )
    return tuple(p for p in ((full, size), (1, rest)) if p[0] and p[1])


@functools.partial(
    jax.jit,
    static_argnames=(
        "raxes",
        "faxes",
        "fast",
        "axis_name",
        "groups",
        "out_dtype",
        "ghosts",
        "renorm",
        "has_running",
    ),  # fmt: skip
)
def train_step(
    m: Any,
    rm: Any,
    rv: Any,
    scale: Any,
    bias: Any,
    mask: Any,
    momentum: Any,
    eps: Any,
    r_max: Any,
    d_max: Any,
    *,
    raxes: tuple[int, ...],
    faxes: tuple[int, ...],
    fast: bool,
    axis_name: Any,
    groups: Any,
    out_dtype: Any,
    ghosts: tuple[tuple[int, int], ...] | None,
    renorm: bool,
    has_running: bool,
) -> tuple[Any, Any, Any, Any]:
    """Run a training step with ghost batches and/or batch renormalization (jit-compiled per configuration).

    Without ghost batches the whole batch is one part. Each part (a stack of
    ``number`` virtual batches of ``size`` samples along axis 0) is normalized
    with its own statistics; their moments are merged (``_moments.merge``) into
    the batch's for the running statistics. Batch renormalization (Ioffe 2017)
    multiplies the normalized part by ``r = clip(sigma_B / sigma, 1/r_max,
    r_max)`` and adds ``d = clip((mu_B - mu) / sigma, -d_max, d_max)``, with
    ``sigma = sqrt(running_var + eps)``; r and d are constants to the gradient.
    Returns ``(y, running_mean, running_var, count)`` like
    :func:`unitnorm.functional.batch_norm_mantissa` (``count`` only under a mask).
    """
    fshape = tuple(m.shape[a] for a in faxes)
    parts = []
    if ghosts is None:
        parts.append((m, mask, raxes, faxes, scale, bias, rm, rv))
    else:
        start = 0
        # axis 0 splits into (number, size): statistics per virtual batch, over its samples
        r1 = tuple(sorted({1, *(a + 1 for a in raxes if a != 0)}))
        f1 = (0, *(a + 1 for a in faxes))
        for number, size in ghosts:
            stop = start + number * size
            shape = (number, size, *m.shape[1:])
            part = m[start:stop].reshape(shape)
            pmask = None if mask is None else mask[start:stop].reshape(shape)
            gshape = (number, *fshape)

            def stack(v: Any, gshape: Any = gshape) -> Any:
                return None if v is None else jnp.broadcast_to(v, gshape)

            parts.append((part, pmask, r1, f1, stack(scale), stack(bias), stack(rm), stack(rv)))
            start = stop
    ys, counts, means, m2s = [], [], [], []
    for part, pmask, r, f, sc, bi, prm, prv in parts:
        if renorm:
            mb, vb = functional.moments(
                part, r, pmask, use_fast_variance=fast, axis_name=axis_name, axis_index_groups=groups
            )
            mb, vb = lax.stop_gradient(mb), lax.stop_gradient(vb)
            r_lim, d_lim = jnp.asarray(r_max, mb.dtype), jnp.asarray(d_max, mb.dtype)
            # the running statistics may be stored narrower than the batch's (float32 beside float64
            # input): cast explicitly, so strict dtype promotion holds
            sigma = jnp.sqrt(prv.astype(mb.dtype) + eps)
            rr = jnp.clip(jnp.sqrt(vb + eps) / sigma, 1 / r_lim, r_lim).astype(mb.dtype)
            dd = jnp.clip((mb - prm.astype(mb.dtype)) / sigma, -d_lim, d_lim).astype(mb.dtype)
            if sc is None:
                sc, bi = rr, dd
            else:
                sc_s, bi_s = sc.astype(mb.dtype), bi.astype(mb.dtype)  # explicit: strict promotion
                sc, bi = (rr * sc_s).astype(sc.dtype), (dd * sc_s + bi_s).astype(bi.dtype)
        y, mean, var = functional.batch_normalize_mantissa(
            part,
            sc,
            bi,
            pmask,
            eps,
            reduction_axes=r,
            feature_axes=f,
            use_fast_variance=fast,
            axis_name=axis_name,
            axis_index_groups=groups,
            out_dtype=out_dtype,
        )
        ys.append(y.reshape((-1, *m.shape[1:])) if ghosts is not None else y)
        if pmask is None:
            count = jnp.full(mean.shape, math.prod(part.shape[a] for a in r), mean.dtype)
            if axis_name is not None:
                count = functional.sum_across(count, axis_name, groups)
        else:
            count = jnp.sum(pmask, axis=r, dtype=mean.dtype)
            if axis_name is not None:
                count = functional.sum_across(count, axis_name, groups)
        mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
        m2 = jnp.where(count > 0, var * count, 0).astype(mean.dtype)
        counts.append(count.reshape((-1, *fshape)))
        means.append(mean.reshape((-1, *fshape)))
        m2s.append(m2.reshape((-1, *fshape)))
    y = ys[0] if len(ys) == 1 else jnp.concatenate(ys)
    count, mean, m2 = merge_along(*(jnp.concatenate(v) for v in (counts, means, m2s)))
    masked_count = None if mask is None else count
    if not has_running:
        return y, rm, rv, masked_count
    var = jnp.where(count > 0, m2 / jnp.maximum(count, 1), jnp.nan).astype(mean.dtype)
    mean = jnp.where(count > 0, mean, jnp.nan).astype(mean.dtype)
    momentum = jnp.asarray(momentum, rm.dtype)
    new_mean = momentum * rm + (1 - momentum) * mean.astype(rm.dtype)
    new_var = momentum * rv + (1 - momentum) * var.astype(rv.dtype)
    return y, new_mean, new_var, masked_count


def make_affine(spec: Any, shape: tuple[int, ...], dtype: Any, who: str, what: str) -> Any:
    """Resolve an affine initializer, naming the layer in errors."""
    try:
        return init.resolve(spec, shape, dtype)
    except ValueError as err:
        raise ValueError(f"{who}: {what} {err}") from None
    except TypeError as err:
        raise TypeError(f"{who}: {what} {err}") from None


def check_affine_units(scale: Any, bias: Any, who: str) -> None:
    """Bias must be convertible to scale's unit (dimensionless without a scale)."""
    out = _units.unit_of(scale) if scale is not None else _units.UNITLESS
    if bias is not None and not _units.same_dim(_units.unit_of(bias), out):
        holder = f"scale's unit, {_units.describe(out)}" if scale is not None else "dimensionless (no scale)"
        raise _units.UnitError(
            f"{who}: bias must be {holder}, got {_units.describe(_units.unit_of(bias))}; "
            "give scale and bias initializers of one dimension"
        )


# ----------------------------------------------------------------------------
# the eager fast path: the common call (a jax array or a Quantity already in the
# reference unit, no mask, nan_policy 'propagate', States in their usual form)
# skips the general path's conversions; what it would have to check is cached per
# configuration, and anything unusual falls back to the general path, which gives
# the same result or raises.

_SLOW = object()
_PLANS: dict[tuple[Any, ...], Any] = {}


@functools.lru_cache(maxsize=256)
def _restore_kind(unit: Any) -> str:
    """Say how ``_units.restore`` attaches ``unit``: 'plain', 'quantity' or 'scaled'."""
    if unit.is_unitless:
        return "plain"
    return "scaled" if u.get_dim(unit).is_dimensionless else "quantity"


@functools.lru_cache(maxsize=256)
def _squared(unit: Any) -> Any:
    return unit**2


def _mantissa_in(value: Any, unit: Any) -> Any:
    """``value``'s jax-array mantissa when it is held in exactly ``unit``, else ``None``."""
    if isinstance(value, u.Quantity):
        m = value.mantissa
        return m if isinstance(m, jax.Array) and (value.unit is unit or value.unit == unit) else None
    return value if isinstance(value, jax.Array) and _restore_kind(unit) == "plain" else None


def _attach(mantissa: Any, unit: Any, kind: str) -> Any:
    return u.Quantity(mantissa, unit=unit) if kind == "quantity" else mantissa


class _BatchNorm(Freezable, Module):
    num_spatial_dims: int = 0
    # options of issue 12; class defaults so that layers saved before them still load
    debias: bool = False
    virtual_batch_size: int | None = None
    param_dtype: Any = None

    def __init__(
        self,
        in_size: int | Sequence[int],
        feature_axis: int | Sequence[int] = -1,
        *,
        track_running_stats: bool = True,
        epsilon: Any = 1e-5,
        momentum: float | None = 0.99,
        affine: bool = True,
        bias_initializer: Any = init.Constant(0.0),
        scale_initializer: Any = init.Constant(1.0),
        axis_name: str | Sequence[str] | None = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        use_fast_variance: bool = True,
        name: str | None = None,
        dtype: Any = None,
        param_type: type = NormalizationParamState,
        mean_type: type = BatchState,
        in_unit: Any = None,
        nan_policy: str = "propagate",
        debias: bool = False,
        virtual_batch_size: int | None = None,
        param_dtype: Any = None,
    ):
        who = type(self).__name__
        self.in_size = _size(in_size, who)
        rank = self.num_spatial_dims + 1
        if len(self.in_size) != rank:
            raise ValueError(
                f"{who}: in_size must have {rank} entries ({self._layout()}), got {self.in_size}"
            )
        self.feature_axes = functional.canonical_axes(feature_axis, rank, "feature_axis")
        self.epsilon, self.epsilon_unit = check_epsilon(epsilon, who)
        if momentum is not None:
            functional.check_scalar(momentum, "momentum", who, "a float in [0, 1] or None", upper=1.0)
            momentum = float(momentum)
        self.momentum = momentum
        self.track_running_stats = bool(track_running_stats)
        self.affine = bool(affine)
        self.axis_name = tuple(axis_name) if isinstance(axis_name, list) else axis_name
        self.axis_index_groups = functional._hashable_groups(axis_index_groups)
        self.use_fast_variance = bool(use_fast_variance)
        self.name = name
        self.dtype = functional.check_layer_dtype(dtype, who)
        self.in_unit = check_in_unit(in_unit, who)
        self.nan_policy = functional.check_nan_policy(nan_policy, who)
        if self.in_unit is not None and self.epsilon_unit is not None:
            self._check_epsilon_unit(self.in_unit)
        self.training = True
        self.debias = bool(debias)
        if self.debias and (momentum is None or momentum == 1.0):
            raise ValueError(
                f"{who}: debias=True corrects an exponential average and needs a momentum in [0, 1), "
                f"got momentum={momentum!r} (momentum=None is already the exact cumulative average)"
            )
        self.virtual_batch_size = check_virtual_batch_size(virtual_batch_size, who)
        self.param_dtype = functional.check_dtype(param_dtype, who)
        if self.param_dtype is not None and not jnp.issubdtype(self.param_dtype, jnp.inexact):
            raise TypeError(
                f"{who}: param_dtype must be a floating dtype such as jnp.float32, got {param_dtype!r}"
            )

        fshape = self.feature_shape
        names = []
        self.weight = None
        if self.affine:
            pdt = self.dtype if self.dtype is not None and jnp.issubdtype(self.dtype, jnp.floating) else None
            pdt = self.param_dtype if self.param_dtype is not None else pdt
            scale = make_affine(scale_initializer, fshape, pdt, who, "scale_initializer:")
            bias = make_affine(bias_initializer, fshape, pdt, who, "bias_initializer:")
            check_affine_units(scale, bias, who)
            self.weight = param_type({"scale": scale, "bias": bias})
            names.append("weight")
        self.running_mean = self.running_var = None
        if self.track_running_stats:
            sdt = functional.stats_dtype(self.param_dtype or self.dtype or jnp.float32)
            unit = self.in_unit or _units.UNITLESS
            self.running_mean = mean_type(_units.restore(jnp.zeros(fshape, sdt), unit))
            self.running_var = mean_type(_units.restore(jnp.ones(fshape, sdt), unit**2))
            names += ["running_mean", "running_var"]
            if self.momentum is None or self.debias:
                # one count per feature (batches that gave the feature a value); float32 (exact to
                # 2**24 batches), so that jax.grad accepts the layer as a whole
                self.num_batches_tracked = mean_type(jnp.zeros(fshape, jnp.float32))
                names.append("num_batches_tracked")
        self._state_names = tuple(names)

    # ------------------------------------------------------------------------
    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of the per-feature statistics and affine parameters."""
        return tuple(self.in_size[a] for a in self.feature_axes)

    def _layout(self) -> str:
        spatial = {0: (), 1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
        return ", ".join((*spatial[self.num_spatial_dims], "channels"))

    def _check_epsilon_unit(self, ref: Any) -> None:
        if not _units.same_dim(self.epsilon_unit, ref**2):
            raise _units.UnitError(
                f"{type(self).__name__}: epsilon must have the dimension of the variance, "
                f"{_units.describe(ref**2)}, got {_units.describe(self.epsilon_unit)}"
            )

    def _epsilon_in(self, ref: Any) -> float:
        if self.epsilon_unit is None:
            return self.epsilon
        self._check_epsilon_unit(ref)
        return float((self.epsilon * self.epsilon_unit).to_decimal(ref**2))

    def _check_adoption(self, m: Any, ref: Any) -> None:
        """Refuse to adopt a unit while traced when the States are not unitnorm's own.

        Adopting turns the plain running statistics into Quantities. A plain
        ``jax.jit`` of a unitnorm layer returns the new structure, but foreign
        States (brainstate's, under ``brainstate.transform.jit``) cannot change
        structure inside a trace: say so before anything is written.
        """
        if self.in_unit is not None or ref.is_unitless or not self.track_running_stats:
            return
        if isinstance(self.running_mean, State) or not isinstance(m, jax.core.Tracer):
            return
        raise ValueError(
            f"{type(self).__name__}: cannot adopt the reference unit {ref} inside a traced call, because "
            f"its States ({type(self.running_mean).__name__}) cannot change structure there; build the "
            f"layer with in_unit=u.{ref}, or call it once outside jit"
        )

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        n = len(self.in_size)
        if len(shape) not in (n, n + 1) or tuple(shape[-n:]) != self.in_size:
            raise ValueError(
                f"{type(self).__name__} expected input of shape (batch, {', '.join(map(str, self.in_size))}) "
                f"or {self.in_size}, got {tuple(shape)}"
            )

    def _reference_unit(self, xunit: Any) -> Any:
        ref = self.in_unit if self.in_unit is not None else xunit
        if not _units.same_dim(xunit, ref):
            raise self._unit_error(xunit, ref)
        return ref

    def _fast_plan(self, shape: tuple[int, ...], dtype: Any, training: bool, ref: Any) -> Any:
        """Return the checked, static part of a call (axes, epsilon, dtypes), or ``None`` (general path)."""
        key = (type(self), self.in_size, self.feature_axes, self.track_running_stats, self.epsilon,
               self.epsilon_unit, self.dtype, shape, dtype, training, ref)  # fmt: skip
        plan = _PLANS.get(key)
        if plan is not None:
            return plan
        n = len(self.in_size)
        if len(shape) not in (n, n + 1) or tuple(shape[-n:]) != self.in_size:
            return None
        if _restore_kind(ref) == "scaled":
            return None
        offset = len(shape) - n
        faxes = tuple(a + offset for a in self.feature_axes)
        raxes = tuple(a for a in range(len(shape)) if a not in faxes)
        use_batch = training or not self.track_running_stats
        if use_batch and math.prod(shape[a] for a in raxes) <= 1:
            return None  # the general path says why
        try:
            functional.check_numeric(jnp.empty((0,), dtype), type(self).__name__)
            eps = self._epsilon_in(ref)
        except (TypeError, ValueError, u.UnitMismatchError):
            return None
        plan = (raxes, faxes, eps, _squared(ref), functional.output_dtype(dtype, self.dtype))
        if len(_PLANS) > 1024:
            _PLANS.clear()
        _PLANS[key] = plan
        return plan

    def _fast_call(self, x: Any, training: bool) -> Any:
        """Run the common call without the general path's conversions; ``_SLOW`` when it does not apply."""
        m, xunit = (x.mantissa, x.unit) if isinstance(x, u.Quantity) else (x, _units.UNITLESS)
        ref = self.in_unit
        if ref is None or not isinstance(m, jax.Array) or (xunit is not ref and xunit != ref):
            return _SLOW
        plan = self._fast_plan(m.shape, m.dtype, training, ref)
        if plan is None:
            return _SLOW
        raxes, faxes, eps, ref2, out_dtype = plan
        rm = rv = None
        if self.track_running_stats:
            rm, rv = _mantissa_in(self.running_mean.value, ref), _mantissa_in(self.running_var.value, ref2)
            if rm is None or rv is None:
                return _SLOW
        scale = bias = None
        out_unit = _units.UNITLESS
        if self.affine:
            weight = self.weight.value
            scale = weight["scale"]
            if isinstance(scale, u.Quantity):
                scale, out_unit = scale.mantissa, scale.unit
            bias = _mantissa_in(weight["bias"], out_unit)
            if bias is None or not isinstance(scale, jax.Array) or _restore_kind(out_unit) == "scaled":
                return _SLOW
        y, new_mean, new_var, _ = self._step(
            m, rm, rv, scale, bias, None, eps, training, raxes, faxes, out_dtype
        )
        if self.track_running_stats and training:
            kind = _restore_kind(ref)
            self._write_running(_attach(new_mean, ref, kind), _attach(new_var, ref2, kind))
        return _attach(y, out_unit, _restore_kind(out_unit))

    def _step(
        self,
        m: Any,
        rm: Any,
        rv: Any,
        scale: Any,
        bias: Any,
        mask: Any,
        eps: Any,
        training: bool,
        raxes: tuple[int, ...],
        faxes: tuple[int, ...],
        out_dtype: Any,
    ) -> tuple[Any, Any, Any, Any]:
        """Run the jitted batch-norm core with this layer's configuration (both call paths)."""
        scale, bias = self._frozen_affine(scale, bias)
        momentum = self._momentum_now(rm)
        limits = self._renorm_limits() if training and self.track_running_stats else None
        ghosts = None
        if training and self.virtual_batch_size is not None and m.ndim > len(self.in_size):
            ghosts = ghost_parts(m.shape[0], self.virtual_batch_size, type(self).__name__)
        if training and (ghosts is not None or limits is not None):
            r_max, d_max = limits if limits is not None else (None, None)
            return train_step(
                m,
                rm,
                rv,
                scale,
                bias,
                mask,
                momentum,
                eps,
                r_max,
                d_max,
                raxes=raxes,
                faxes=faxes,
                fast=self.use_fast_variance,
                axis_name=self.axis_name,
                groups=self.axis_index_groups,
                out_dtype=jnp.dtype(out_dtype),
                ghosts=ghosts,
                renorm=limits is not None,
                has_running=self.track_running_stats,
            )
        return functional.batch_norm_mantissa(
            m,
            rm,
            rv,
            scale,
            bias,
            mask,
            momentum,
            eps,
            training=training,
            has_running=self.track_running_stats,
            reduction_axes=raxes,
            feature_axes=faxes,
            use_fast_variance=self.use_fast_variance,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            out_dtype=out_dtype,
        )

    def _renorm_limits(self) -> tuple[Any, Any] | None:
        """``(r_max, d_max)`` for this step in batch renormalization; ``None`` for batch normalization."""
        return None

    def _counted(self) -> bool:
        return self.track_running_stats and (self.momentum is None or self.debias)

    def _momentum_now(self, rm: Any) -> Any:
        """Return this step's momentum: per feature for the cumulative average and the debiased EMA.

        With ``n`` the batches a feature has counted so far, ``momentum=None``
        gives ``n / (n + 1)`` (each batch weighted equally) and ``debias=True``
        gives ``1 - (1 - m) / (1 - m**(n + 1))``, which keeps the running value
        equal to Adam's bias-corrected average ``sum_i (1 - m) m**(t - i) b_i /
        (1 - m**t)``: the initial values drop out, and after one step the
        running statistics are that step's.
        """
        if not self._counted():
            return self.momentum
        dt = rm.dtype
        n = jnp.broadcast_to(jnp.asarray(self.num_batches_tracked.value), self.feature_shape).astype(dt)
        if self.momentum is None:
            return n / (n + 1)
        a = jnp.asarray(self.momentum, dt)
        return 1 - (1 - a) / (1 - a**n * a)

    def _write_running(self, mean: Any, var: Any, ok: Any = None) -> None:
        """Store updated running statistics (already in the reference unit) and count the batch.

        ``ok`` (per feature, or ``None`` for all) says which features this batch counted for.
        """
        self.running_mean.value = mean
        self.running_var.value = var
        if self._counted():
            n = jnp.broadcast_to(jnp.asarray(self.num_batches_tracked.value), self.feature_shape)
            n = n.astype(jnp.float32)
            self.num_batches_tracked.value = n + (1 if ok is None else jnp.asarray(ok).astype(jnp.float32))

    def _check_freezable(self) -> None:
        if not self.track_running_stats:
            raise ValueError(
                f"{type(self).__name__}: freeze() uses the running statistics, and this layer has none "
                "(track_running_stats=False)"
            )

    def _load_field(self, who: str, key: str, value: Any, old: Any, ref: Any) -> Any:
        # migration: a checkpoint from before the per-feature count holds one count for all features
        if key == "num_batches_tracked" and not _units.is_quantity(value) and jnp.ndim(value) == 0:
            value = jnp.broadcast_to(jnp.asarray(value, jnp.float32), jnp.shape(old))
        return super()._load_field(who, key, value, old, ref)

    def _stat(self, state: Any, ref: Any, power: int) -> Any:
        value = state.value
        # a dimensionless but scaled reference unit (e.g. mV/V) stores plain decimals: convert them too
        if _units.is_quantity(value) or (u.get_dim(ref).is_dimensionless and not ref.is_unitless):
            return _units.to_mantissa(
                value, ref**power, what="running statistic", expected=type(self).__name__
            )
        return jnp.asarray(value)

    def __call__(
        self, x: Any, mask: Any = None, *, training: bool | None = None, nan_policy: str | None = None
    ) -> Any:
        """Normalize ``x``; in training mode also update the running statistics.

        Parameters
        ----------
        x : Quantity or array_like
            Input of shape ``(batch, *in_size)`` or ``in_size``.
        mask : array_like of bool, optional
            Which elements count towards the batch statistics.
        training : bool, optional
            Overrides the layer's mode for this call only.
        nan_policy : {'propagate', 'omit', 'raise'}, optional
            Overrides the layer's ``nan_policy`` for this call only.

        Returns
        -------
        Quantity or array
            The normalized input, in the unit of ``scale`` (a plain array when
            dimensionless).
        """
        who = type(self).__name__
        training = self._is_training(training)
        if mask is None and nan_policy is None and self.nan_policy == "propagate":
            y = self._fast_call(x, training)
            if y is not _SLOW:
                return y
        m, xunit = _units.split(x)
        functional.check_numeric(m, who)
        self._check_shape(m.shape)
        ref = self._reference_unit(xunit)
        self._check_adoption(m, ref)
        if xunit != ref:
            m = _units.to_mantissa(x, ref)
        eps = self._epsilon_in(ref)
        offset = m.ndim - len(self.in_size)
        faxes = tuple(a + offset for a in self.feature_axes)
        raxes = tuple(a for a in range(m.ndim) if a not in faxes)
        mask = functional.check_mask(mask, m.shape, who)
        policy = self.nan_policy if nan_policy is None else functional.check_nan_policy(nan_policy, who)
        mask = functional.apply_nan_policy(m, mask, policy, who)
        use_batch = training or not self.track_running_stats
        if use_batch and math.prod(m.shape[a] for a in raxes) == 0:
            raise ValueError(
                f"{who}: cannot compute batch statistics of an empty input of shape {tuple(m.shape)}"
            )
        if use_batch:
            functional.check_batch_size(m.shape, raxes, who, self.axis_name, self.axis_index_groups)

        rm = rv = None
        if self.track_running_stats:
            rm = self._stat(self.running_mean, ref, 1)
            rv = self._stat(self.running_var, ref, 2)
        scale = bias = None
        out_unit = _units.UNITLESS
        if self.affine:
            scale, out_unit = _units.split(self.weight.value["scale"])
            bias = _units.to_mantissa(self.weight.value["bias"], out_unit, what="bias", expected=who)
        out_dtype = functional.output_dtype(m.dtype, self.dtype)
        y, new_mean, new_var, count = self._step(
            m, rm, rv, scale, bias, mask, eps, training, raxes, faxes, out_dtype
        )
        functional.check_batch_counts(count, who)
        ok = None
        if self.track_running_stats and training:
            # features with fewer than 2 counted values (or, traced under 'raise', a non-finite one)
            # keep their stats
            ok = functional.update_allowed(
                m, mask, raxes, policy, self.axis_name, self.axis_index_groups, count
            )
            if ok is not None:
                new_mean = functional.keep_where_not(ok, new_mean, rm)
                new_var = functional.keep_where_not(ok, new_var, rv)
        # every check passed and the math ran: now, and only now, write state
        if self.track_running_stats and training:
            self._write_running(_units.restore(new_mean, ref), _units.restore(new_var, ref**2), ok)
        elif self.track_running_stats and self.in_unit is None and not ref.is_unitless:
            self.running_mean.value = _units.restore(rm, ref)
            self.running_var.value = _units.restore(rv, ref**2)
        if self.in_unit is None:
            self.in_unit = ref
        return _units.restore(y, out_unit)


_COMMON_DOC = """
    Parameters
    ----------
    in_size : int or sequence of int
        The input shape without the batch axis: {layout}.
    feature_axis : int or sequence of int, default -1
        The axis (or axes) of ``in_size`` that keep separate statistics (the
        rule every layer follows: :ref:`axes-rule`).
    track_running_stats : bool, default True
        Keep running statistics for evaluation. With ``False`` the batch
        statistics normalize in training and in evaluation alike.
    epsilon : float or Quantity, default 1e-5
        Added to the variance. A float is read in the reference unit squared;
        a Quantity must have that dimension.
    momentum : float or None, default 0.99
        ``new = momentum * old + (1 - momentum) * batch`` (brainstate/flax;
        PyTorch's 0.1 is 0.9 here). ``None`` keeps the exact cumulative average,
        counting batches per feature in ``num_batches_tracked`` (shape of the
        features): a batch in which a mask or ``nan_policy='omit'`` left a
        feature without values leaves that feature's statistics and count as
        they were. (Before version 0.2 it was one count for all features;
        :meth:`load_state_dict` and :func:`unitnorm.load` with ``into=`` spread
        such a saved scalar count over the features.)
    affine : bool, default True
        Learn ``scale`` and ``bias``, held in ``weight.value``.
    bias_initializer, scale_initializer : initializer, default Constant(0.), Constant(1.)
        Anything :func:`unitnorm.init.resolve` accepts. ``scale`` sets the
        output unit; ``bias`` must be convertible to it.
    axis_name : str or sequence of str, optional
        Combine batch statistics across this mapped axis (or these axes, a
        ``vmap`` axis among them). The batch-of-one rule then counts the
        values of all devices combined.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these device groups.
    use_fast_variance : bool, default True
        One-pass shifted variance (accurate far from zero) or two passes.
    name : str, optional
        A label.
    dtype : dtype, optional
        Output (and parameter) dtype; default: the input's floating dtype.
    param_type, mean_type : type, default NormalizationParamState, BatchState
        Classes used to hold the parameters and the running statistics.
    in_unit : brainunit.Unit, optional
        The reference unit. Without it the first successful call adopts the
        input's unit. Inputs in a compatible unit are converted to it.
    nan_policy : {{'propagate', 'omit', 'raise'}}, default 'propagate'
        Non-finite input values (NaN, +-inf), with scipy's names.
        ``'propagate'`` (flax's and brainstate's behaviour) lets them into the
        statistics. ``'omit'`` leaves them out of the batch statistics, as if
        masked, and leaves them non-finite in the output; a feature with no
        finite value in the batch keeps its running statistics. ``'raise'``
        raises ``ValueError`` before any State is written. ``'raise'`` needs
        concrete input: inside ``jax.jit`` it cannot raise, so it adds a
        ``jax.experimental.checkify.debug_check`` (reported when the step is
        wrapped with ``checkify.checkify``) and a feature holding a non-finite
        value keeps its running statistics. The call's ``nan_policy=``
        overrides it for one call.
    debias : bool, default False
        Correct the exponential average's bias towards its initial values as
        Adam does: the running statistics hold ``sum_i (1 - m) m**(t - i) b_i /
        (1 - m**t)`` over the ``t`` batches each feature has counted (kept in
        ``num_batches_tracked``), so evaluation after one step uses that step's
        statistics. Needs a momentum in ``[0, 1)``.
    virtual_batch_size : int, optional
        Ghost batches: in training, the batch axis is cut into consecutive
        virtual batches of this many samples, each normalized with its own
        statistics; a last, smaller one is allowed when it has 2 or more
        samples (1 is a ``ValueError`` at trace time). The running statistics
        are updated once per call with the statistics of the whole batch,
        merged exactly from the virtual batches'. Evaluation (and an input
        without a batch axis) is unaffected.
    param_dtype : dtype, optional
        dtype of ``scale``, ``bias`` and the running statistics (at least
        float32 for the statistics), apart from the output ``dtype``: e.g.
        bfloat16 activations with float32 parameters. Default: as ``dtype``.

    Attributes
    ----------
    running_mean, running_var : State or None
        Running statistics, in the reference unit and its square (biased variance).
    weight : State or None
        ``{{'scale': ..., 'bias': ...}}``.

    Raises
    ------
    ValueError
        At construction for a bad ``in_size``, ``momentum``, ``epsilon`` or
        ``nan_policy``; at call time for an input of the wrong shape, a mask
        that does not fit, a non-finite value under ``nan_policy='raise'``, or
        batch statistics that would come from a single value per feature (a
        batch of one in training mode, as in PyTorch; brainstate and flax
        silently return zeros), counted over all devices of ``axis_name``.
    brainunit.UnitMismatchError
        For scale and bias of different dimensions (at construction), an input
        of another dimension than the reference unit, or an epsilon that is not
        in the variance's dimension. A failed call changes no State.

    See Also
    --------
    BatchNorm0d, BatchNorm1d, BatchNorm2d, BatchNorm3d, unitnorm.functional.batch_norm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; ``mean`` has
    unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets the output
    unit and ``bias`` has the same dimension. A float epsilon is read in the
    reference unit squared, so fix ``in_unit`` (or give a Quantity epsilon) to
    get the same output for data written in V and in mV.

    The layer starts in training mode; ``training=`` on a call overrides the
    mode set by :meth:`train` / :meth:`eval` for that call. :meth:`freeze`
    overrides all of them: a frozen layer evaluates.

    **A batch of one.** Batch statistics need more than one value per feature,
    counted after the reduction across ``axis_name``: one sample on each of
    four devices is a batch of four. Without a mask the count is static (the
    values on this device times the number of devices combined, or the group
    size) and a count of 1 is a ``ValueError`` before anything runs. With a mask
    or ``nan_policy='omit'`` it is known only once the data are: a concrete
    count of 1 is a ``ValueError`` (no State written); inside ``jax.jit`` (or
    any trace) it cannot raise, so a ``jax.experimental.checkify.debug_check``
    reports it when the step is wrapped with ``checkify.checkify``, and such a
    feature, like one with no counted value, keeps its running statistics (its
    output is ``bias``, as the centred value is 0).
"""


class BatchNorm0d(_BatchNorm):
    __doc__ = (
        """0-D batch normalization: one value per feature, input ``(batch, channels)``.
"""
        + _COMMON_DOC.format(layout="``(channels,)``")
        + """
    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(in_size=2, in_unit=u.mV)
    >>> y = layer(jnp.array([[0.1, 1.], [0.3, 3.]]) * u.volt)
    >>> print(layer.running_mean.value.unit, layer.running_mean.value.mantissa.round(3).tolist())
    mV [2.0, 20.0]
    >>> y.round(3).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]

    A recording with a gap: ``nan_policy="omit"`` leaves the missing samples
    out of the statistics and returns them as NaN.

    >>> gappy = un.BatchNorm0d(1, momentum=0.0, nan_policy="omit")
    >>> y = gappy(jnp.array([[1.], [jnp.nan], [3.]]))
    >>> print(gappy.running_mean.value.tolist(), y[:, 0].round(3).tolist())
    [2.0] [-1.0, nan, 1.0]
"""
    )
    num_spatial_dims = 0


class BatchNorm1d(_BatchNorm):
    __doc__ = (
        """1-D batch normalization, input ``(batch, length, channels)``.

    Normalizes each feature (channel) with its mean and variance over the batch
    and length axes, keeping the data's physical unit in the statistics.
"""
        + _COMMON_DOC.format(layout="``(length, channels)``")
        + """
    Examples
    --------
    The brainstate example runs unchanged:

    >>> import brainunit as u
    >>> import jax.numpy as jnp
    >>> import unitnorm as un
    >>>
    >>> # Create a BatchNorm1d layer for sequence data
    >>> layer = un.BatchNorm1d(in_size=(100, 64))  # length=100, channels=64
    >>>
    >>> # Apply normalization
    >>> x = jnp.ones((8, 100, 64))  # batch_size=8
    >>> y = layer(x)
    >>> print(y.shape)
    (8, 100, 64)

    With units, data in volts into a layer fixed in millivolts:

    >>> v = un.BatchNorm1d(in_size=(100, 64), in_unit=u.mV)
    >>> z = v(jnp.full((8, 100, 64), -0.065) * u.volt)
    >>> print(v.running_mean.value.unit, v.running_var.value.unit, type(z).__name__)
    mV mV^2 ArrayImpl
"""
    )
    num_spatial_dims = 1


class BatchNorm2d(_BatchNorm):
    __doc__ = (
        """2-D batch normalization, input ``(batch, height, width, channels)``.
"""
        + _COMMON_DOC.format(layout="``(height, width, channels)``")
        + """
    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm2d((4, 4, 3), scale_initializer=un.init.Constant(1 * u.mV),
    ...                        bias_initializer=un.init.Constant(-65 * u.mV))
    >>> y = layer(jnp.arange(96.).reshape(2, 4, 4, 3) * u.nA)
    >>> print(y.unit, round(float(y.mean().mantissa), 3))
    mV -65.0
"""
    )
    num_spatial_dims = 2


class BatchNorm3d(_BatchNorm):
    __doc__ = (
        """3-D batch normalization, input ``(batch, depth, height, width, channels)``.
"""
        + _COMMON_DOC.format(layout="``(depth, height, width, channels)``")
        + """
    Examples
    --------
    >>> import jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm3d((2, 2, 2, 1)).eval()
    >>> y = layer(jnp.full((1, 2, 2, 2, 1), 3.0))
    >>> round(float(y.max()), 3)
    3.0
"""
    )
    num_spatial_dims = 3
