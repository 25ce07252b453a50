"""SpectralNorm and WeightNorm: reparametrize a weight (a layer's kernel, or any array or Quantity)."""

from __future__ import annotations

from typing import Any

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unitnorm import _units, functional, init
from unitnorm.nn._base import Module
from unitnorm.nn._batch_norm import check_epsilon
from unitnorm.nn._freeze import Freezable
from unitnorm.state import BatchState, ParamState

__all__ = ["SpectralNorm", "WeightNorm"]


def _is_value(x: Any) -> bool:
    return _units.is_quantity(x) or isinstance(x, (jax.Array, np.ndarray))


def _has_value(obj: Any) -> bool:
    """Say whether obj holds a value like a State (``.value``, or flax's ``get_value()``)."""
    return (
        not _is_value(obj)
        and not isinstance(obj, dict)
        and (callable(getattr(type(obj), "get_value", None)) or hasattr(type(obj), "value"))
    )


def _get(obj: Any) -> Any:
    return obj.get_value() if callable(getattr(type(obj), "get_value", None)) else obj.value


def _put(obj: Any, value: Any) -> None:
    if callable(getattr(type(obj), "set_value", None)):
        obj.set_value(value)
    else:
        obj.value = value


def _holder_get(obj: Any, part: str) -> Any:
    if isinstance(obj, dict):
        return obj[part]
    if isinstance(obj, (list, tuple)) and part.isdigit():  # 'layers.0.kernel' in a Sequential
        return obj[int(part)]
    return getattr(obj, part)


class _Wrapper(Freezable, Module):
    """Holds the weight (``weight`` State) or a layer and the path of its parameter."""

    layer_instance: Any = None
    param: str | None = None
    #: a reparametrization of a weight, not a normalization of an input (generic layer tests skip it)
    wraps_weight: bool = True

    def _setup(self, target: Any, param: str, param_type: type) -> Any:
        who = type(self).__name__
        if _is_value(target):
            self.layer_instance, self.param = None, None
            self.weight = param_type(target)
            names = ["weight"]
        else:
            if not isinstance(param, str) or not param:
                raise TypeError(
                    f"{who}: param must be a dotted attribute path such as 'kernel', got {param!r}"
                )
            self.layer_instance, self.param = target, param
            names = []
        value = self._read()
        m, _ = _units.split(value)
        functional.check_numeric(m, who)
        if not jnp.issubdtype(m.dtype, jnp.floating):
            raise TypeError(f"{who}: the weight must be a floating array, got dtype {m.dtype}")
        return value, names

    # -- reaching the parameter --------------------------------------------------------------
    def _locate(self) -> tuple[Any, str]:
        """Return the object holding the parameter and the last name of the path."""
        obj = self.layer_instance
        *parents, last = self.param.split(".")
        for part in parents:
            try:
                obj = _holder_get(obj, part)
            except (AttributeError, KeyError, TypeError):
                raise ValueError(
                    f"{type(self).__name__}: the layer has no '{part}' on the path param={self.param!r}"
                ) from None
            if _has_value(obj) and isinstance(_get(obj), dict):
                obj = _get(obj)  # a State holding a dict: step into it
        return obj, last

    def _read(self) -> Any:
        if self.layer_instance is None:
            return self.weight.value
        obj, last = self._locate()
        try:
            value = _holder_get(obj, last)
        except (AttributeError, KeyError, TypeError):
            raise ValueError(
                f"{type(self).__name__}: the layer has no parameter at param={self.param!r}"
            ) from None
        if _has_value(value):
            value = _get(value)
        if not _is_value(value):
            raise TypeError(
                f"{type(self).__name__}: param={self.param!r} holds a {type(value).__name__}, "
                "expected an array or a Quantity"
            )
        return value

    def _write(self, new: Any) -> Any:
        """Put ``new`` where the layer's parameter is; return a function that puts the old one back."""
        parent = self.layer_instance
        *parents, last = self.param.split(".")
        for part in parents:
            parent = _holder_get(parent, part)
        holder = parent
        if _has_value(holder) and isinstance(_get(holder), dict):
            old = _get(holder)
            _put(holder, {**old, last: new})
            return lambda: _put(holder, old)
        if isinstance(holder, dict):
            old = holder[last]
            if _is_value(old):
                holder[last] = new
                return lambda: holder.__setitem__(last, old)
            old_value = _get(old)
            _put(old, new)
            return lambda: _put(old, old_value)
        current = getattr(holder, last)
        if _is_value(current):
            setattr(holder, last, new)
            return lambda: setattr(holder, last, current)
        old_value = _get(current)
        _put(current, new)
        return lambda: _put(current, old_value)

    def _run(self, normalized: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.layer_instance is None:
            if args or kwargs:
                raise TypeError(
                    f"{type(self).__name__} wraps a bare weight: call it without arguments to get the "
                    "normalized weight"
                )
            return normalized
        restore = self._write(normalized)
        try:
            return self.layer_instance(*args, **kwargs)
        finally:
            restore()

    # -- pytree: the wrapped layer is a child, not configuration --------------------------------
    def _static(self) -> tuple[tuple[str, Any], ...]:
        return tuple((k, v) for k, v in super()._static() if k != "layer_instance")

    def _flatten(self) -> tuple[tuple[Any, ...], Any]:
        children, aux = super()._flatten()
        return (*children, self.layer_instance), aux

    def _flatten_with_keys(self) -> tuple[tuple[Any, ...], Any]:
        children, aux = self._flatten()
        keys = [jax.tree_util.GetAttrKey(n) for n in (*self._state_names, "layer_instance")]
        return tuple(zip(keys, children, strict=True)), aux

    @classmethod
    def _unflatten(cls, aux: Any, children: tuple[Any, ...]) -> Module:
        names = aux[0]
        layer = children[-1] if len(children) == len(names) + 1 else None
        obj = super()._unflatten(aux, tuple(children[: len(names)]))
        obj.__dict__["layer_instance"] = layer
        return obj

    def _eps(self, unit: Any) -> Any:
        """Epsilon in ``unit**2``: a float is read in it, a Quantity converted."""
        if self.epsilon_unit is None:
            return self.epsilon
        if not _units.same_dim(self.epsilon_unit, unit**2):
            raise _units.UnitError(
                f"{type(self).__name__}: epsilon is added to squared weights, {_units.describe(unit**2)}; "
                f"got {_units.describe(self.epsilon_unit)}"
            )
        return float((self.epsilon * self.epsilon_unit).to_decimal(unit**2))


def _wider(*dtypes: Any) -> Any:
    """Return the widest floating dtype, without jax's promotion (strict mode refuses bf16 with f32)."""
    dts = {jnp.dtype(d) for d in dtypes}
    if len(dts) == 1:
        return dts.pop()
    bits = max(jnp.finfo(d).bits for d in dts)
    return jnp.dtype(jnp.float32) if bits <= 16 else next(d for d in dts if jnp.finfo(d).bits == bits)


def _l2_normalize(v: Any, eps: Any) -> Any:
    return v * lax.rsqrt(jnp.sum(v * v, keepdims=True) + eps)


class SpectralNorm(_Wrapper):
    """Spectral normalization: divide a weight by its largest singular value, found by power iteration.

    Wraps a layer (its parameter at ``param`` is replaced by the normalized
    weight for each call, then put back) or a bare weight (calling the wrapper
    returns the normalized weight). Follows ``flax.nnx.SpectralNorm``: a weight
    of more than two dimensions is flattened to ``(-1, last)``, one of fewer
    than two (or ``n_steps=0``) is returned unchanged, and ``n_steps`` power
    iterations from the stored vector ``u`` estimate ``sigma``.

    Parameters
    ----------
    layer_or_weight : layer, array or Quantity
        A callable layer holding the weight at ``param``, or the weight itself.
    param : str, default 'kernel'
        Dotted path of the weight in the layer: attributes, then keys of a dict
        (a State holding a dict is stepped into), e.g. ``'weight.weight'`` for
        a brainstate ``Linear``. Ignored for a bare weight.
    n_steps : int, default 1
        Power iterations per call.
    epsilon : float or Quantity, default 1e-12
        Added to the squared norm of each power-iteration vector. A float is
        read in the weight's unit squared; a Quantity must have that dimension.
    update_stats : bool, default True
        The initial mode: update ``u`` and ``sigma`` on each call (training
        mode). :meth:`eval` / :meth:`train`, brainstate's ``fit`` and the
        call's ``update_stats=`` override it as ``training=`` does elsewhere.
    error_on_non_matrix : bool, default False
        Raise ``ValueError`` for a weight of more than two dimensions instead
        of flattening it.
    key : jax.random key or int, default 0
        Draws the initial ``u`` as flax does: ``normal(key, (1, out)) * 0.01``.
    dtype : dtype, optional
        dtype of the normalized weight; default: the weight's.
    param_dtype : dtype, default float32
        dtype of ``u`` and ``sigma``.
    param_type, mean_type : type, default ParamState, BatchState
        Classes holding a bare weight, and ``u`` / ``sigma``.

    Attributes
    ----------
    u : State
        The right singular vector estimate, shape ``(1, out)``, dimensionless.
    sigma : State
        The largest singular value estimate, in the weight's unit.

    Raises
    ------
    ValueError
        For ``n_steps < 0``, a bad ``epsilon``, a path that does not lead to a
        weight, or a weight of more than two dimensions with
        ``error_on_non_matrix=True``.
    TypeError
        For a weight that is not a floating array or Quantity.
    brainunit.UnitMismatchError
        For a Quantity epsilon not in the weight's unit squared.

    See Also
    --------
    WeightNorm, flax.nnx.SpectralNorm

    Notes
    -----
    ``sigma = v W u^T`` carries W's unit (``u`` and ``v`` are unit vectors,
    dimensionless), so ``W / sigma`` is dimensionless whatever W's unit. A
    float epsilon is read in unit(W)**2, the unit of the squared norms it is
    added to. As in the papers and flax, ``u`` and ``v`` are constants to the
    gradient, which flows through ``sigma``. A wrapper around a bare weight is
    a complete JAX pytree and saves with :func:`unitnorm.save`; around a layer
    the layer is a pytree child (plain ``jax.jit`` works when the layer is a
    JAX pytree) and the checkpoint holds only the wrapper's States, through
    :meth:`state_dict` (save the layer with its own library).

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> w = jnp.array([[3., 0.], [0., 1.]]) * u.mS
    >>> sn = un.SpectralNorm(w, n_steps=20)
    >>> wn = sn()
    >>> print(type(wn).__name__, sn.sigma.value.unit, round(float(sn.sigma.value.mantissa), 4))
    ArrayImpl mS 3.0
    >>> round(float(jnp.linalg.norm(wn, 2)), 4)
    1.0
    """

    def __init__(
        self,
        layer_or_weight: Any,
        *,
        param: str = "kernel",
        n_steps: int = 1,
        epsilon: Any = 1e-12,
        update_stats: bool = True,
        error_on_non_matrix: bool = False,
        key: Any = 0,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        param_type: type = ParamState,
        mean_type: type = BatchState,
    ):
        who = type(self).__name__
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"{who}: n_steps must be an int >= 0, got {n_steps!r}")
        self.n_steps = int(n_steps)
        self.epsilon, self.epsilon_unit = check_epsilon(epsilon, who)
        self.error_on_non_matrix = bool(error_on_non_matrix)
        self.dtype = functional.check_dtype(dtype, who)
        self.param_dtype = functional.check_dtype(param_dtype, who)
        self.training = bool(update_stats)
        value, names = self._setup(layer_or_weight, param, param_type)
        m, unit = _units.split(value)
        if self.epsilon_unit is not None:
            self._eps(unit)
        self._matrix_shape(m.shape)
        if m.ndim >= 2 and self.n_steps >= 1:
            if isinstance(key, (int, np.integer)):
                key = jax.random.key(int(key))
            out = m.shape[-1]
            self.u = mean_type(jax.random.normal(key, (1, out), self.param_dtype) * 0.01)
            self.sigma = mean_type(_units.restore(jnp.ones((), self.param_dtype), unit))
            names += ["u", "sigma"]
        self._state_names = tuple(names)

    def _matrix_shape(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        if len(shape) > 2 and self.error_on_non_matrix:
            raise ValueError(
                f"{type(self).__name__}: the weight has {len(shape)} dimensions {tuple(shape)} but "
                "error_on_non_matrix=True; spectral normalization needs a matrix"
            )
        return None if len(shape) < 2 else (-1, shape[-1])

    def __call__(self, *args: Any, update_stats: bool | None = None, **kwargs: Any) -> Any:
        """Normalize the weight; call the wrapped layer with it (or return it, for a bare weight).

        Parameters
        ----------
        *args, **kwargs
            Passed to the wrapped layer.
        update_stats : bool, optional
            Overrides the mode for this call: store the new ``u`` and ``sigma``.

        Returns
        -------
        Any
            The layer's output, or the normalized weight.
        """
        wn, commit = self._normalize(self._is_training(update_stats))
        out = self._run(wn, args, kwargs)
        commit()  # the layer ran: only now store the new iterate (a failed call changes no State)
        return out

    def normalized(self, *, update_stats: bool | None = None) -> Any:
        """Return the normalized weight (``W / sigma``), updating ``u`` and ``sigma`` in training mode."""
        wn, commit = self._normalize(self._is_training(update_stats))
        commit()
        return wn

    def _normalize(self, update: bool) -> tuple[Any, Any]:
        """Return the normalized weight and a function storing the new ``u`` and ``sigma`` (if ``update``)."""
        value = self._read()
        m, unit = _units.split(value)
        flat = self._matrix_shape(m.shape)
        if flat is None or self.n_steps < 1 or "u" not in self._state_names:
            return value, lambda: None
        eps = self._eps(unit)
        cdt = _wider(functional.stats_dtype(m.dtype), self.u.value.dtype)
        w = m.reshape(flat).astype(cdt)
        uu = jnp.asarray(self.u.value).astype(cdt)
        if uu.shape != (1, flat[1]):
            raise ValueError(
                f"{type(self).__name__}: the weight's last axis changed from {uu.shape[1]} to {flat[1]}"
            )
        v = uu
        for _ in range(self.n_steps):
            v = _l2_normalize(uu @ w.T, eps)
            uu = _l2_normalize(v @ w, eps)
        uu, v = lax.stop_gradient(uu), lax.stop_gradient(v)
        sigma = (v @ w @ uu.T)[0, 0]
        wn = (w / jnp.where(sigma != 0, sigma, jnp.ones_like(sigma))).reshape(m.shape)
        wn = wn.astype(self.dtype or m.dtype)

        def commit() -> None:
            if update:
                self.u.value = uu.astype(self.u.value.dtype)
                self.sigma.value = _units.restore(sigma.astype(_units.split(self.sigma.value)[0].dtype), unit)

        return wn, commit


class WeightNorm(_Wrapper):
    """Weight normalization: ``scale * v / ||v||``, the norm taken over all axes but ``feature_axes``.

    Wraps a layer (its parameter at ``param`` is replaced by the normalized
    weight for each call, then put back) or a bare weight (calling the wrapper
    returns the normalized weight), like ``flax.nnx.WeightNorm``.

    Parameters
    ----------
    layer_or_weight : layer, array or Quantity
        A callable layer holding the weight ``v`` at ``param``, or ``v`` itself.
    param : str, default 'kernel'
        Dotted path of the weight in the layer (see :class:`SpectralNorm`).
    feature_axes : int, sequence of int or None, default -1
        Axes of ``v`` that keep separate norms (and the shape of ``scale``);
        ``None`` takes one norm over the whole weight.
    use_scale : bool, default True
        Multiply by a learned gain ``scale``.
    scale_init : initializer, default Ones()
        Anything :func:`unitnorm.init.resolve` accepts; its unit is the
        normalized weight's unit.
    epsilon : float or Quantity, default 1e-12
        Added to the squared norm; a float is read in unit(v)**2.
    dtype : dtype, optional
        dtype of the normalized weight; default: the weight's.
    param_dtype : dtype, default float32
        dtype of ``scale``.
    param_type : type, default ParamState
        Class holding ``scale`` (and a bare weight).

    Attributes
    ----------
    scale : State or None
        The gain, shape of the feature axes.

    Raises
    ------
    ValueError
        For a bad ``feature_axes``, ``epsilon`` or path.
    TypeError
        For a weight that is not a floating array or Quantity.
    brainunit.UnitMismatchError
        For a Quantity epsilon not in the weight's unit squared.

    See Also
    --------
    SpectralNorm, flax.nnx.WeightNorm, unitnorm.weight_standardization

    Notes
    -----
    ``||v||`` carries v's unit, so ``v / ||v||`` is dimensionless and the
    result has the unit of ``scale`` (dimensionless by default). A float
    epsilon is read in unit(v)**2. The gradient flows through the norm, as in
    Salimans and Kingma (2016).

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> v = jnp.array([[3., 0.], [4., 2.]]) * u.mV
    >>> wn = un.WeightNorm(v, scale_init=un.init.Constant(2.0 * u.nS))
    >>> w = wn()
    >>> print(w.unit, [[round(x, 3) for x in row] for row in w.mantissa.tolist()])
    nS [[1.2, 0.0], [1.6, 2.0]]
    """

    def __init__(
        self,
        layer_or_weight: Any,
        *,
        param: str = "kernel",
        feature_axes: int | tuple[int, ...] | None = -1,
        use_scale: bool = True,
        scale_init: Any = init.Ones(),
        epsilon: Any = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        param_type: type = ParamState,
    ):
        who = type(self).__name__
        self.epsilon, self.epsilon_unit = check_epsilon(epsilon, who)
        self.dtype = functional.check_dtype(dtype, who)
        self.param_dtype = functional.check_dtype(param_dtype, who)
        self.use_scale = bool(use_scale)
        value, names = self._setup(layer_or_weight, param, param_type)
        m, unit = _units.split(value)
        if self.epsilon_unit is not None:
            self._eps(unit)
        self.feature_axes = (
            () if feature_axes is None else functional.canonical_axes(feature_axes, m.ndim, "feature_axes")
        )
        self.scale = None
        if self.use_scale:
            shape = tuple(m.shape[a] for a in self.feature_axes)
            try:
                scale = init.resolve(scale_init, shape, self.param_dtype)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{who}: scale_init: {err}") from None
            self.scale = param_type(scale)
            names.append("scale")
        self._state_names = tuple(names)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Normalize the weight; call the wrapped layer with it (or return it, for a bare weight).

        Parameters
        ----------
        *args, **kwargs
            Passed to the wrapped layer.

        Returns
        -------
        Any
            The layer's output, or the normalized weight.
        """
        return self._run(self.normalized(), args, kwargs)

    def normalized(self) -> Any:
        """Return ``scale * v / ||v||``."""
        m, unit = _units.split(self._read())
        eps = self._eps(unit)
        raxes = tuple(a for a in range(m.ndim) if a not in self.feature_axes)
        cdt = functional.stats_dtype(m.dtype)
        w = m.astype(cdt)
        out = w * lax.rsqrt(jnp.sum(w * w, axis=raxes, keepdims=True) + eps)
        out_unit = _units.UNITLESS
        if self.use_scale:
            s, out_unit = _units.split(self._frozen_affine(self.scale.value)[0])
            bshape = tuple(m.shape[a] if a in self.feature_axes else 1 for a in range(m.ndim))
            out = out * s.astype(cdt).reshape(bshape)
        dtype = self.dtype or _wider(m.dtype, self.param_dtype if self.use_scale else m.dtype)
        return _units.restore(out.astype(dtype), out_unit)


_ = u  # brainunit is part of this module's documented types
