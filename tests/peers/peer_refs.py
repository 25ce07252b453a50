"""float64 NumPy references and float32 error bounds shared by the peers' behaviour tests.

Nothing here is a test; the test files in this folder import it.
"""

import numpy as np
from _oracle import group_norm64, norm64  # noqa: F401 - re-exported: the float64 references

U32 = 2.0**-24  # unit roundoff of float32


def data(*shape, loc=0.0, scale=1.0, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(dtype)


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
    dmu, dvar = stats_bound(g, raxes)
    s2 = g.var(raxes, keepdims=True) + eps
    y = np.abs(np.asarray(y, np.float64))
    return 2 * (dmu / np.sqrt(s2) + y * dvar / (2 * s2) + 8 * U32 * (1 + y))


def stats_bound(g, raxes):
    """The bounds ``(dmu, dvar)`` of :func:`float32_norm_bound` on a float32 mean and variance.

    Per slice (keepdims), for any summation order and any shift taken from the data; a final
    rounding of each result (``u`` relative) is included. Not doubled.
    """
    g = np.asarray(g, np.float64)
    n = np.prod([g.shape[a] for a in raxes])
    mu = g.mean(raxes, keepdims=True)
    sigma2 = g.var(raxes, keepdims=True)
    d = np.abs(g - mu).max(raxes, keepdims=True)
    s_moment = (g**2).mean(raxes, keepdims=True) + sigma2 + d**2
    dmu = n * U32 * (np.abs(g).mean(raxes, keepdims=True) + d)
    dvar = (n + 2) * U32 * s_moment + 2 * (np.abs(mu) + d) * dmu
    return dmu + U32 * np.abs(mu), dvar + U32 * sigma2


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
