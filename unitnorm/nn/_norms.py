"""LayerNorm, RMSNorm, GroupNorm and InstanceNorm: per-sample normalization with units.

These layers keep no running statistics and behave the same in training and
evaluation. Each is a thin wrapper over the matching function in
:mod:`unitnorm.functional`; the layer adds the parameters, the reference unit
and the input-shape and axis rule that every layer of unitnorm shares (written
once, in the user guide: *Coming from brainstate, ...* > *Input shapes and
axes*). In short:

* ``in_size`` is the shape of one sample (no batch axis). ``feature_axis`` /
  ``feature_axes`` name axes of ``in_size``, as in BatchNorm.
* The input has shape ``in_size`` or ``(batch, *in_size)``; LayerNorm,
  RMSNorm and InstanceNorm also take several leading batch axes, and a
  GroupNorm whose ``in_size`` is just the channels takes
  ``(batch, *spatial, channels)``, the spatial axes being part of the sample.
* ``reduction_axes`` are positions in the input as passed (flax, brainstate).
  Negative ones count from the end. Non-negative ones that all lie within
  ``in_size`` fix the input to shape ``in_size``; if one lies beyond it they
  count positions of a batched input, whose axis 0 (the batch) is never
  reduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import brainunit as u
import jax.numpy as jnp

from unitnorm import _units, functional, init
from unitnorm.nn._base import Module
from unitnorm.nn._batch_norm import _size, check_affine_units, check_epsilon, check_in_unit, make_affine
from unitnorm.nn._freeze import Freezable
from unitnorm.state import NormalizationParamState

__all__ = ["GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]

_RULE = "see 'Input shapes and axes' in the user guide"


def _shifted(axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a + 1 for a in axes)


class _SampleNorm(Freezable, Module):
    """Shared machinery: configuration checks, the shape rule, units, the call."""

    _rms: bool = False
    # several leading batch axes; GroupNorm: no (flax and brainstate would reduce the extra axes)
    _many_batch_axes: bool = True

    def _configure(
        self,
        in_size: Any,
        epsilon: Any,
        dtype: Any,
        axis_name: Any,
        axis_index_groups: Any,
        use_fast_variance: bool,
        name: str | None,
        in_unit: Any,
    ) -> None:
        who = type(self).__name__
        self.in_size = _size(in_size, who)
        self.epsilon, self.epsilon_unit = check_epsilon(epsilon, who)
        self.dtype = functional.check_layer_dtype(dtype, who)
        self.axis_name = tuple(axis_name) if isinstance(axis_name, list) else axis_name
        self.axis_index_groups = functional._hashable_groups(axis_index_groups)
        self.use_fast_variance = bool(use_fast_variance)
        self.name = name
        self.in_unit = check_in_unit(in_unit, who)
        if self.in_unit is not None:
            self._epsilon_in(self.in_unit)
        self.training = True
        # which inputs the axes allow: "any" (in_size or batched), "sample" (in_size only),
        # "batched" (batched only); see _reduction_spec
        self._form = "any"

    def _ints(self, axes: Any, what: str) -> tuple[int, ...]:
        """``axes`` as a tuple of ints (as given), or ``TypeError``."""
        who = type(self).__name__
        if isinstance(axes, int) and not isinstance(axes, bool):
            return (axes,)
        if isinstance(axes, Sequence) and not isinstance(axes, str):
            for a in axes:
                if not isinstance(a, int) or isinstance(a, bool):
                    raise TypeError(f"{who}: {what} must be ints, got {a!r}")
            return tuple(axes)
        raise TypeError(
            f"{who}: {what} must be an int or a sequence of ints, got {type(axes).__name__} {axes!r}"
        )

    def _canonical(
        self, seq: tuple[int, ...], ndim: int, what: str, given: Any, where: str
    ) -> tuple[int, ...]:
        who = type(self).__name__
        try:
            return functional.canonical_axes(seq, ndim, what)
        except ValueError as err:
            msg = str(err)
            if "out of range" in msg:
                msg = f"{what}={given} is out of range"
            raise ValueError(f"{who}: {msg}; {where} ({_RULE})") from None

    def _feature_axes(self, axes: Any, what: str) -> tuple[int, ...]:
        """Feature axes name axes of ``in_size``: return them as non-negative positions in it."""
        seq = self._ints(axes, what)
        return self._canonical(
            seq, len(self.in_size), what, axes, f"{what} name axes of in_size={self.in_size}"
        )

    def _reduction_spec(self, axes: Any) -> tuple[int, ...]:
        """Check ``reduction_axes`` (input positions); return them as positions in a sample.

        Negative axes count from the end of the input, so from the end of the
        sample. Non-negative axes that all lie within ``in_size`` fix the input
        to shape ``in_size`` (they are positions in it); if any lies beyond
        ``in_size`` they are positions in a batched input (axis 0 is the batch,
        never reduced), so ``a`` names sample axis ``a - 1``. Sets ``_form``.
        """
        who = type(self).__name__
        seq = self._ints(axes, "reduction_axes")
        nonneg = [a for a in seq if a >= 0]
        if nonneg and max(nonneg) >= len(self.in_size):
            if 0 in seq:
                raise ValueError(
                    f"{who}: reduction_axes={axes} count positions of a batched input (an axis lies beyond "
                    f"in_size={self.in_size}), whose axis 0 is the batch axis, which is never reduced "
                    f"({_RULE})"
                )
            self._form = "batched"
            return tuple(a - 1 if a >= 0 else a for a in seq)
        if nonneg:
            self._form = "sample"
        return seq

    param_dtype: Any = None

    def _set_param_dtype(self, param_dtype: Any) -> None:
        """``param_dtype``: the parameters' dtype apart from the output ``dtype`` (default: as ``dtype``)."""
        who = type(self).__name__
        dtype = functional.check_dtype(param_dtype, who)
        if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(f"{who}: param_dtype must be a floating dtype such as jnp.float32, got {dtype}")
        self.param_dtype = dtype

    def _param_dtype(self) -> Any:
        if self.param_dtype is not None:
            return self.param_dtype
        return self.dtype if self.dtype is not None and jnp.issubdtype(self.dtype, jnp.floating) else None

    def _make_weight(
        self,
        shape: tuple[int, ...],
        use_scale: bool,
        use_bias: bool,
        scale_init: Any,
        bias_init: Any,
        param_type: type,
    ) -> Any:
        who = type(self).__name__
        value = {}
        if use_scale:
            value["scale"] = make_affine(scale_init, shape, self._param_dtype(), who, "scale_init:")
        if use_bias:
            value["bias"] = make_affine(bias_init, shape, self._param_dtype(), who, "bias_init:")
        check_affine_units(value.get("scale"), value.get("bias"), who)
        return param_type(value) if value else None

    def _epsilon_in(self, ref: Any) -> Any:
        """Epsilon as a mantissa in ``ref**2`` (a float epsilon is already read in it)."""
        if self.epsilon_unit is None:
            return self.epsilon
        return functional.epsilon_mantissa(
            u.Quantity(self.epsilon, unit=self.epsilon_unit), ref, self._signature()
        )

    def _spatial(self) -> bool:
        """Whether inputs may carry spatial axes between the batch axis and ``in_size``."""
        return False

    def _expected(self) -> str:
        n = len(self.in_size)
        sizes = ", ".join(map(str, self.in_size))
        if self._form == "sample":
            return f"{self.in_size}"
        if self._spatial():
            batched = f"(batch, *spatial, {sizes})"
        elif self._form == "any" and self._many_batch_axes:
            batched = f"(*batch, {sizes})"
        else:
            batched = f"(batch, {sizes})"
        return batched if self._form == "batched" else f"{batched} or {self.in_size}" if n else batched

    def _layout(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """Return ``(lead, sample_ndim)`` for an input shape: ``lead`` leading batch axes, 0 or more.

        Raises ``ValueError`` naming the accepted shapes if ``shape`` fits none.
        """
        who = type(self).__name__
        n = len(self.in_size)
        shape = tuple(shape)
        fits = len(shape) >= n and shape[len(shape) - n :] == self.in_size
        if fits and len(shape) == n and self._form != "batched":
            return 0, n
        if fits and len(shape) > n and self._form != "sample":
            if self._spatial():
                return 1, len(shape) - 1
            if len(shape) == n + 1 or (self._form == "any" and self._many_batch_axes):
                return len(shape) - n, n
        hint = ""
        if fits and self._form == "sample":
            hint = (
                "; its non-negative reduction_axes lie within in_size and count from the start of the "
                "input, so a leading batch axis would shift them: use negative axes, or include the "
                "batch axis in in_size"
            )
        elif fits and self._form == "batched":
            hint = "; its reduction_axes count positions of a batched input"
        raise ValueError(f"{who} expected input of shape {self._expected()}, got {shape}{hint} ({_RULE})")

    def _axes_in_sample(self, sample_ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Reduction and feature axes as non-negative positions in a sample of ``sample_ndim`` axes."""
        return self.reduction_axes, self.feature_axes

    def _reference_unit(self, xunit: Any) -> Any:
        ref = self.in_unit if self.in_unit is not None else xunit
        if not _units.same_dim(xunit, ref):
            raise self._unit_error(xunit, ref)
        return ref

    def _affine(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _run(
        self,
        m: Any,
        scale: Any,
        bias: Any,
        mask: Any,
        eps: Any,
        out_dtype: Any,
        raxes: tuple[int, ...],
        faxes: tuple[int, ...],
    ) -> Any:
        """Normalize the batched mantissa ``m`` (axes are positions in ``m``)."""
        return functional.sample_norm_mantissa(
            m,
            scale,
            bias,
            mask,
            eps,
            reduction_axes=raxes,
            feature_axes=faxes,
            rms=self._rms,
            use_fast_variance=self.use_fast_variance,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            out_dtype=out_dtype,
        )

    def __call__(self, x: Any, mask: Any = None) -> Any:
        """Normalize ``x``.

        Parameters
        ----------
        x : Quantity or array_like
            Input of a shape the layer accepts (``in_size`` or
            ``(batch, *in_size)``, see the class notes), in a unit of the
            reference unit's dimension.
        mask : array_like of bool, optional
            Which elements count towards the statistics (broadcast to ``x``'s
            shape). Every element is normalized.

        Returns
        -------
        Quantity or array
            Shaped like ``x``; in the unit of ``scale`` (a plain array when
            dimensionless).
        """
        who = type(self).__name__
        m, xunit = _units.split(x)
        functional.check_numeric(m, who)
        shape = tuple(m.shape)
        lead, sample_ndim = self._layout(shape)
        raxes, faxes = self._axes_in_sample(sample_ndim)
        ref = self._reference_unit(xunit)
        if xunit != ref:
            m = _units.to_mantissa(x, ref)
        eps = self._epsilon_in(ref)
        mask = functional.check_mask(mask, shape, who)
        if lead != 1:  # one leading batch axis for the core: add it, or merge several into one
            core = (-1, *shape[len(shape) - sample_ndim :])
            m = m.reshape(core)
            mask = None if mask is None else mask.reshape(core)
        scale, bias = self._affine()
        scale_m, bias_m, out_unit = functional._affine_mantissas(scale, bias, who)
        out_dtype = functional.output_dtype(m.dtype, self.dtype)
        y = self._run(m, scale_m, bias_m, mask, eps, out_dtype, _shifted(raxes), _shifted(faxes))
        # every check passed and the math ran: only now adopt the reference unit
        if self.in_unit is None:
            self.in_unit = ref
        return _units.restore(y if lead == 1 else y.reshape(shape), out_unit)


class _WeightNorm(_SampleNorm):
    """A sample norm whose affine parameters live in ``weight`` = ``{'scale', 'bias'}``."""

    def _affine(self) -> tuple[Any, Any]:
        if self.weight is None:
            return None, None
        return self._frozen_affine(self.weight.value.get("scale"), self.weight.value.get("bias"))


class LayerNorm(_WeightNorm):
    """Layer normalization (Ba et al. 2016), with physical units.

    Standardizes each sample over ``reduction_axes`` (by default its last
    axis), then applies a learned ``scale`` and ``bias`` along
    ``feature_axes``. brainstate's signature: code moves over unchanged, except
    for the few differences listed in the user guide (*Coming from ...*).

    Parameters
    ----------
    in_size : int or sequence of int
        The shape of one sample, without the batch axis, e.g. ``(length, channels)``.
    reduction_axes : int or sequence of int, default -1
        Positions in the input the statistics are taken over. Negative ones
        count from the end; non-negative ones that all lie within ``in_size``
        fix the input to shape ``in_size``; if one lies beyond it they count
        positions of a ``(batch, *in_size)`` input (see the Notes).
    feature_axes : int or sequence of int, default -1
        Axes of ``in_size`` the ``scale`` and ``bias`` run along; their
        shape is ``tuple(in_size[a] for a in feature_axes)``.
    epsilon : float or Quantity, default 1e-6
        Added to the variance. A float is read in the reference unit squared;
        a Quantity must have the dimension of the input's unit squared.
    use_bias, use_scale : bool, default True
        Learn a bias / a scale.
    bias_init, scale_init : initializer, default Zeros(), Constant(1.)
        Anything :func:`unitnorm.init.resolve` accepts. ``scale`` sets the
        output unit; ``bias`` must be convertible to it (dimensionless
        without a scale). Checked at construction.
    axis_name : str or sequence of str, optional
        Combine the statistics across this mapped axis.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these device groups.
    use_fast_variance : bool, default True
        One-pass shifted variance (accurate far from zero) or two passes.
    dtype : dtype, optional
        Output (and parameter) dtype; default: the input's floating dtype.
    param_dtype : dtype, optional
        dtype of the parameters (e.g. float32 with bfloat16 activations);
        default: as ``dtype``.
    param_type : type, default NormalizationParamState
        The class holding ``weight``.
    name : str, optional
        A label.
    in_unit : brainunit.Unit, optional
        The reference unit. Without it the first successful call adopts the
        input's unit; later inputs in a compatible unit are converted to it.

    Attributes
    ----------
    weight : State or None
        ``{'scale': ..., 'bias': ...}`` (only the keys in use; ``None`` when
        neither is).

    Raises
    ------
    ValueError
        At construction for a bad ``in_size``, axis or ``epsilon``; at call
        time for an input or mask of the wrong shape.
    TypeError
        For a non-int axis, a non-Unit ``in_unit`` or a non-numeric input.
    brainunit.UnitMismatchError
        For scale and bias of different dimensions (at construction), an
        input of another dimension than the reference unit, or an epsilon not
        in its square. A failed call changes no State and no reference unit.

    See Also
    --------
    RMSNorm, GroupNorm, InstanceNorm, unitnorm.functional.layer_norm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; ``mean`` has
    unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets the output
    unit and ``bias`` has the same dimension. A float epsilon is read in the
    reference unit squared, so fix ``in_unit`` (or give a Quantity epsilon) to
    get the same output for data written in V and in mV. There are no running
    statistics and no train/eval difference.

    Input shape and axes: the input has shape ``in_size`` or
    ``(*batch, *in_size)``, any number of leading batch axes, each slice
    normalized on its own. ``feature_axes`` name axes of ``in_size``;
    ``reduction_axes`` are positions in the input as passed (negative ones
    count from the end; non-negative ones within ``in_size`` fix the input
    to shape ``in_size``). The rule, shared by every layer, is written once
    in :ref:`axes-rule`.

    Examples
    --------
    The brainstate example runs unchanged:

    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> x = jnp.arange(360.).reshape(3, 4, 5, 6)
    >>> layer = un.LayerNorm(x.shape)
    >>> print(layer(x).shape)
    (3, 4, 5, 6)

    With units, the output takes ``scale``'s unit:

    >>> layer = un.LayerNorm(3, scale_init=un.init.Constant(2. * u.mV),
    ...                      bias_init=un.init.Constant(-65. * u.mV), epsilon=1e-3 * u.nA**2)
    >>> y = layer(jnp.array([[1., 2., 3.], [4., 4., 4.]]) * u.nA)
    >>> print(layer.in_unit, y.unit, [round(v, 2) for v in y.mantissa[0].tolist()])
    nA mV [-67.45, -65.0, -62.55]
    >>> print(y.mantissa[1].tolist())
    [-65.0, -65.0, -65.0]
    """

    def __init__(
        self,
        in_size: int | Sequence[int],
        reduction_axes: int | Sequence[int] = -1,
        feature_axes: int | Sequence[int] = -1,
        *,
        epsilon: Any = 1e-6,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = init.Zeros(),
        scale_init: Any = init.Constant(1.0),
        axis_name: str | Sequence[str] | None = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        use_fast_variance: bool = True,
        dtype: Any = None,
        param_type: type = NormalizationParamState,
        name: str | None = None,
        in_unit: Any = None,
        param_dtype: Any = None,
    ):
        self._configure(
            in_size, epsilon, dtype, axis_name, axis_index_groups, use_fast_variance, name, in_unit
        )
        self._set_param_dtype(param_dtype)
        self.reduction_axes = self._canonical(
            self._reduction_spec(reduction_axes),
            len(self.in_size),
            "reduction_axes",
            reduction_axes,
            f"axes must lie within in_size={self.in_size}",
        )
        self.feature_axes = self._feature_axes(feature_axes, "feature_axes")
        self.use_bias, self.use_scale = bool(use_bias), bool(use_scale)
        fshape = tuple(self.in_size[a] for a in self.feature_axes)
        self.weight = self._make_weight(
            fshape, self.use_scale, self.use_bias, scale_init, bias_init, param_type
        )
        self._state_names = ("weight",) if self.weight is not None else ()


class RMSNorm(_SampleNorm):
    """Root-mean-square layer normalization (Zhang & Sennrich 2019), with units.

    Divides each sample by its root mean square over ``reduction_axes``
    (nothing is subtracted), then multiplies by a learned ``scale`` along
    ``feature_axes``. brainstate's signature and attribute names: the scale is
    held in ``self.scale.value['scale']`` (``weight`` is an alias of ``scale``).

    Parameters
    ----------
    in_size : int or sequence of int
        The shape of one sample, without the batch axis.
    epsilon : float or Quantity, default 1e-6
        Added to the mean square. A float is read in the reference unit
        squared; a Quantity must have the input unit's squared dimension.
    dtype : dtype, optional
        Output (and parameter) dtype; default: the input's floating dtype.
    param_dtype : dtype, optional
        dtype of the parameters (e.g. float32 with bfloat16 activations);
        default: as ``dtype``.
    use_scale : bool, default True
        Learn a scale.
    scale_init : initializer, default Constant(1.)
        Anything :func:`unitnorm.init.resolve` accepts; its unit is the output unit.
    reduction_axes : int or sequence of int, default -1
        Positions in the input the mean square is taken over, read as
        LayerNorm's ``reduction_axes``.
    feature_axes : int or sequence of int, default -1
        Axes of ``in_size`` the ``scale`` runs along.
    axis_name : str or sequence of str, optional
        Combine the mean square across this mapped axis (one ``psum``).
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these device groups.
    use_fast_variance : bool, default True
        Accepted for brainstate compatibility; the mean square has a single
        formula, so it changes nothing.
    param_type : type, default NormalizationParamState
        The class holding ``scale``.
    name : str, optional
        A label.
    in_unit : brainunit.Unit, optional
        The reference unit (default: adopted from the first successful call).

    Attributes
    ----------
    scale : State or None
        ``{'scale': ...}``, or ``None`` with ``use_scale=False``.

    Raises
    ------
    ValueError
        For a bad ``in_size``, axis or ``epsilon``, or an input or mask of the
        wrong shape.
    brainunit.UnitMismatchError
        For an input of another dimension than the reference unit, or an
        epsilon not in its square. A failed call changes nothing.

    See Also
    --------
    LayerNorm, unitnorm.functional.rms_norm

    Notes
    -----
    ``x / sqrt(mean(|x|**2) + epsilon)`` is dimensionless; the mean square
    and ``epsilon`` are in unit(x)**2; ``scale`` sets the output unit. There is
    no bias. The result is invariant under ``a * x`` (``a > 0``, epsilon scaled
    by ``a**2``) but not under an offset.

    Input shape and axes: the input has shape ``in_size`` or
    ``(*batch, *in_size)``, any number of leading batch axes, each slice
    normalized on its own. ``feature_axes`` name axes of ``in_size``;
    ``reduction_axes`` are positions in the input as passed (negative ones
    count from the end; non-negative ones within ``in_size`` fix the input
    to shape ``in_size``). The rule, shared by every layer, is written once
    in :ref:`axes-rule`.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.RMSNorm(in_size=(2,), epsilon=0.)
    >>> y = layer(jnp.array([[3., 4.], [0.3, 0.4]]) * u.mV)
    >>> print(layer.in_unit, [[round(v, 4) for v in row] for row in y.tolist()])
    mV [[0.8485, 1.1314], [0.8485, 1.1314]]
    """

    _rms = True

    def __init__(
        self,
        in_size: int | Sequence[int],
        *,
        epsilon: Any = 1e-6,
        dtype: Any = None,
        use_scale: bool = True,
        scale_init: Any = init.Constant(1.0),
        reduction_axes: int | Sequence[int] = -1,
        feature_axes: int | Sequence[int] = -1,
        axis_name: str | Sequence[str] | None = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        use_fast_variance: bool = True,
        param_type: type = NormalizationParamState,
        name: str | None = None,
        in_unit: Any = None,
        param_dtype: Any = None,
    ):
        self._configure(
            in_size, epsilon, dtype, axis_name, axis_index_groups, use_fast_variance, name, in_unit
        )
        self._set_param_dtype(param_dtype)
        self.reduction_axes = self._canonical(
            self._reduction_spec(reduction_axes),
            len(self.in_size),
            "reduction_axes",
            reduction_axes,
            f"axes must lie within in_size={self.in_size}",
        )
        self.feature_axes = self._feature_axes(feature_axes, "feature_axes")
        self.use_scale = bool(use_scale)
        fshape = tuple(self.in_size[a] for a in self.feature_axes)
        self.scale = self._make_weight(fshape, self.use_scale, False, scale_init, None, param_type)
        self._state_names = ("scale",) if self.scale is not None else ()

    @property
    def weight(self) -> Any:
        """The State holding ``{'scale': ...}`` (the same object as ``scale``)."""
        return self.scale

    def _affine(self) -> tuple[Any, Any]:
        return self._frozen_affine(None if self.scale is None else self.scale.value.get("scale"), None)


class GroupNorm(_WeightNorm):
    """Group normalization (Wu & He 2018), with units and multi-axis samples.

    The channels (``feature_axis``) are split into ``num_groups`` groups of
    ``group_size`` consecutive channels; each group of each sample is
    standardized over its channels and the other ``reduction_axes``, then a
    per-channel ``scale`` and ``bias`` are applied. Unlike brainstate 0.5,
    ``in_size`` may have several axes, e.g. ``(length, channels)``.

    Parameters
    ----------
    in_size : int or sequence of int
        The shape of one sample, without the batch axis, e.g. ``(length, channels)``.
    feature_axis : int, default -1
        The channel axis: an axis of ``in_size`` (``0`` and ``-1`` both name
        the channels when ``in_size=(channels,)``).
    num_groups : int or None, default 32
        The number of groups. Give exactly one of ``num_groups`` and
        ``group_size`` (pass ``num_groups=None`` to use ``group_size``).
    group_size : int, optional
        The number of channels per group.
    epsilon : float or Quantity, default 1e-6
        Added to the variance; a float is read in the reference unit squared.
    dtype : dtype, optional
        Output (and parameter) dtype; default: the input's floating dtype.
    param_dtype : dtype, optional
        dtype of the parameters (e.g. float32 with bfloat16 activations);
        default: as ``dtype``.
    use_bias, use_scale : bool, default True
        Learn a per-channel bias / scale.
    bias_init, scale_init : initializer, default Zeros(), Constant(1.)
        Anything :func:`unitnorm.init.resolve` accepts; ``scale`` sets the
        output unit and ``bias`` must agree.
    reduction_axes : int or sequence of int, optional
        Positions in the input the statistics are taken over; must include
        the channel axis. Default: every axis of the sample (all but the
        batch axis).
    axis_name : str or sequence of str, optional
        Combine the statistics across this mapped axis.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these device groups.
    use_fast_variance : bool, default True
        One-pass shifted variance or two passes.
    param_type : type, default NormalizationParamState
        The class holding ``weight``.
    name : str, optional
        A label.
    in_unit : brainunit.Unit, optional
        The reference unit (default: adopted from the first successful call).

    Attributes
    ----------
    num_groups, group_size : int
        The resolved group layout.
    weight : State or None
        ``{'scale': ..., 'bias': ...}`` of shape ``(channels,)``.

    Raises
    ------
    ValueError
        When both or neither of ``num_groups`` and ``group_size`` are given,
        the channel count does not divide by them (the message names the
        numbers), ``feature_axis`` is not one axis, ``reduction_axes`` omits
        it, or an input or mask has the wrong shape.
    TypeError
        When ``num_groups`` / ``group_size`` is not an int.
    brainunit.UnitMismatchError
        For scale and bias of different dimensions, an input of another
        dimension than the reference unit, or an epsilon not in its square.

    See Also
    --------
    LayerNorm, InstanceNorm, unitnorm.functional.group_norm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; each group's
    ``mean`` has unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets
    the output unit and ``bias`` has the same dimension. ``num_groups=1`` is
    :class:`LayerNorm` over the whole sample; ``num_groups=channels`` is
    :class:`InstanceNorm`.
    Explicit ``reduction_axes`` that leave out a sample axis are honoured
    exactly (flax.nnx 0.12 and brainstate 0.5 repeat the group statistics
    along axis 1, which is right only when every non-batch axis is reduced).

    Input shape and axes: the input has shape ``in_size`` or
    ``(batch, *in_size)``. When ``in_size`` is the channels alone
    (brainstate's form, ``in_size=(channels,)``) it may also be
    ``(batch, *spatial, channels)``: the spatial axes belong to the sample
    and are reduced by default. ``feature_axis`` names an axis of
    ``in_size``; ``reduction_axes`` are positions in the input as passed
    (negative ones count from the end). The rule, shared by every layer, is
    written once in :ref:`axes-rule`.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.GroupNorm(in_size=(5, 4), num_groups=2)      # (length, channels)
    >>> x = jnp.arange(40.).reshape(2, 5, 4) * u.uvolt
    >>> y = layer(x)
    >>> print(y.shape, round(float(y[0, :, :2].mean()), 4), round(float(y[0, :, :2].std()), 4))
    (2, 5, 4) 0.0 1.0

    brainstate's form: ``in_size`` is the channels, the input
    ``(batch, height, width, channels)``:

    >>> layer = un.GroupNorm((16,), feature_axis=0, num_groups=4)
    >>> y = layer(jnp.arange(2 * 3 * 3 * 16.).reshape(2, 3, 3, 16))
    >>> print(y.shape, round(abs(float(y[0, :, :, :4].mean())), 4), round(float(y[0, :, :, :4].std()), 4))
    (2, 3, 3, 16) 0.0 1.0
    >>> un.GroupNorm(10, num_groups=4)
    Traceback (most recent call last):
    ...
    ValueError: GroupNorm: the channel count must divide by num_groups; got channels=10, num_groups=4
    """

    def __init__(
        self,
        in_size: int | Sequence[int],
        feature_axis: int = -1,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        epsilon: Any = 1e-6,
        dtype: Any = None,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = init.Zeros(),
        scale_init: Any = init.Constant(1.0),
        reduction_axes: int | Sequence[int] | None = None,
        axis_name: str | Sequence[str] | None = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        use_fast_variance: bool = True,
        param_type: type = NormalizationParamState,
        name: str | None = None,
        in_unit: Any = None,
        param_dtype: Any = None,
    ):
        who = type(self).__name__
        self._configure(
            in_size, epsilon, dtype, axis_name, axis_index_groups, use_fast_variance, name, in_unit
        )
        self._set_param_dtype(param_dtype)
        faxes = self._feature_axes(feature_axis, "feature_axis")
        if len(faxes) != 1:
            raise ValueError(f"{who}: feature_axis must be one channel axis, got feature_axis={feature_axis}")
        self.feature_axis = faxes[0]
        self.reduction_axes = None if reduction_axes is None else self._ints(reduction_axes, "reduction_axes")
        self._raxes_spec = None if reduction_axes is None else self._reduction_spec(reduction_axes)
        if not self._spatial():
            self._axes_in_sample(len(self.in_size))  # the sample is in_size: check the axes now
        elif self._raxes_spec is not None and self._form == "any" and -1 not in self._raxes_spec:
            raise self._no_channel(-1)
        channels = self.in_size[self.feature_axis]
        self.num_groups, self.group_size = functional.group_counts(channels, num_groups, group_size, who)
        self.use_bias, self.use_scale = bool(use_bias), bool(use_scale)
        self.weight = self._make_weight(
            (channels,), self.use_scale, self.use_bias, scale_init, bias_init, param_type
        )
        self._state_names = ("weight",) if self.weight is not None else ()

    @property
    def feature_axes(self) -> tuple[int, ...]:
        """``(feature_axis,)``, the axis of ``in_size`` the parameters run along."""
        return (self.feature_axis,)

    _many_batch_axes = False

    def _spatial(self) -> bool:
        # brainstate's GroupNorm: in_size is the channels only, the input (batch, *spatial, channels)
        return len(self.in_size) == 1 and self._form != "sample"

    def _no_channel(self, channel: int) -> ValueError:
        return ValueError(
            f"{type(self).__name__}: reduction_axes must include the channel axis (input axis {channel}, "
            f"feature_axis={self.feature_axis} of in_size={self.in_size}), since statistics are taken within "
            f"each group of channels; got reduction_axes={self.reduction_axes} ({_RULE})"
        )

    def _axes_in_sample(self, sample_ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        channel = sample_ndim - len(self.in_size) + self.feature_axis
        if self._raxes_spec is None:
            return tuple(range(sample_ndim)), (channel,)
        where = (
            f"a sample of shape in_size={self.in_size} has {sample_ndim} axes"
            if not self._spatial()
            else f"a sample (the input without its batch axis) has {sample_ndim} axes here"
        )
        raxes = self._canonical(self._raxes_spec, sample_ndim, "reduction_axes", self.reduction_axes, where)
        if channel not in raxes:
            raise self._no_channel(channel - sample_ndim)
        return raxes, (channel,)

    def _run(
        self,
        m: Any,
        scale: Any,
        bias: Any,
        mask: Any,
        eps: Any,
        out_dtype: Any,
        raxes: tuple[int, ...],
        faxes: tuple[int, ...],
    ) -> Any:
        (channel,) = faxes
        return functional.sample_norm_mantissa(
            m,
            scale,
            bias,
            mask,
            eps,
            reduction_axes=raxes,
            feature_axes=faxes,
            groups=(channel, self.num_groups),
            use_fast_variance=self.use_fast_variance,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            out_dtype=out_dtype,
        )


class InstanceNorm(_WeightNorm):
    """Instance normalization (Ulyanov et al. 2016), with units.

    Standardizes every channel of every sample over the sample's other axes
    (e.g. over time for ``(length, channels)``), then applies a per-channel
    ``scale`` and ``bias``. flax.nnx has this layer; brainstate does not, so the
    signature follows the other layers here.

    Parameters
    ----------
    in_size : int or sequence of int
        The shape of one sample, without the batch axis, e.g. ``(height, width, channels)``.
    feature_axes : int or sequence of int, default -1
        The channel axes (axes of ``in_size``); every other axis of
        ``in_size`` is reduced.
    epsilon : float or Quantity, default 1e-6
        Added to the variance; a float is read in the reference unit squared.
    dtype : dtype, optional
        Output (and parameter) dtype; default: the input's floating dtype.
    param_dtype : dtype, optional
        dtype of the parameters (e.g. float32 with bfloat16 activations);
        default: as ``dtype``.
    use_bias, use_scale : bool, default True
        Learn a per-channel bias / scale.
    bias_init, scale_init : initializer, default Zeros(), Constant(1.)
        Anything :func:`unitnorm.init.resolve` accepts; ``scale`` sets the
        output unit and ``bias`` must agree.
    axis_name : str or sequence of str, optional
        Combine the statistics across this mapped axis.
    axis_index_groups : sequence of sequence of int, optional
        Combine only within these device groups.
    use_fast_variance : bool, default True
        One-pass shifted variance or two passes.
    param_type : type, default NormalizationParamState
        The class holding ``weight``.
    name : str, optional
        A label.
    in_unit : brainunit.Unit, optional
        The reference unit (default: adopted from the first successful call).

    Attributes
    ----------
    weight : State or None
        ``{'scale': ..., 'bias': ...}`` shaped like the feature axes.

    Raises
    ------
    ValueError
        For a bad ``in_size``, axis or ``epsilon``, or an input or mask of the
        wrong shape.
    brainunit.UnitMismatchError
        For scale and bias of different dimensions, an input of another
        dimension than the reference unit, or an epsilon not in its square.

    See Also
    --------
    GroupNorm, LayerNorm, unitnorm.functional.instance_norm

    Notes
    -----
    ``(x - mean) / sqrt(var + epsilon)`` is dimensionless; ``mean`` has
    unit(x), ``var`` and ``epsilon`` unit(x)**2; ``scale`` sets the output
    unit and ``bias`` has the same dimension.

    Input shape and axes: the input has shape ``in_size`` or
    ``(*batch, *in_size)``, any number of leading batch axes, each slice
    normalized on its own; ``feature_axes`` name axes of ``in_size``. The
    rule, shared by every layer, is written once in :ref:`axes-rule`.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.InstanceNorm(in_size=(2, 2), epsilon=0.)     # (length, channels)
    >>> y = layer(jnp.array([[1., 10.], [3., 30.]]) * u.nS)
    >>> print(y.round(3))
    [[-1. -1.]
     [ 1.  1.]]
    """

    def __init__(
        self,
        in_size: int | Sequence[int],
        feature_axes: int | Sequence[int] = -1,
        *,
        epsilon: Any = 1e-6,
        dtype: Any = None,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = init.Zeros(),
        scale_init: Any = init.Constant(1.0),
        axis_name: str | Sequence[str] | None = None,
        axis_index_groups: Sequence[Sequence[int]] | None = None,
        use_fast_variance: bool = True,
        param_type: type = NormalizationParamState,
        name: str | None = None,
        in_unit: Any = None,
        param_dtype: Any = None,
    ):
        self._configure(
            in_size, epsilon, dtype, axis_name, axis_index_groups, use_fast_variance, name, in_unit
        )
        self._set_param_dtype(param_dtype)
        self.feature_axes = self._feature_axes(feature_axes, "feature_axes")
        self.reduction_axes = tuple(a for a in range(len(self.in_size)) if a not in self.feature_axes)
        self.use_bias, self.use_scale = bool(use_bias), bool(use_scale)
        fshape = tuple(self.in_size[a] for a in self.feature_axes)
        self.weight = self._make_weight(
            fshape, self.use_scale, self.use_bias, scale_init, bias_init, param_type
        )
        self._state_names = ("weight",) if self.weight is not None else ()
