"""Exponential moving standardization (Schirrmeister et al. 2017), with units, for jax.

Both recurrences are first-order and linear with a constant factor ``r = 1 - factor_new``,
so a block of ``B`` samples is solved in closed form by one product with the
lower-triangular ``B x B`` matrix of powers of ``r``, and blocks are chained by their last
values. Two solvers share that block solution: on CPU the blocks run in a
``lax.fori_loop`` (one read of the input, the output written in place: the fastest and
most accurate form measured, see ``benchmarks/bench_ems.py``); on other backends the block
ends are solved by the same method recursively, on a sequence ``B`` times shorter, so no
sequential loop over time remains.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unitnorm import _units
from unitnorm.functional import check_numeric, output_dtype, stats_dtype

__all__ = ["ExponentialMovingStandardizer", "exponential_moving_standardize"]

#: Samples per block of the blocked solver (chosen by ``benchmarks/bench_ems.py`` on CPU).
BLOCK = 32

_HIGHEST = jax.lax.Precision.HIGHEST  # float32 products stay float32 on GPUs (no TF32)


# ----------------------------------------------------------------------------
# configuration checks (Python level, before any math)


def _check_factor_new(factor_new: Any, who: str) -> None:
    if isinstance(factor_new, jax.core.Tracer):
        return
    if isinstance(factor_new, bool) or not isinstance(factor_new, (numbers.Real, np.floating, np.integer)):
        if not (hasattr(factor_new, "dtype") and np.ndim(factor_new) == 0):
            raise TypeError(f"{who}: factor_new must be a number in (0, 1], got {factor_new!r:.40}")
    value = float(factor_new)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{who}: factor_new must be in (0, 1], got {value!r}")


def _check_init_block_size(init_block_size: Any, who: str) -> int | None:
    if init_block_size is None:
        return None
    if isinstance(init_block_size, (bool, np.bool_)) or not isinstance(
        init_block_size, (numbers.Integral, np.integer)
    ):
        raise TypeError(
            f"{who}: init_block_size must be a positive int or None, got "
            f"{type(init_block_size).__name__} {init_block_size!r:.40}"
        )
    if int(init_block_size) < 1:
        raise ValueError(f"{who}: init_block_size must be a positive int or None, got {int(init_block_size)}")
    return int(init_block_size)


def _check_eps(eps: Any, who: str) -> None:
    if _units.is_quantity(eps):
        if isinstance(eps.mantissa, jax.core.Tracer):
            return
        value = np.asarray(eps.mantissa)
    elif isinstance(eps, jax.core.Tracer):
        return
    elif isinstance(eps, (bool, np.bool_)) or not (
        isinstance(eps, (numbers.Real, np.floating, np.integer))
        or (hasattr(eps, "dtype") and np.ndim(eps) == 0 and np.issubdtype(eps.dtype, np.number))
    ):
        raise TypeError(
            f"{who}: eps must be a number (read in the data's unit) or a Quantity, got {eps!r:.40}"
        )
    else:
        value = np.asarray(eps)
    if value.ndim != 0:
        raise ValueError(f"{who}: eps must be a scalar, got shape {value.shape}")
    if isinstance(value.item(), complex) or not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"{who}: eps must be finite and >= 0, got {value.item()!r}")


def _eps_mantissa(eps: Any, unit: Any, who: str) -> Any:
    """``eps`` in the data's unit ``U`` (it bounds a standard deviation, so it is in ``U``, not ``U**2``)."""
    if _units.is_quantity(eps):
        return _units.to_mantissa(eps, unit, what="eps", expected=who)
    return eps


def _split_data(x: Any, who: str) -> tuple[jax.Array, Any]:
    try:
        m, unit = _units.split(x)
    except TypeError as err:
        raise TypeError(f"{who}: {err}") from None
    check_numeric(m, who)
    if jnp.issubdtype(m.dtype, jnp.complexfloating):
        raise TypeError(f"{who} expected a real-valued array, got dtype {m.dtype}")
    if m.ndim < 1:
        raise ValueError(f"{who} expected an array of shape (time, channels) or (time,), got a scalar")
    return m, unit


# ----------------------------------------------------------------------------
# the linear recurrence y_t = r * y_{t-1} + b_t (y_{-1} = 0), solved in blocks


def _decay_matrix(log_r: jax.Array, n: int) -> jax.Array:
    """Return the ``n x n`` matrix with ``r**(i - j)`` on and below the diagonal, 0 above."""
    i = jnp.arange(n)[:, None]
    j = jnp.arange(n)[None, :]
    lag = (i - j).astype(log_r.dtype)
    # the diagonal is written as 1 so that r = 0 (factor_new = 1, log_r = -inf) gives no 0 * inf
    below = jnp.exp(jnp.where(i > j, lag, 1.0) * log_r)
    return jnp.where(i > j, below, jnp.where(i == j, 1.0, 0.0)).astype(log_r.dtype)


def _linear_recurrence(b: jax.Array, log_r: jax.Array, block: int) -> jax.Array:
    """Solve ``y_t = exp(log_r) * y_{t-1} + b_t`` along axis 0 of ``b`` (shape ``(T, C)``), from 0.

    Each block of ``block`` samples is one product with :func:`_decay_matrix`; the block
    ends follow the same recurrence with ``r**block`` and are solved by a recursive call
    on a sequence ``block`` times shorter. All weights are powers of ``r`` in [0, 1], so
    the result is a positive combination of the ``b``; powers that underflow to 0 drop
    terms whose true weight is below the dtype's smallest normal number.
    """
    n = b.shape[0]
    if n <= block:
        return jnp.matmul(_decay_matrix(log_r, n), b, precision=_HIGHEST)
    n_blocks = -(-n // block)
    padded = jnp.pad(b, ((0, n_blocks * block - n), (0, 0)))  # zeros after the end change nothing before it
    blocks = padded.reshape(n_blocks, block, b.shape[1])
    local = jnp.einsum("ij,njc->nic", _decay_matrix(log_r, block), blocks, precision=_HIGHEST)
    ends = _linear_recurrence(local[:, -1, :], log_r * block, block)  # y at the end of every block
    before = jnp.concatenate([jnp.zeros_like(ends[:1]), ends[:-1]])  # y just before every block
    powers = jnp.exp(jnp.arange(1, block + 1, dtype=log_r.dtype) * log_r)  # r**1 ... r**block
    out = local + powers[None, :, None] * before[:, None, :]
    return out.reshape(n_blocks * block, b.shape[1])[:n]


# ----------------------------------------------------------------------------
# the standardization on mantissas: a state in, outputs and a state out


def _fresh_state(first_row: jax.Array, dtype: Any) -> dict[str, jax.Array]:
    """Return the state before any sample: the shift is the first sample (0 where it is not finite)."""
    first_row = first_row.astype(dtype)
    zeros = jnp.zeros_like(first_row)
    return {
        "shift": jnp.where(jnp.isfinite(first_row), first_row, zeros),
        "mean": zeros,  # weighted mean, minus the shift
        "var": zeros,  # weighted mean of the squared deviations
        "weight": jnp.zeros((), dtype),  # sum of the weights (1 - factor_new)**i seen so far
    }


def _rows(start: Any, n: int, ctx: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    """For rows ``start ... start + n - 1``: which are padding or non-finite, and ``log`` of their decay.

    The decay of a row is ``(1 - a)**k`` with ``k`` the number of real rows from ``start`` to
    it, inclusive: padding rows at the front (``ctx["lead"]`` of them) leave the
    running sums exactly as they were.
    """
    idx = start + jnp.arange(n)[:, None]
    bad = (idx < ctx["lead"]) | (idx >= ctx["first_bad"])
    k = idx - jnp.maximum(start, ctx["lead"]) + 1
    log_decay = jnp.where(k > 0, k.astype(ctx["log_r"].dtype) * ctx["log_r"], 0.0)
    return bad, log_decay


def _block_solve(
    x: jax.Array, start: Any, ctx: dict[str, Any], carry: tuple[jax.Array, ...]
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Solve samples ``start ... start + len(x) - 1`` in closed form, after ``carry = (N, S, D)``.

    ``N`` and ``S`` are the unnormalized weighted sums of the shifted samples and of the
    squared deviations, ``D`` the sum of the weights (per channel). Returns the outputs and
    ``(N, S, D)`` at the block's last sample.
    """
    n_prev, s_prev, d_prev = carry
    log_r, alpha, eps = ctx["log_r"], ctx["alpha"], ctx["eps"]
    bad, k = _rows(start, x.shape[0], ctx)
    xs = jnp.where(bad, 0.0, x - ctx["shift"])
    decay_matrix = _decay_matrix(log_r, x.shape[0])
    decay = jnp.exp(k)  # (1 - a)**(t + 1): the weight left on what came before the block
    weight = decay * d_prev + -jnp.expm1(k) / alpha  # D_t in closed form
    n_sum = jnp.matmul(decay_matrix, xs, precision=_HIGHEST) + decay * n_prev
    dev = jnp.where(bad, 0.0, xs - n_sum / weight)
    s_sum = jnp.matmul(decay_matrix, dev * dev, precision=_HIGHEST) + decay * s_prev
    out = dev / jnp.sqrt(jnp.maximum(s_sum / weight, eps * eps))
    return jnp.where(bad, jnp.nan, out), (n_sum[-1], s_sum[-1], weight[-1])


def _solve_loop(
    x: jax.Array, ctx: dict[str, Any], carry: tuple[jax.Array, ...], block: int
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Blocks in sequence (``lax.fori_loop``), each in closed form, written in place; fastest on CPU."""
    n = x.shape[0]
    n_full = n // block

    def body(i: Any, loop_carry: tuple[Any, jax.Array]) -> tuple[Any, jax.Array]:
        sums, out = loop_carry
        start = i * block
        y, sums = _block_solve(jax.lax.dynamic_slice_in_dim(x, start, block), start, ctx, sums)
        return sums, jax.lax.dynamic_update_slice_in_dim(out, y, start, axis=0)

    out = jnp.empty_like(x)
    if n_full:
        carry, out = jax.lax.fori_loop(0, n_full, body, (carry, out))
    if n_full * block < n:  # the last, shorter block
        y, carry = _block_solve(x[n_full * block :], n_full * block, ctx, carry)
        out = jax.lax.dynamic_update_slice_in_dim(out, y, n_full * block, axis=0)
    return out, carry


def _solve_parallel(
    x: jax.Array, ctx: dict[str, Any], carry: tuple[jax.Array, ...], block: int
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """No loop over time (:func:`_linear_recurrence`); for GPUs and TPUs."""
    n_prev, s_prev, d_prev = carry
    log_r, alpha, eps = ctx["log_r"], ctx["alpha"], ctx["eps"]
    bad, k = _rows(0, x.shape[0], ctx)
    xs = jnp.where(bad, 0.0, x - ctx["shift"])
    decay = jnp.exp(k)
    weight = decay * d_prev + -jnp.expm1(k) / alpha
    n_sum = _linear_recurrence(xs, log_r, block) + decay * n_prev
    dev = jnp.where(bad, 0.0, xs - n_sum / weight)
    s_sum = _linear_recurrence(dev * dev, log_r, block) + decay * s_prev
    out = dev / jnp.sqrt(jnp.maximum(s_sum / weight, eps * eps))
    return jnp.where(bad, jnp.nan, out), (n_sum[-1], s_sum[-1], weight[-1])


def _default_method() -> tuple[str, int]:
    """Return the solver and block size for the default backend: measured on CPU, not yet on GPU."""
    if jax.default_backend() == "cpu":
        return "loop", BLOCK
    return "parallel", BLOCK


@partial(jax.jit, static_argnames=("method", "block"))
def _ems_step(
    x: jax.Array,
    state: dict[str, jax.Array],
    factor_new: Any,
    eps: Any,
    method: str = "loop",
    block: int = BLOCK,
    lead: Any = 0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Standardize ``x`` (``(T, C)``, T >= 1, compute dtype) after ``state``; return outputs and new state.

    The first ``lead`` rows of ``x`` are padding (outputs NaN, state untouched): the
    stream pads chunks to a few sizes so that it compiles a few times, not once per length.
    """
    dtype = x.dtype
    alpha = jnp.asarray(factor_new, dtype)
    log_r = jnp.log1p(-alpha)  # log(1 - factor_new); -inf when factor_new = 1
    eps = jnp.asarray(eps, dtype)
    # channels already NaN stay NaN; a non-finite sample makes its channel NaN from there on
    poisoned = ~(jnp.isfinite(state["mean"]) & jnp.isfinite(state["var"]))
    nonfinite = ~jnp.isfinite(x)
    first_bad = jnp.where(jnp.any(nonfinite, axis=0), jnp.argmax(nonfinite, axis=0), x.shape[0])
    ctx = {
        "log_r": log_r,
        "alpha": alpha,
        "eps": eps,
        "shift": state["shift"],
        "first_bad": jnp.where(poisoned, 0, first_bad),
        "lead": lead,
    }
    weight = state["weight"]
    carry = (
        jnp.where(poisoned, 0.0, state["mean"]) * weight,
        jnp.where(poisoned, 0.0, state["var"]) * weight,
        jnp.broadcast_to(weight, state["mean"].shape),
    )
    solve = _solve_loop if method == "loop" else _solve_parallel
    out, (n_sum, s_sum, weight) = solve(x, ctx, carry, block)
    bad_end = first_bad < x.shape[0]
    new_state = {
        "shift": state["shift"],
        "mean": jnp.where(bad_end | poisoned, jnp.nan, n_sum / weight),
        "var": jnp.where(bad_end | poisoned, jnp.nan, s_sum / weight),
        "weight": weight[0],
    }
    return out, new_state


@jax.jit
def _standardize_block(xs: jax.Array, eps: Any) -> jax.Array:
    """Plain standardization of a block by its own mean and std (ddof 0), std floored at ``eps``."""
    mean = jnp.mean(xs, axis=0)
    dev = xs - mean
    var = jnp.mean(dev * dev, axis=0)
    eps = jnp.asarray(eps, xs.dtype)
    return dev / jnp.sqrt(jnp.maximum(var, eps * eps))


def _ems_mantissa(m: jax.Array, factor_new: Any, init_block_size: int | None, eps: Any) -> jax.Array:
    """Whole-array EMS on a mantissa of shape ``(time, ...)``; returns the compute dtype."""
    dtype = stats_dtype(m.dtype)
    flat = m.reshape(m.shape[0], math.prod(m.shape[1:])).astype(dtype)
    if flat.shape[0] == 0:
        return flat.reshape(m.shape)
    method, block = _default_method()
    out, _ = _ems_step(flat, _fresh_state(flat[0], dtype), factor_new, eps, method=method, block=block)
    if init_block_size is not None:
        head = flat[:init_block_size] - flat[0]
        out = out.at[: head.shape[0]].set(_standardize_block(head, eps))
    return out.reshape(m.shape)


# ----------------------------------------------------------------------------
# public API


def exponential_moving_standardize(
    x: Any, factor_new: Any = 1e-3, init_block_size: int | None = None, eps: Any = 1e-4
) -> jax.Array:
    r"""Standardize a recording by an exponentially weighted running mean and variance.

    The exponential moving standardization of Schirrmeister et al. (2017), computed as
    Braindecode's ``exponential_moving_standardize`` computes it, but on ``(time, channels)``
    (Braindecode takes ``(channels, time)``) and with units. Each sample is centred and
    scaled by statistics of the samples up to and including it, so the transform is
    causal and follows slow drifts of offset and amplitude.

    Parameters
    ----------
    x : Quantity or array_like
        The recording, shape ``(time, channels)`` or ``(time,)`` (any trailing shape is
        treated as channels); time is axis 0. Integers are promoted to float32.
    factor_new : float, default 1e-3
        The weight ``a`` of the newest sample, in (0, 1]. The statistics forget with a
        time constant of about ``1 / a`` samples.
    init_block_size : int, optional
        When given, the first ``init_block_size`` samples are instead standardized with the
        mean and the (ddof 0) standard deviation of those samples. The running statistics
        still start at sample 0.
    eps : float or Quantity, default 1e-4
        Floor of the standard deviation: the output is ``(x - m) / max(sqrt(v), eps)``. A
        Quantity must have the dimension of ``x`` and is converted; a float is read in
        ``x``'s unit, as Braindecode reads it (in whatever unit the data happen to be) — so
        prefer a Quantity.

    Returns
    -------
    jax.Array
        Dimensionless standardized values, a plain array of ``x``'s shape, in ``x``'s
        floating dtype (float32 for integers).

    Raises
    ------
    ValueError
        If ``factor_new`` is not in (0, 1], ``init_block_size`` is not a positive int,
        ``eps`` is negative or not finite, or ``x`` is a scalar.
    TypeError
        If ``x`` is not a real numeric array or Quantity, or a setting has the wrong kind.
    brainunit.UnitMismatchError
        If ``eps`` is a Quantity whose dimension differs from ``x``'s.

    See Also
    --------
    ExponentialMovingStandardizer : the same, chunk by chunk over a stream.

    Notes
    -----
    With ``a = factor_new`` and weights ``w_i = (1 - a)**i``, the running mean and
    variance at sample ``t`` are the weighted averages (pandas' ``ewm(alpha=a)`` with its
    default ``adjust=True``, or Braindecode's ratio of two ``lfilter`` outputs)

    .. math::

        m_t = \frac{\sum_{i=0}^{t} w_i\, x_{t-i}}{D_t}, \qquad
        v_t = \frac{\sum_{i=0}^{t} w_i\, (x_{t-i} - m_{t-i})^2}{D_t}, \qquad
        D_t = \sum_{i=0}^{t} w_i = \frac{1 - (1 - a)^{t+1}}{a},

    computed as the first-order recurrences ``N_t = (1 - a) N_{t-1} + x_t``,
    ``S_t = (1 - a) S_{t-1} + (x_t - m_t)**2``, ``D_t = (1 - a) D_{t-1} + 1`` with
    ``m_t = N_t / D_t`` and ``v_t = S_t / D_t``; the output is
    ``y_t = (x_t - m_t) / max(sqrt(v_t), eps)``. So the first output is 0, and early
    outputs use few samples (no warm-up period is dropped).

    Units: ``m_t`` is in ``U`` (the unit of ``x``), ``v_t`` in ``U**2``, ``eps`` in ``U`` —
    a standard deviation's floor, unlike the layers' ``epsilon`` which is added to a
    variance — and ``y_t`` is dimensionless. Hence data in V and in µV give the same
    output only when ``eps`` is a Quantity; with a float ``eps`` the same number means
    1e-4 V for the one and 1e-4 µV for the other.

    Numerics: the recurrences are solved in blocks of matrix products (no loop over time)
    in float32, or float64 for float64 input. The data are shifted by their first sample
    first (the statistics do not change), so an offset far from zero costs no digits.

    NaN and infinity: from the first non-finite sample of a channel on, that channel's
    output is NaN (as in Braindecode's lfilter version); other channels are unaffected.

    References
    ----------
    Schirrmeister, R. T. et al. (2017). Deep learning with convolutional neural networks
    for EEG decoding and visualization. Human Brain Mapping 38(11), 5391-5420.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> from unitnorm.preprocessing import exponential_moving_standardize
    >>> x = jnp.array([[1.0], [3.0], [2.0], [6.0]]) * u.mV
    >>> y = exponential_moving_standardize(x, factor_new=0.5, eps=1e-3 * u.mV)
    >>> [round(float(v), 3) for v in y[:, 0]]  # m = 1, 7/3, 15/7, 4.2; v = 0, 8/27, ...
    [0.0, 1.225, -0.384, 1.344]
    >>> y_volt = exponential_moving_standardize(x.in_unit(u.volt), factor_new=0.5, eps=1e-3 * u.mV)
    >>> bool(jnp.allclose(y, y_volt))
    True
    """
    who = "exponential_moving_standardize"
    _check_factor_new(factor_new, who)
    init_block_size = _check_init_block_size(init_block_size, who)
    _check_eps(eps, who)
    m, unit = _split_data(x, who)
    eps_m = _eps_mantissa(eps, unit, who)
    out = _ems_mantissa(m, factor_new, init_block_size, eps_m)
    return out.astype(output_dtype(m.dtype))


def _bucket(n: int) -> int:
    """Round a chunk length up to one of a few sizes (at most 1/8 more, at least 64)."""
    if n <= 64:
        return 64
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


class ExponentialMovingStandardizer:
    """Exponential moving standardization over a stream, chunk by chunk.

    :func:`exponential_moving_standardize` for recordings that arrive in pieces: the
    running statistics (shifted weighted mean, variance and the sum of the weights, one
    value per channel) are carried from one :meth:`partial_transform` call to the next,
    so the outputs of the chunks, put end to end, equal the whole-array result.

    Parameters
    ----------
    factor_new : float, default 1e-3
        The weight of the newest sample, in (0, 1].
    init_block_size : int, optional
        Standardize the first ``init_block_size`` samples with their own mean and (ddof 0)
        standard deviation. Those outputs depend on the whole block, so they are held back
        until the block is complete (see :meth:`partial_transform`).
    eps : float or Quantity, default 1e-4
        Floor of the standard deviation, a Quantity of the data's dimension (converted) or
        a float read in the stream's unit. Prefer a Quantity.

    Attributes
    ----------
    unit_ : brainunit.Unit or None
        The stream's unit, adopted from the first chunk (``None`` before it).
    n_samples_seen_ : int
        Samples received since the last :meth:`reset`.
    pending : int
        Samples of the initial block received but not yet returned.

    Raises
    ------
    ValueError
        If ``factor_new`` is not in (0, 1], ``init_block_size`` is not a positive int, or
        ``eps`` is negative or not finite.
    TypeError
        If a setting has the wrong kind.

    See Also
    --------
    exponential_moving_standardize : the formula, its units and its numerics.

    Notes
    -----
    The state is the shift (the stream's first sample), the weighted mean ``m`` (in the
    unit ``U``), the weighted variance ``v`` (``U**2``) and the weight ``D`` (a number);
    while the initial block fills, also its samples. A chunk in another unit of the same
    dimension (µV into a V stream) is converted to the stream's unit first; a chunk of
    another dimension, shape or kind raises and leaves the state as it was.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, numpy as np
    >>> from unitnorm.preprocessing import ExponentialMovingStandardizer, exponential_moving_standardize
    >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(1000, 2)), jnp.float32) * u.mV
    >>> ems = ExponentialMovingStandardizer(factor_new=0.01, init_block_size=100, eps=1e-4 * u.mV)
    >>> [ems.partial_transform(x[i : i + 300]).shape[0] for i in range(0, 1000, 300)]
    [300, 300, 300, 100]
    >>> first = ems.partial_transform(x[:0])  # an empty chunk changes nothing
    >>> ems.reset()
    >>> parts = [ems.partial_transform(x[i : i + 64]) for i in range(0, 1000, 64)]
    >>> parts[0].shape  # the first 64 samples wait for the block of 100 to fill
    (0, 2)
    >>> whole = exponential_moving_standardize(x, 0.01, 100, 1e-4 * u.mV)
    >>> bool(jnp.allclose(jnp.concatenate(parts), whole, atol=1e-5))
    True
    """

    _WHO = "ExponentialMovingStandardizer"

    def __init__(self, *, factor_new: Any = 1e-3, init_block_size: int | None = None, eps: Any = 1e-4):
        _check_factor_new(factor_new, self._WHO)
        self.init_block_size = _check_init_block_size(init_block_size, self._WHO)
        _check_eps(eps, self._WHO)
        self.factor_new = factor_new
        self.eps = eps
        self.reset()

    def _display_parts(self) -> tuple[list[tuple[str, Any]], list[tuple[str, str]] | None]:
        from unitnorm import _display

        params = [(k, getattr(self, k)) for k in ("factor_new", "init_block_size", "eps")]
        if self._state is None:
            return params, None
        fitted = [
            ("unit_", _display.unit_text(self.unit_) or "dimensionless"),
            ("n_samples_seen_", str(self.n_samples_seen_)),
        ]
        return params, fitted + _display.fitted_fields([("mean_", self.mean_), ("var_", self.var_)])

    def __repr__(self) -> str:
        from unitnorm import _display

        params, fitted = self._display_parts()
        return _display.scaler_repr(self._WHO, _display.changed_params(self, params), fitted)

    def _repr_html_(self) -> str:
        from unitnorm import _display

        return _display.scaler_html(self._WHO, *self._display_parts())

    def reset(self) -> None:
        """Forget the stream: the next chunk starts from a fresh state and may have any unit."""
        self.unit_ = None
        self.n_samples_seen_ = 0
        self._state: dict[str, jax.Array] | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: Any = None
        self._held: list[jax.Array] = []  # shifted samples of the initial block, not yet returned
        self._block_done = False  # flush() closed the initial block early

    @property
    def pending(self) -> int:
        """Samples of the initial block received but not yet returned."""
        return sum(int(h.shape[0]) for h in self._held)

    # statistics, for inspection

    @property
    def mean_(self) -> Any:
        """The running weighted mean after the last sample, in :attr:`unit_` (``None`` before any)."""
        if self._state is None:
            return None
        return _units.restore(self._state["mean"] + self._state["shift"], self.unit_).reshape(self._shape)

    @property
    def var_(self) -> Any:
        """The running weighted variance after the last sample, in :attr:`unit_` squared."""
        if self._state is None:
            return None
        return _units.restore(self._state["var"], self.unit_**2).reshape(self._shape)

    # the stream

    def _chunk_mantissa(self, chunk: Any) -> tuple[jax.Array, Any]:
        """Check ``chunk`` against the stream (kind, unit, shape) and return its mantissa, unit."""
        m, unit = _split_data(chunk, self._WHO)
        if self.unit_ is None:
            return m, unit
        if unit != self.unit_:
            m = _units.to_mantissa(
                chunk, self.unit_, what="chunk", expected=f"{self._WHO} (stream in {self.unit_})"
            )
        if tuple(m.shape[1:]) != self._shape:
            raise ValueError(
                f"{self._WHO}: expected chunks of shape (time, {', '.join(map(str, self._shape))}) "
                f"like the first one, got {tuple(m.shape)}"
            )
        return m, self.unit_

    def partial_transform(self, chunk: Any) -> jax.Array:
        """Standardize the next chunk of the stream and carry the statistics on.

        Parameters
        ----------
        chunk : Quantity or array_like
            The next samples, shape ``(time, channels)`` (or ``(time,)``); the first chunk
            fixes the unit and the channel shape.

        Returns
        -------
        jax.Array
            Dimensionless outputs, a plain array in the chunk's floating dtype. Without
            ``init_block_size`` it has the chunk's shape. With it, the samples of the
            initial block are held back until the block is complete, then returned at
            the front of that call's output; so the outputs of all calls, concatenated,
            are the whole stream's, and early calls may return ``(0, channels)``. Call
            :meth:`flush` at the end of a stream shorter than the block.

        Raises
        ------
        brainunit.UnitMismatchError
            If the chunk's dimension differs from the stream's.
        ValueError
            If its channel shape differs from the first chunk's, or it is a scalar.
        TypeError
            If it is not a real numeric array or Quantity.
        """
        m, unit = self._chunk_mantissa(chunk)
        eps = _eps_mantissa(self.eps, unit, self._WHO)
        dtype = self._dtype if self._dtype is not None else stats_dtype(m.dtype)
        out_dtype = output_dtype(m.dtype)
        shape = tuple(m.shape[1:])
        flat = m.reshape(m.shape[0], math.prod(m.shape[1:])).astype(dtype)
        n = flat.shape[0]
        if n == 0:
            return jnp.zeros((0, *shape), out_dtype)
        state = self._state if self._state is not None else _fresh_state(flat[0], dtype)
        method, block = _default_method()
        lead = _bucket(n) - n  # pad at the front: a few compiled sizes serve every chunk length
        padded = jnp.concatenate([jnp.zeros((lead, flat.shape[1]), dtype), flat]) if lead else flat
        out, new_state = _ems_step(padded, state, self.factor_new, eps, method=method, block=block, lead=lead)
        out = out[lead:]
        held = list(self._held)
        size = self.init_block_size
        if size is not None and not self._block_done and self.n_samples_seen_ < size:
            take = min(size - self.n_samples_seen_, n)
            held.append(flat[:take] - state["shift"])
            out = out[take:]
            if self.n_samples_seen_ + take == size:  # the block is complete: release it
                out = jnp.concatenate([_standardize_block(jnp.concatenate(held), eps), out])
                held = []
        # nothing above has changed the object; commit the new state at once
        self._state, self._held = new_state, held
        self.unit_, self._shape, self._dtype = unit, shape, dtype
        self.n_samples_seen_ += n
        return out.reshape(out.shape[0], *shape).astype(out_dtype)

    def flush(self) -> jax.Array:
        """Return the held samples of an initial block that the stream ended before filling.

        They are standardized with the mean and standard deviation of the samples held, as
        :func:`exponential_moving_standardize` does for a recording shorter than
        ``init_block_size``. The running statistics are kept; a later chunk continues the
        stream (its samples are no longer held).

        Returns
        -------
        jax.Array
            Outputs of shape ``(pending, channels)``; ``(0, channels)`` when nothing is held.
        """
        if not self._held:
            return jnp.zeros((0, *(self._shape or ())), self._dtype or jnp.float32)
        eps = _eps_mantissa(self.eps, self.unit_, self._WHO)
        out = _standardize_block(jnp.concatenate(self._held), eps)
        self._held = []
        self._block_done = True
        return out.reshape(out.shape[0], *self._shape)

    def transform(self, x: Any) -> jax.Array:
        """Standardize a whole recording from a fresh state (the stream is neither read nor changed).

        Parameters
        ----------
        x : Quantity or array_like
            The recording, ``(time, channels)`` or ``(time,)``.

        Returns
        -------
        jax.Array
            ``exponential_moving_standardize(x, factor_new, init_block_size, eps)``.
        """
        return exponential_moving_standardize(x, self.factor_new, self.init_block_size, self.eps)
