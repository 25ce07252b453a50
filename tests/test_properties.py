"""Hypothesis property tests for the laws the units contract promises."""

import brainunit as u
import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import unitnorm as un
from unitnorm import functional as F

UNIT_PAIRS = [(u.mV, u.volt), (u.uvolt, u.mV), (u.nA, u.pA), (u.nsiemens, u.siemens), (u.tesla, u.ftesla)]


@st.composite
def batches(draw, min_rows=2, max_rows=24, max_channels=4):
    rows = draw(st.integers(min_rows, max_rows))
    cols = draw(st.integers(1, max_channels))
    x = draw(
        hnp.arrays(np.float32, (rows, cols), elements=st.floats(-100, 100, width=32, allow_subnormal=False))
    )
    x64 = x.astype(np.float64)
    assume(np.all(x64.std(0) > 1e-2 * (1 + np.abs(x64).max(0))))
    return x


@given(x=batches(), pair=st.sampled_from(UNIT_PAIRS), momentum=st.sampled_from([0.0, 0.5, 0.9, None]))
def test_unit_invariance_of_batch_norm(x, pair, momentum):
    """The same data in two units give the same output with a Quantity epsilon."""
    unit_a, unit_b = pair
    xa = jnp.asarray(x) * unit_a
    xb = xa.in_unit(unit_b)
    eps = 1e-5 * unit_a**2
    la = un.BatchNorm0d(x.shape[1], epsilon=eps, momentum=momentum)
    lb = un.BatchNorm0d(x.shape[1], epsilon=eps, momentum=momentum)
    ya, yb = la(xa), lb(xb)
    np.testing.assert_allclose(np.asarray(ya), np.asarray(yb), rtol=1e-3, atol=1e-3)
    ma, mb = la.running_mean.value, lb.running_mean.value
    np.testing.assert_allclose(
        np.asarray(ma.mantissa), np.asarray(mb.to_decimal(unit_a)), rtol=1e-4, atol=1e-4 * np.abs(x).max()
    )
    # eval with the learned statistics is unit-invariant too, once the initial running
    # variance (1 in each layer's own unit squared) is forgotten
    if momentum not in (0.0, None):
        return
    np.testing.assert_allclose(
        np.asarray(la(xa, training=False)), np.asarray(lb(xb, training=False)), rtol=1e-3, atol=1e-3
    )


@given(x=batches(), pair=st.sampled_from(UNIT_PAIRS), fast=st.booleans())
def test_unit_invariance_of_compute_stats(x, pair, fast):
    unit_a, unit_b = pair
    xa = jnp.asarray(x) * unit_a
    mean_a, var_a = F.compute_stats(xa, 0, use_fast_variance=fast)
    mean_b, var_b = F.compute_stats(xa.in_unit(unit_b), 0, use_fast_variance=fast)
    scale = np.abs(x).max() + 1e-6
    np.testing.assert_allclose(
        np.asarray(mean_b.to_decimal(unit_a)), np.asarray(mean_a.mantissa), atol=1e-5 * scale
    )
    np.testing.assert_allclose(
        np.asarray(var_b.to_decimal(unit_a**2)), np.asarray(var_a.mantissa), rtol=1e-3, atol=1e-6 * scale**2
    )


@given(x=batches(min_rows=4), fast=st.booleans())
def test_training_output_has_zero_mean_unit_variance(x, fast):
    layer = un.BatchNorm0d(x.shape[1], epsilon=0.0, use_fast_variance=fast)
    y = np.asarray(layer(jnp.asarray(x) * u.mV), np.float64)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(y.var(0), 1.0, rtol=2e-3)


@given(
    x=batches(),
    a=st.floats(0.1, 10.0),
    b=st.floats(-50.0, 50.0),
    fast=st.booleans(),
)
def test_affine_invariance(x, a, b, fast):
    """Normalizing a*x + b (a > 0) gives the output of x, epsilon scaled by a**2."""
    eps = 1e-5
    y = un.BatchNorm0d(x.shape[1], epsilon=eps, use_fast_variance=fast)(jnp.asarray(x))
    xt = (a * x.astype(np.float64) + b).astype(np.float32)
    yt = un.BatchNorm0d(x.shape[1], epsilon=eps * a * a, use_fast_variance=fast)(jnp.asarray(xt))
    # float32 rounding of a*x + b perturbs each value by about |a*x + b| * 2**-24
    tol = 5e-3 * (1 + np.abs(b) / (a * np.asarray(x, np.float64).std(0).min()) * 1e-2)
    np.testing.assert_allclose(np.asarray(yt), np.asarray(y), atol=tol)
