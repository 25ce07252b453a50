"""Exponential moving standardization: Braindecode parity, float32 accuracy, streaming, units, errors.

References are float64 re-implementations of Braindecode's two versions of
``exponential_moving_standardize`` (written here from their formulas, on (time, channels)):

- the lfilter version, braindecode/preprocessing/preprocess.py at commit eb3ddee6b72b,
  lines 488-506: ``d = lfilter([1], [1, -(1-a)], ones)``, mean = ``lfilter(x) / d``, variance
  = ``lfilter(demeaned**2) / d``, output ``demeaned / max(eps, sqrt(var))``; the first
  ``init_block_size`` samples by their own ``np.mean`` / ``np.std`` (ddof 0), std floored at eps.
- the pandas version it replaced (commit b2e06795d3b3, lines 453-462): ``DataFrame.ewm(alpha=a)
  .mean()`` with pandas' default ``adjust=True``, the same init block.

braindecode itself is not installed: its release on PyPI (1.8.1, whose preprocess.py has the
same lfilter lines 488-506) requires torch>=2.0, torchaudio and skorch.
"""

from __future__ import annotations

import doctest
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _oracle import U32, assert_close_f32, f32_bound, perturbed_bound
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from unitnorm.preprocessing import ExponentialMovingStandardizer, _ems, exponential_moving_standardize

ROOT = Path(__file__).resolve().parents[1]
F32 = np.finfo(np.float32).eps / 2  # unit roundoff u of float32


def ref_lfilter(x, factor_new=1e-3, init_block_size=None, eps=1e-4):
    """Braindecode's lfilter formula, float64, (time, channels)."""
    x = np.asarray(x, np.float64)
    a = [1.0, -(1.0 - factor_new)]
    weight = lfilter([1.0], a, np.ones(x.shape[0]))[:, None]
    mean = lfilter([1.0], a, x, axis=0) / weight
    dev = x - mean
    var = lfilter([1.0], a, dev * dev, axis=0) / weight
    out = dev / np.maximum(eps, np.sqrt(var))
    if init_block_size is not None:
        head = x[:init_block_size]
        out[:init_block_size] = (head - head.mean(0)) / np.maximum(eps, head.std(0))
    return out


def ref_pandas(x, factor_new=1e-3, init_block_size=None, eps=1e-4):
    """Braindecode's earlier pandas formula (ewm with adjust=True), float64, (time, channels)."""
    x = np.asarray(x, np.float64)
    df = pd.DataFrame(x)
    dev = df - df.ewm(alpha=factor_new).mean()
    var = (dev * dev).ewm(alpha=factor_new).mean().to_numpy()
    out = dev.to_numpy() / np.maximum(eps, np.sqrt(var))
    if init_block_size is not None:
        head = x[:init_block_size]
        out[:init_block_size] = (head - head.mean(0)) / np.maximum(eps, head.std(0))
    return out


def recording(n, c=3, seed=0, offset=5.0, scale=2.0):
    """EEG-like test data: noise with a slow drift of offset and amplitude."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    return offset + 3 * t + scale * (1 + t) * rng.normal(size=(n, c))


@pytest.fixture
def solver(request, monkeypatch):
    """Force one of the two solvers (and a block size that makes several blocks / levels)."""
    method, block = request.param
    monkeypatch.setattr(_ems, "_default_method", lambda: (method, block))
    return method, block


SOLVERS = [("loop", 32), ("loop", 5), ("parallel", 4)]


# ----------------------------------------------------------------------------
# parity with Braindecode (float64)


@pytest.mark.parametrize("solver", SOLVERS, indirect=True, ids=lambda s: f"{s[0]}{s[1]}")
@pytest.mark.parametrize("factor_new", [1e-3, 0.05, 1.0])
@pytest.mark.parametrize("init_block_size", [None, 50, 10_000])
def test_matches_braindecode_lfilter_and_pandas_in_float64(solver, factor_new, init_block_size):
    x = recording(700)
    with jax.enable_x64(True):
        y = np.asarray(exponential_moving_standardize(jnp.asarray(x), factor_new, init_block_size, 1e-4))
    assert y.dtype == np.float64
    for ref in (ref_lfilter, ref_pandas):
        np.testing.assert_allclose(y, ref(x, factor_new, init_block_size, 1e-4), rtol=1e-6, atol=1e-12)


def test_worked_example_by_hand():
    # a = 1/2: D = 1, 3/2, 7/4; N = 1, 7/2, 15/4; m = 1, 7/3, 15/7;
    # S = 0, 4/9, 2/9 + (1/7)**2; v = S / D; y = (x - m) / sqrt(v)
    x = np.array([[1.0], [3.0], [2.0]])
    m = np.array([1, 7 / 3, 15 / 7])
    s = np.array([0, 4 / 9, 2 / 9 + 1 / 49])
    v = s / np.array([1, 3 / 2, 7 / 4])
    expected = (x[:, 0] - m) / np.maximum(1e-4, np.sqrt(v))
    with jax.enable_x64(True):
        y = exponential_moving_standardize(jnp.asarray(x), factor_new=0.5)
    np.testing.assert_allclose(np.asarray(y)[:, 0], expected, rtol=1e-12, atol=1e-15)


def test_eps_floors_the_standard_deviation_not_the_variance():
    x = np.array([[0.0], [1e-3], [0.0], [1e-3]])  # std ~5e-4
    y = exponential_moving_standardize(x, factor_new=0.5, eps=1e-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = x - lfilter([1.0], [1.0, -0.5], x, axis=0) / lfilter([1.0], [1.0, -0.5], np.ones(4))[:, None]
    np.testing.assert_allclose(np.asarray(y), dev / 1e-2, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------
# float32 accuracy over a million samples, against a bound


def float32_error_bound(x32, factor_new, block, y_ref, levels=1):
    """A first-order bound on |y32 - y64| for the blocked solver.

    Every running sum is a positive combination of the shifted samples ``xs``. In a block
    of ``block`` rows it is a float32 product of ``<= block`` terms plus one carried term,
    so its rounding error is at most gamma_(block+2) times the same combination of ``|xs|``;
    a carried error decays by ``r**block`` per block, so the errors of all blocks add up to
    at most ``1 + 1/(1 - r**block)`` times one block's. With K = (block + 2) * that factor
    and M_t the weighted mean of ``|xs|`` (from float64): |delta m_t| <= K u M_t; the
    deviation adds u |x_t - m_t|; the variance, a positive combination of squared
    deviations, adds K u v_t plus 2 sqrt(v_t) max|delta dev|; so with s_t = max(sqrt(v_t), eps)
    |delta y_t| <= K u (1 + |y_t|) (1 + 2 M_t / s_t), doubled for the second-order terms.
    The parallel solver computes the carries by ``levels`` nested block products, each with
    the same kind of error (and a smaller decay factor), so K is multiplied by ``levels``.
    """
    r_block = (1 - factor_new) ** block
    k = levels * (block + 2) * (1 + 1 / (1 - r_block))
    x = np.asarray(x32, np.float64)
    xs = x - x[0]
    a = [1.0, -(1.0 - factor_new)]
    weight = lfilter([1.0], a, np.ones(x.shape[0]))[:, None]
    m_abs = lfilter([1.0], a, np.abs(xs), axis=0) / weight
    dev = xs - lfilter([1.0], a, xs, axis=0) / weight
    s = np.maximum(1e-4, np.sqrt(lfilter([1.0], a, dev * dev, axis=0) / weight))
    return 2 * k * F32 * (1 + np.abs(y_ref)) * (1 + 2 * m_abs / s)


@pytest.mark.parametrize("solver", [("loop", 32), ("parallel", 32)], indirect=True, ids=lambda s: s[0])
def test_float32_over_a_million_samples_within_the_error_bound(solver):
    n = 1_000_000
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, n)[:, None]
    # a membrane-potential-like channel far from zero (-65 mV + 10 µV noise + drift) and EEG-like noise
    mv = -65 + 0.5 * t + 0.01 * (1 + t) * rng.normal(size=(n, 1))
    eeg = 20 * np.sin(40 * t) + 10 * rng.normal(size=(n, 1))
    x32 = np.concatenate([mv, eeg], axis=1).astype(np.float32)
    y32 = np.asarray(exponential_moving_standardize(x32, 1e-3))
    assert y32.dtype == np.float32
    y64 = ref_lfilter(x32.astype(np.float64), 1e-3)
    levels = 1 if solver[0] == "loop" else math.ceil(math.log(n) / math.log(solver[1]))
    bound = float32_error_bound(x32, 1e-3, solver[1], y64, levels)
    err = np.abs(y32 - y64)
    worst = float(np.max(err / bound))
    assert worst < 1, f"error exceeds the bound by {worst:.3g}x"
    # and the bound is not vacuous: on most samples it is a small fraction of the output scale
    assert float(np.median(bound)) < 1e-2 * levels


# ----------------------------------------------------------------------------
# streaming


@pytest.fixture(scope="module")
def stream_data():
    return recording(300, c=2, seed=3)


@pytest.mark.slow
@settings(max_examples=25)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 7, 16, 40, 90]), min_size=1, max_size=40),
    init_block_size=st.sampled_from([None, 1, 25, 64, 500]),
)
def test_streaming_equals_whole_array(stream_data, sizes, init_block_size):
    cuts = np.cumsum([0, *sizes])
    cuts = cuts[cuts < len(stream_data)].tolist() + [len(stream_data)]
    with jax.enable_x64(True):
        x = jnp.asarray(stream_data)
        ems = ExponentialMovingStandardizer(factor_new=0.02, init_block_size=init_block_size, eps=1e-4)
        parts = [ems.partial_transform(x[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        parts.append(ems.flush())
        streamed = np.concatenate([np.asarray(p) for p in parts])
        whole = np.asarray(exponential_moving_standardize(x, 0.02, init_block_size, 1e-4))
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=1e-9, atol=1e-12)
    assert ems.n_samples_seen_ == len(stream_data) and ems.pending == 0


@pytest.mark.parametrize(
    "sizes, init_block_size",
    [([300], None), ([1] * 5 + [90] * 4, 25), ([7, 16] * 20, 64), ([40] * 8, 500), ([2, 90, 1], 1)],
)
def test_streaming_equals_whole_array_fixed_chunkings(stream_data, sizes, init_block_size):
    test_streaming_equals_whole_array.hypothesis.inner_test(stream_data, sizes, init_block_size)


def test_outputs_of_the_initial_block_wait_for_it(stream_data):
    ems = ExponentialMovingStandardizer(factor_new=0.02, init_block_size=25)
    shapes = [ems.partial_transform(stream_data[a : a + 10]).shape for a in range(0, 40, 10)]
    assert shapes == [(0, 2), (0, 2), (30, 2), (10, 2)]
    assert ems.pending == 0


def test_flush_gives_a_short_recording_its_own_block_statistics(stream_data):
    short = stream_data[:18]
    ems = ExponentialMovingStandardizer(factor_new=0.02, init_block_size=25)
    assert ems.partial_transform(short[:10]).shape == (0, 2)
    assert ems.partial_transform(short[10:]).shape == (0, 2)
    assert ems.pending == 18
    # 18 values standardized in float32 (the input rounded to float32 on the way in): the data's bound
    bound = f32_bound(short, 0) + perturbed_bound(short, 0, U32 * np.abs(short).max())
    assert_close_f32(ems.flush(), ref_lfilter(short, 0.02, 25), bound)
    assert ems.pending == 0 and ems.flush().shape == (0, 2)


def test_state_is_small_and_carries_the_weighted_statistics(stream_data):
    ems = ExponentialMovingStandardizer(factor_new=0.02)
    ems.partial_transform(stream_data[:200] * u.mV)
    a = [1.0, -0.98]
    weight = lfilter([1.0], a, np.ones(200))
    mean = lfilter([1.0], a, stream_data[:200], axis=0)[-1] / weight[-1]
    dev = stream_data[:200] - lfilter([1.0], a, stream_data[:200], axis=0) / weight[:, None]
    var = lfilter([1.0], a, dev * dev, axis=0)[-1] / weight[-1]
    assert ems.mean_.unit == u.mV and ems.var_.unit == u.mV**2
    np.testing.assert_allclose(np.asarray(ems.mean_.mantissa), mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ems.var_.mantissa), var, rtol=1e-4)
    assert sum(np.size(v) for v in ems._state.values()) == 3 * 2 + 1


def test_memory_is_bounded_by_the_chunk_not_the_recording():
    import gc
    import tracemalloc

    chunk, n_chunks, c = 4_000, 100, 4
    rng = np.random.default_rng(7)
    ems = ExponentialMovingStandardizer(factor_new=1e-3, init_block_size=6_000)
    for _ in range(20):  # compile and fill jax's bounded dispatch caches outside the count
        ems.partial_transform(rng.normal(size=(chunk, c)).astype(np.float32))
    gc.collect()
    live_before = sum(a.nbytes for a in jax.live_arrays())
    tracemalloc.start()
    total = 0.0
    for _ in range(n_chunks):
        out = ems.partial_transform(rng.normal(size=(chunk, c)).astype(np.float32))
        total += float(np.asarray(out).sum())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    gc.collect()
    live_after = sum(a.nbytes for a in jax.live_arrays())
    chunk_bytes = chunk * c * 4
    assert math.isfinite(total) and ems.n_samples_seen_ == (n_chunks + 20) * chunk
    # host memory (what tracemalloc sees: NumPy chunks and outputs, jax's Python objects)
    # stays a few chunks while 100 chunks stream through
    assert peak < 10 * chunk_bytes, (peak, chunk_bytes)
    # jax buffers held by the stream (the state) do not grow with the recording
    assert live_after - live_before < chunk_bytes, (live_before, live_after)
    assert sum(np.size(v) for v in ems._state.values()) == 3 * c + 1 and ems.pending == 0


def test_transform_starts_fresh_and_leaves_the_stream_alone(stream_data):
    ems = ExponentialMovingStandardizer(factor_new=0.02, init_block_size=25)
    ems.partial_transform(stream_data[:100])
    before = {k: np.asarray(v) for k, v in ems._state.items()}
    np.testing.assert_allclose(
        np.asarray(ems.transform(stream_data[100:])),
        ref_lfilter(stream_data[100:], 0.02, 25),
        rtol=1e-4,
        atol=1e-5,
    )
    assert all(np.array_equal(np.asarray(ems._state[k]), v) for k, v in before.items())
    ems.reset()
    assert ems.unit_ is None and ems.n_samples_seen_ == 0 and ems.mean_ is None
    np.testing.assert_allclose(
        np.asarray(ems.partial_transform(stream_data[100:])),
        ref_lfilter(stream_data[100:], 0.02, 25),
        rtol=1e-4,
        atol=1e-5,
    )


def test_chunk_in_another_unit_is_converted(stream_data):
    x = stream_data * u.mV
    ems = ExponentialMovingStandardizer(factor_new=0.02, eps=1e-4 * u.mV)
    first = ems.partial_transform(x[:100])
    second = ems.partial_transform(x[100:].in_unit(u.uvolt))
    whole = exponential_moving_standardize(x, 0.02, eps=1e-4 * u.mV)
    np.testing.assert_allclose(np.concatenate([first, second]), np.asarray(whole), rtol=1e-4, atol=1e-5)
    assert ems.unit_ == u.mV


def _snapshot(ems):
    return (
        ems.unit_,
        ems.n_samples_seen_,
        ems.pending,
        {k: np.asarray(v).copy() for k, v in ems._state.items()},
    )


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.ones((5, 2)) * u.nA, u.UnitMismatchError, "voltage"),
        (np.ones((5, 2)), u.UnitMismatchError, "dimensionless"),
        (np.ones((5, 3)) * u.mV, ValueError, r"shape \(time, 2\)"),
        (np.array(["a", "b"]), TypeError, "numeric"),
        (np.ones((5, 2), complex) * u.mV, TypeError, "real"),
    ],
    ids=["other dimension", "plain array", "other shape", "strings", "complex"],
)
def test_bad_chunk_raises_and_leaves_the_state_unchanged(stream_data, bad, error, match):
    ems = ExponentialMovingStandardizer(factor_new=0.02, init_block_size=150)
    ems.partial_transform(stream_data[:100] * u.mV)
    before = _snapshot(ems)
    with pytest.raises(error, match=match):
        ems.partial_transform(bad)
    after = _snapshot(ems)
    assert before[:3] == after[:3]
    assert all(np.array_equal(before[3][k], after[3][k], equal_nan=True) for k in before[3])
    # and the stream goes on as if nothing happened
    rest = ems.partial_transform(stream_data[100:] * u.mV)
    whole = exponential_moving_standardize(stream_data, 0.02, 150)
    np.testing.assert_allclose(np.asarray(rest), np.asarray(whole), rtol=1e-4, atol=1e-5)


def test_empty_chunk_is_a_no_op(stream_data):
    ems = ExponentialMovingStandardizer()
    assert ems.partial_transform(np.zeros((0, 2))).shape == (0, 2)
    assert ems.unit_ is None and ems._state is None


# ----------------------------------------------------------------------------
# units


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**16),
    unit=st.sampled_from([u.volt, u.mV, u.uvolt]),
    eps_unit=st.sampled_from([u.uvolt, u.mV]),
)
def test_same_output_in_volt_and_microvolt_with_a_quantity_eps(seed, unit, eps_unit):
    x = recording(64, c=2, seed=seed, offset=-65.0, scale=0.05) * u.mV
    eps = (1e-2 * u.mV).in_unit(eps_unit)
    with jax.enable_x64(True):
        ref = np.asarray(exponential_moving_standardize(x, 0.05, 16, eps))
        y = np.asarray(exponential_moving_standardize(x.in_unit(unit), 0.05, 16, eps))
    np.testing.assert_allclose(y, ref, rtol=1e-8, atol=1e-9)


@settings(max_examples=15)
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3))
def test_affine_invariance(seed, scale, shift):
    x = recording(64, c=2, seed=seed)
    with jax.enable_x64(True):
        ref = np.asarray(exponential_moving_standardize(jnp.asarray(x), 0.05, 16, 1e-6))
        y = np.asarray(exponential_moving_standardize(jnp.asarray(scale * x + shift), 0.05, 16, 1e-6 * scale))
    np.testing.assert_allclose(y, ref, rtol=1e-7, atol=1e-7)


def test_float_eps_is_read_in_the_data_unit():
    x = recording(500, c=2, scale=2.0)  # µV-sized noise
    in_uv = exponential_moving_standardize(x * u.uvolt, 1e-2, eps=1e-4)
    in_v = exponential_moving_standardize((x * u.uvolt).in_unit(u.volt), 1e-2, eps=1e-4)  # 1e-4 V!
    np.testing.assert_allclose(np.asarray(in_uv), ref_lfilter(x, 1e-2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(in_v), ref_lfilter(x * 1e-6, 1e-2, eps=1e-4), rtol=1e-4, atol=1e-7)
    ratio = np.std(np.asarray(in_v)[100:]) / np.std(np.asarray(in_uv)[100:])
    assert ratio < 0.1  # the eps trap: outputs far too small


def test_plain_array_with_a_quantity_eps_is_refused():
    with pytest.raises(u.UnitMismatchError, match="eps"):
        exponential_moving_standardize(np.ones((4, 2)), eps=1e-4 * u.mV)
    with pytest.raises(u.UnitMismatchError, match="eps"):
        exponential_moving_standardize(np.ones((4, 2)) * u.mV, eps=1e-4 * u.nA)


# ----------------------------------------------------------------------------
# configuration errors


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"factor_new": 0.0}, ValueError, r"factor_new must be in \(0, 1\], got 0.0"),
        ({"factor_new": 1.5}, ValueError, "factor_new"),
        ({"factor_new": float("nan")}, ValueError, "factor_new"),
        ({"factor_new": "0.1"}, TypeError, "factor_new"),
        ({"init_block_size": 0}, ValueError, "init_block_size must be a positive int or None, got 0"),
        ({"init_block_size": -3}, ValueError, "init_block_size"),
        ({"init_block_size": 2.5}, TypeError, "init_block_size"),
        ({"init_block_size": True}, TypeError, "init_block_size"),
        ({"eps": -1e-4}, ValueError, "eps must be finite and >= 0"),
        ({"eps": float("inf")}, ValueError, "eps"),
        ({"eps": "tiny"}, TypeError, "eps"),
        ({"eps": np.ones(2) * u.mV}, ValueError, "eps must be a scalar"),
    ],
)
def test_bad_settings_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        ExponentialMovingStandardizer(**kwargs)
    with pytest.raises(error, match=match):
        exponential_moving_standardize(np.ones((4, 2)), **kwargs)


def test_scalar_input_is_refused():
    with pytest.raises(ValueError, match=r"\(time, channels\)"):
        exponential_moving_standardize(3.0)


# ----------------------------------------------------------------------------
# jax transformations, dtypes, NaN


def test_jit_vmap_and_traced_factor_new():
    x = jnp.asarray(recording(200, c=2), jnp.float32)
    eager = exponential_moving_standardize(x, 0.05, 20)
    jitted = jax.jit(partial(exponential_moving_standardize, init_block_size=20))(x, 0.05)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-6)
    batch = jnp.stack([x, 2 * x + 1, x[::-1]])
    mapped = jax.vmap(lambda r: exponential_moving_standardize(r, 0.05, 20))(batch)
    for got, rec in zip(mapped, batch, strict=True):
        np.testing.assert_allclose(np.asarray(got), ref_lfilter(rec, 0.05, 20), rtol=1e-4, atol=1e-5)


def test_jit_with_quantities():
    x = jnp.asarray(recording(100, c=2), jnp.float32) * u.mV
    f = jax.jit(exponential_moving_standardize)
    y = f(x.in_unit(u.volt), 0.05, None, 1e-4 * u.mV)
    np.testing.assert_allclose(np.asarray(y), ref_lfilter(np.asarray(x.mantissa), 0.05), rtol=1e-4, atol=1e-5)


def test_gradient_matches_finite_differences():
    x = recording(40, c=2)
    w = np.random.default_rng(5).normal(size=x.shape)
    with jax.enable_x64(True):

        def loss(v, a):
            return jnp.sum(jnp.asarray(w) * exponential_moving_standardize(v, a, 8))

        gx, ga = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), 0.1)
        h = 1e-6
        num_a = (loss(jnp.asarray(x), 0.1 + h) - loss(jnp.asarray(x), 0.1 - h)) / (2 * h)
        e = np.zeros_like(x)
        e[13, 1] = h
        num_x = (loss(jnp.asarray(x + e), 0.1) - loss(jnp.asarray(x - e), 0.1)) / (2 * h)
    assert np.all(np.isfinite(np.asarray(gx)))
    np.testing.assert_allclose(float(ga), float(num_a), rtol=1e-5)
    np.testing.assert_allclose(float(gx[13, 1]), float(num_x), rtol=1e-5)


def test_gradient_is_finite_on_a_flat_channel():
    x = jnp.zeros((20, 2)).at[:, 1].set(jnp.arange(20.0))
    g = jax.grad(lambda v: jnp.sum(exponential_moving_standardize(v, 0.1, 5) ** 2))(x)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (jnp.bfloat16, jnp.bfloat16),
        (jnp.float16, jnp.float16),
        (jnp.int32, jnp.float32),
        (jnp.float32, jnp.float32),
    ],
)
def test_output_dtype_follows_the_input(dtype, expected):
    x = jnp.asarray(recording(50, c=2) * 10, dtype)
    y = exponential_moving_standardize(x, 0.1)
    assert y.dtype == expected
    ref = ref_lfilter(np.asarray(x.astype(jnp.float32), np.float64), 0.1)
    tol = 1e-5 if expected == jnp.float32 else 2 * float(jnp.finfo(expected).eps)
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("solver", [("loop", 8), ("parallel", 8)], indirect=True, ids=lambda s: s[0])
def test_nan_poisons_its_channel_from_there_on_only(solver):
    x = recording(100, c=2)
    x[37, 0] = np.nan
    y = np.asarray(exponential_moving_standardize(x, 0.05))
    ref = ref_lfilter(x, 0.05)  # NaN from sample 37 on in channel 0, as Braindecode's lfilter version
    assert np.all(np.isnan(y[37:, 0])) and np.all(np.isnan(ref[37:, 0]))
    np.testing.assert_allclose(y[:37, 0], ref[:37, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y[:, 1], ref[:, 1], rtol=1e-4, atol=1e-5)
    ems = ExponentialMovingStandardizer(factor_new=0.05)
    streamed = np.concatenate([np.asarray(ems.partial_transform(x[a : a + 30])) for a in range(0, 100, 30)])
    np.testing.assert_array_equal(np.isnan(streamed), np.isnan(y))
    np.testing.assert_allclose(streamed, y, rtol=1e-4, atol=1e-5)
    x[0, 1] = np.inf
    assert np.all(np.isnan(np.asarray(exponential_moving_standardize(x, 0.05))[:, 1]))


def test_trailing_shape_and_one_dimensional_input():
    x = recording(60, c=6)
    y3 = exponential_moving_standardize(x.reshape(60, 2, 3), 0.1)
    assert y3.shape == (60, 2, 3)
    np.testing.assert_allclose(np.asarray(y3).reshape(60, 6), ref_lfilter(x, 0.1), rtol=1e-4, atol=1e-5)
    y1 = exponential_moving_standardize(x[:, 0], 0.1)
    assert y1.shape == (60,)
    np.testing.assert_allclose(np.asarray(y1), ref_lfilter(x[:, :1], 0.1)[:, 0], rtol=1e-4, atol=1e-5)


def test_chunk_sizes_share_a_few_compiled_shapes():
    assert [_ems._bucket(n) for n in (1, 64, 65, 100, 1000, 1_000_000)] == [64, 64, 72, 104, 1024, 1_048_576]
    for n in range(1, 5000, 37):
        assert n <= _ems._bucket(n) <= max(64, math.ceil(n * 9 / 8))


# ----------------------------------------------------------------------------
# the benchmark and the docs page


@pytest.mark.slow  # a benchmark smoke run: CI's slow set
def test_benchmark_quick_mode_runs():
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_ems.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout and "max |difference|" in proc.stdout


def test_docs_page_examples_pass():
    page = ROOT / "docs" / "ems.md"
    # the fences of the ```{doctest} blocks become blank lines, which end an expected output
    text = "\n".join("" if line.startswith("```") else line for line in page.read_text().splitlines())
    test = doctest.DocTestParser().get_doctest(text, {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 5 and result.failed == 0
