"""Float64 references, and tolerances for float32 results derived from the data instead of a bare 1e-4.

A float32 normalization ``y = (x - mean) / sqrt(var + eps)`` computed by any
implementation (ours, flax's, brainstate's) differs from the float64 truth by
rounding that depends on the CPU's vector width and on XLA's reduction order. We
do not know that order, so the tolerance bounds the error for any order:

- a sum of ``n`` float32 values is off by about ``u * sqrt(n) * max|x|`` (the
  rounding errors of its additions add up like a random walk; ``u = 2**-24``);
- the mean inherits that error, and ``x - mean`` adds ``u * |x|``;
- the variance of the values around a reference ``s`` is off by about
  ``u * sqrt(n) * E[(x - s)**2]``: ``s`` is the mean for a two-pass or shifted
  one-pass variance (``E[(x - s)**2] ~ var``), but 0 for the unshifted
  ``E[x**2] - E[x]**2`` (flax's fast variance): ``mean**2 + var``, the
  cancellation that made a test red on an AMD EPYC;
- then ``|dy| <= (|d(x - mean)| / sigma) + |y| * |d var| / (2 sigma**2)``.

``K`` standard deviations of margin (8) make the bound hold on any CPU; the bound
is still far tighter than 1e-4 for well-conditioned data.
"""

from __future__ import annotations

import math

import numpy as np

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32
U64 = float(np.finfo(np.float64).eps) / 2  # unit roundoff of float64


def f32_bound(x, raxes, *, eps=0.0, unshifted=False, rms=False, scale=1.0, k=8.0, mask=None, roundoff=U32):
    """Absolute error bound on a float32 normalized output of ``x`` over ``raxes``.

    ``unshifted`` for implementations that compute ``E[x**2] - E[x]**2``; ``rms`` for
    RMSNorm (no centring: the variance is ``E[x**2]`` and is well conditioned);
    ``scale`` the largest absolute affine scale applied after normalizing; ``mask`` the
    counted values (the statistics are theirs; every output, counted or not, is bounded);
    ``roundoff=U64`` for a float64 result (the same model, another unit roundoff).
    """
    x = np.asarray(x, np.float64)
    raxes = tuple(a % x.ndim for a in np.atleast_1d(raxes))
    w = np.ones(x.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape)
    n = np.maximum(w.sum(raxes, keepdims=True), 1)
    root = np.sqrt(n)
    mean = 0.0 if rms else np.where(w, x, 0).sum(raxes, keepdims=True) / n
    var = np.where(w, np.abs(x - mean) ** 2, 0).sum(raxes, keepdims=True) / n
    sigma2 = var + eps
    around = var + np.abs(mean) ** 2 if (unshifted and not rms) else var
    y = np.abs(x - mean) / np.sqrt(sigma2)
    centre_err = roundoff * (np.abs(x) + root * np.max(np.where(w, np.abs(x), 0), axis=raxes, keepdims=True))
    var_err = roundoff * root * around
    err = centre_err / np.sqrt(sigma2) + y * var_err / (2 * sigma2)
    return k * float(np.max(err)) * float(scale) + 8 * roundoff * float(np.max(y)) * float(scale)


def stats_bounds(x, raxes, mask=None, k=8.0, roundoff=U32):
    """Absolute error bounds ``(mean_err, var_err)`` on a float32 mean and biased variance of ``x``.

    The same random-walk model as :func:`f32_bound`, for any summation order: the mean is off by
    ``u (1 + sqrt(n)) max|x|`` (its sum, then its rounding), the variance around a reference that
    is either the mean (two-pass) or one of the values (shifted one-pass) by
    ``u sqrt(n) E[(x - s)**2]``, where ``E[(x - s)**2] = var + (mean - s)**2`` is at most
    ``var + max|x - mean|**2``, plus its own rounding, plus ``2 max|x - mean| mean_err``: a
    combination of partial moments (Chan's merge across devices or chunks) uses rounded partial
    means, an error that enters the variance at first order. ``mask`` selects the counted values.
    Per feature (keepdims), times ``k``; ``roundoff=U64`` for float64 statistics.
    """
    x = np.asarray(x, np.float64)
    raxes = tuple(a % x.ndim for a in np.atleast_1d(raxes))
    w = np.ones(x.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape)
    n = np.maximum(w.sum(raxes, keepdims=True), 1)
    root = np.sqrt(n)
    mean = np.where(w, x, 0).sum(raxes, keepdims=True) / n
    var = (np.where(w, x - mean, 0) ** 2).sum(raxes, keepdims=True) / n
    big = np.where(w, np.abs(x), 0).max(raxes, keepdims=True)
    spread = np.where(w, np.abs(x - mean), 0).max(raxes, keepdims=True)
    mean_err = k * roundoff * (1 + root) * big
    var_err = k * roundoff * (root * (var + spread**2) + var) + 2 * spread * mean_err
    return mean_err, var_err


def perturbed_bound(x, raxes, delta, eps=0.0):
    """Bound on how far a normalized output moves when every input moves by at most ``delta``.

    ``x - mean`` moves by ``2 delta`` at most and the variance by ``2 sigma delta`` (Cauchy-Schwarz),
    so ``|dy| <= delta (2 + |y|) / sigma`` to first order: the amplification by ``1/sigma`` that turns
    an input rounding (a unit conversion, a float32 matmul) into an output error.
    """
    x = np.asarray(x, np.float64)
    raxes = tuple(a % x.ndim for a in np.atleast_1d(raxes))
    mean = x.mean(raxes, keepdims=True)
    sigma = np.sqrt((np.abs(x - mean) ** 2).mean(raxes, keepdims=True) + eps)
    y = np.abs(x - mean) / sigma
    return float(np.max(np.asarray(delta, np.float64) * (2 + y) / sigma))


def assert_close_f32(actual, expected, bound):
    """``|actual - expected| <= bound`` everywhere (NaN where both are NaN), with a readable failure."""
    a = np.asarray(actual, np.float64)
    b = np.asarray(expected, np.float64)
    assert math.isfinite(bound), (
        f"the bound is {bound}: a test that cannot fail (an all-masked slice with eps=0?)"
    )
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    assert not np.isnan(diff).any() and worst <= bound, (
        f"max |difference| {worst:.3g} exceeds the bound {bound:.3g}"
    )


# ----------------------------------------------------------------------------
# float64 references (tests/test_norms.py and tests/peers/ share them)


def norm64(x, raxes, faxes=(), eps=0.0, scale=None, bias=None, mask=None, rms=False):
    """Standardize ``x`` over ``raxes`` in float64; ``scale``/``bias`` shaped like the feature axes."""
    x = np.asarray(x)
    x = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)
    nd = x.ndim
    raxes = tuple(a % nd for a in np.atleast_1d(raxes))
    faxes = tuple(a % nd for a in np.atleast_1d(faxes)) if len(np.atleast_1d(faxes)) else ()
    w = np.ones(x.shape) if mask is None else np.broadcast_to(np.asarray(mask, np.float64), x.shape)
    n = w.sum(raxes, keepdims=True)
    mean = np.zeros(n.shape) if rms else (x * w).sum(raxes, keepdims=True) / n
    var = (np.abs(x - mean) ** 2 * w).sum(raxes, keepdims=True) / n
    y = (x - mean) / np.sqrt(var + eps)
    fshape = [x.shape[a] if a in faxes else 1 for a in range(nd)]
    if scale is not None:
        y = y * np.asarray(scale, np.float64).reshape(fshape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(fshape)
    return y


def group_norm64(x, num_groups, channel=-1, raxes=None, eps=0.0, mask=None, scale=None, bias=None):
    """Group norm in float64: channels split into ``(num_groups, size)``; ``raxes`` are axes of ``x``.

    ``raxes=None`` reduces every axis but the first (the batch axis). ``raxes`` must hold the
    channel axis, which stands for "within the group".
    """
    x = np.asarray(x, np.float64)
    nd = x.ndim
    channel %= nd
    raxes = tuple(range(1, nd)) if raxes is None else tuple(a % nd for a in raxes)
    xt = np.moveaxis(x, channel, -1)
    mt = None if mask is None else np.moveaxis(np.broadcast_to(mask, x.shape), channel, -1)
    order = [a for a in range(nd) if a != channel] + [channel]
    other = tuple(order.index(a) for a in raxes if a != channel)
    c = xt.shape[-1]
    g = xt.reshape(*xt.shape[:-1], num_groups, c // num_groups)
    mg = None if mt is None else mt.reshape(g.shape)
    y = norm64(g, (*other, nd), eps=eps, mask=mg).reshape(xt.shape)
    if scale is not None:
        y = y * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return np.moveaxis(y, -1, channel)
