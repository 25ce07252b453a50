"""float64 NumPy references and float32 error bounds shared by the peers' behaviour tests.

Nothing here is a test; the test files in this folder import it.
"""

import numpy as np

U32 = 2.0**-24  # unit roundoff of float32


def data(*shape, loc=0.0, scale=1.0, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(dtype)


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


def float32_norm_bound(g, raxes, y, eps=0.0):
    """Per-element bound on |y32 - y64| for a float32 standardization of ``g`` over ``raxes``.

    Holds for any summation order (recursive summation of n terms is off by at most
    (n - 1) u times the sum of magnitudes) and for the one-pass variance about any shift
    taken from the data (zero, brainstate and flax; the first element, unitnorm) as well as
    for the two-pass one. With n values per slice, mean mu, deviation sigma, spread
    d = max |x - mu| and S = mean(x**2) + sigma**2 + d**2 (a bound on the second moment
    about any such shift):

    * mean:      dmu  <= n u (mean|x| + d)
    * variance:  dvar <= (n + 2) u S + 2 (|mu| + d) dmu
    * output:    dy   <= dmu / s + |y| dvar / (2 s**2) + 8 u (1 + |y|),  s**2 = sigma**2 + eps

    doubled to cover second-order terms. ``g`` is float64 data shaped so that ``raxes``
    are exactly the reduced axes; ``y`` is the float64 result of the same shape.
    """
    g = np.asarray(g, np.float64)
    n = np.prod([g.shape[a] for a in raxes])
    mu = g.mean(raxes, keepdims=True)
    sigma2 = g.var(raxes, keepdims=True)
    d = np.abs(g - mu).max(raxes, keepdims=True)
    s_moment = (g**2).mean(raxes, keepdims=True) + sigma2 + d**2
    dmu = n * U32 * (np.abs(g).mean(raxes, keepdims=True) + d)
    dvar = (n + 2) * U32 * s_moment + 2 * (np.abs(mu) + d) * dmu
    s2 = sigma2 + eps
    y = np.abs(np.asarray(y, np.float64))
    return 2 * (dmu / np.sqrt(s2) + y * dvar / (2 * s2) + 8 * U32 * (1 + y))


def group_bound(x, num_groups, y, eps=0.0):
    """:func:`float32_norm_bound` for a channels-last group norm over every axis but the first."""
    x = np.asarray(x, np.float64)
    c = x.shape[-1]
    g = x.reshape(*x.shape[:-1], num_groups, c // num_groups)
    yg = np.asarray(y, np.float64).reshape(g.shape)
    raxes = (*range(1, x.ndim - 1), x.ndim)
    return float32_norm_bound(g, raxes, yg, eps).reshape(x.shape)


def assert_within(actual, expected, bound, what=""):
    """Every element of ``actual`` lies within ``bound`` of ``expected`` (both as float64)."""
    err = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    bound = np.broadcast_to(bound, err.shape)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"{what}: error {err[worst]:.3g} exceeds the bound {bound[worst]:.3g} at {tuple(map(int, worst))}"
    )
