"""unitnorm.preprocessing scalers: parity with scikit-learn, SpikeInterface's formulas and MNE, streaming,
units, errors, checkpoints and layers.

References: scikit-learn's StandardScaler/RobustScaler (float64), MNE's Scaler, float64 NumPy formulas
(SpikeInterface's, re-implemented with the source lines cited), never our own earlier output.
"""

from __future__ import annotations

import copy
import json
import os
import tracemalloc

import brainunit as u
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unitnorm as un
from unitnorm import io
from unitnorm import preprocessing as pp
from unitnorm.preprocessing import _exact

sklearn_preprocessing = pytest.importorskip("sklearn.preprocessing")

SCALERS = [
    lambda **k: pp.StandardScaler(**k),
    lambda **k: pp.RobustScaler(**k),
    lambda **k: pp.RobustScaler(scale="mad", **k),
    lambda **k: pp.QuantileScaler(**k),
]
IDS = ["standard", "robust", "mad", "quantile"]


def _data(n=400, c=3, seed=0, far=True):
    rng = np.random.default_rng(seed)
    # different spreads, heavy tails in one channel; far=True: one channel 1e5 std from zero
    spread = np.array([2.0, 0.01 if far else 0.5, 5.0][:c])
    x = rng.standard_normal((n, c)) * spread + np.array([-65.0, 1e3 if far else 3.0, 7.0][:c])
    x[:, -1] += rng.standard_t(2, size=n)
    return x


def _atol(x):
    """Rounding bound of (x - center) / scale in float64: |center| / scale ulps, times a small factor."""
    x = np.asarray(x, dtype=np.float64)
    spread = np.nanstd(x, axis=0)
    return float(64 * np.finfo(np.float64).eps * np.nanmax((np.nanmax(np.abs(x), axis=0) + 1) / spread))


def _state(scaler):
    """Everything a scaler holds, deep-copied, for 'nothing changed' checks."""
    return copy.deepcopy({k: v for k, v in vars(scaler).items()})


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert _deep_equal(a[k], b[k]), k


def _deep_equal(a, b):
    if isinstance(a, u.Quantity):
        return (
            isinstance(b, u.Quantity) and a.unit == b.unit and _deep_equal(np.asarray(a.mantissa), b.mantissa)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, np.asarray(b), equal_nan=a.dtype.kind == "f")
    if hasattr(a, "__dict__"):
        return type(a) is type(b) and _deep_equal(vars(a), vars(b))
    return a == b


def _m(q):
    return np.asarray(q.mantissa if isinstance(q, u.Quantity) else q, dtype=np.float64)


# ---------------------------------------------------------------------------- scikit-learn parity


def test_standard_scaler_matches_sklearn():
    x = _data()
    ours = pp.StandardScaler().fit(x * u.mV)
    ref = sklearn_preprocessing.StandardScaler().fit(x)
    assert ours.mean_.unit == u.mV and ours.var_.unit == u.mV**2 and ours.scale_.unit == u.mV
    np.testing.assert_allclose(_m(ours.mean_), ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(_m(ours.var_), ref.var_, rtol=1e-12)
    np.testing.assert_allclose(_m(ours.scale_), ref.scale_, rtol=1e-12)
    assert ours.n_samples_seen_ == ref.n_samples_seen_ == x.shape[0]
    np.testing.assert_allclose(ours.transform(x * u.mV), ref.transform(x), rtol=0, atol=_atol(x))
    # with_mean / with_std as scikit-learn
    for kw in ({"with_mean": False}, {"with_std": False}):
        a, b = pp.StandardScaler(**kw).fit(x), sklearn_preprocessing.StandardScaler(**kw).fit(x)
        np.testing.assert_allclose(a.transform(x), b.transform(x), rtol=0, atol=_atol(x))
    assert pp.StandardScaler(with_std=False).fit(x).var_ is None


def test_standard_scaler_ddof():
    x = _data(50)
    s = pp.StandardScaler(ddof=1).fit(x)
    np.testing.assert_allclose(s.var_, x.var(axis=0, ddof=1), rtol=1e-12)


@given(st.lists(st.integers(1, 120), min_size=1, max_size=8), st.integers(0, 3))
@settings(max_examples=30, deadline=None)
def test_partial_fit_equals_fit_and_sklearn(sizes, seed):
    # 1e-12 relative needs well-conditioned data (|mean| / std of order 30 at most): the variance of data
    # 1e5 std from zero has a condition number of 1e10 whatever the algorithm
    x = _data(sum(sizes), seed=seed, far=False)
    ours, ref = pp.StandardScaler(), sklearn_preprocessing.StandardScaler()
    start = 0
    for size in sizes:
        assert ours.partial_fit(x[start : start + size] * u.uvolt) is ours
        ref.partial_fit(x[start : start + size])
        start += size
    whole = pp.StandardScaler().fit(x * u.uvolt)
    np.testing.assert_allclose(_m(ours.mean_), _m(whole.mean_), rtol=1e-12)
    np.testing.assert_allclose(_m(ours.var_), _m(whole.var_), rtol=1e-12)
    np.testing.assert_allclose(_m(ours.mean_), ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(_m(ours.var_), ref.var_, rtol=1e-12)
    assert ours.n_samples_seen_ == x.shape[0]


@pytest.mark.parametrize(
    "kw",
    [{}, {"quantile_range": (10.0, 90.0)}, {"unit_variance": True}, {"with_centering": False}],
)
def test_robust_scaler_matches_sklearn(kw):
    x = _data(301)
    ours = pp.RobustScaler(**kw).fit(x * u.nA)
    ref = sklearn_preprocessing.RobustScaler(**kw).fit(x)
    if ref.center_ is not None and kw.get("with_centering", True):
        np.testing.assert_allclose(_m(ours.center_), ref.center_, rtol=1e-12)
    np.testing.assert_allclose(_m(ours.scale_), ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(ours.transform(x * u.nA), ref.transform(x), rtol=0, atol=_atol(x))


@given(st.lists(st.integers(1, 90), min_size=1, max_size=6))
@settings(max_examples=20, deadline=None)
def test_robust_partial_fit_equals_fit_and_sklearn(sizes):
    x = np.round(_data(sum(sizes)), 1)  # quantized, like ADC counts: repeated values
    ours = pp.RobustScaler()
    start = 0
    for size in sizes:
        ours.partial_fit(x[start : start + size])
        start += size
    ref = sklearn_preprocessing.RobustScaler().fit(x)  # scikit-learn has no partial_fit here: fit on all
    np.testing.assert_allclose(ours.center_, ref.center_, rtol=1e-12)
    np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-12)


def test_nan_omit_matches_sklearn():
    x = _data(200)
    x[::7, 0] = np.nan
    x[3, 2] = np.nan
    s = pp.StandardScaler(nan_policy="omit").fit(x)
    ref = sklearn_preprocessing.StandardScaler().fit(x)  # scikit-learn ignores NaNs in fit
    np.testing.assert_allclose(s.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(s.var_, ref.var_, rtol=1e-12)
    np.testing.assert_array_equal(s.n_samples_seen_, ref.n_samples_seen_)
    r = pp.RobustScaler(nan_policy="omit").fit(x)
    ref_r = sklearn_preprocessing.RobustScaler().fit(x)
    np.testing.assert_allclose(r.center_, ref_r.center_, rtol=1e-12)
    np.testing.assert_allclose(r.scale_, ref_r.scale_, rtol=1e-12)
    # propagate: the channels with a NaN get NaN statistics, the others not
    p = pp.StandardScaler().fit(x)
    assert np.isnan(p.mean_[[0, 2]]).all() and np.isfinite(p.mean_[1])
    q = pp.QuantileScaler().fit(x)
    assert np.isnan(q.center_[0]) and np.isfinite(q.center_[1])


# ---------------------------------------------------------------------------- SpikeInterface's formulas


def _si_zscore_median_mad(x):
    # float64 re-implementation of spikeinterface/preprocessing/normalize_scale.py (v0.105.3),
    # ZScoreRecording, mode="median+mad", lines 288-293:
    #   medians = np.median(random_data, axis=0); mads = np.median(np.abs(random_data - medians), axis=0)
    #   / 0.6744897501960817; gain = 1 / mads; offset = -medians / mads; traces * gain + offset
    medians = np.median(x, axis=0)[None, :]
    mads = np.median(np.abs(x - medians), axis=0) / 0.6744897501960817
    gain, offset = 1 / mads, -medians / mads
    return x * gain + offset


def _si_normalize_by_quantile(x, scale=1.0, median=0.0, q1=0.01, q2=0.99):
    # float64 re-implementation of the same file, NormalizeByQuantileRecording, mode="by_channel",
    # lines 96-99: loc_q1, pre_median, loc_q2 = np.quantile(random_data, q=[q1, 0.5, q2], axis=0);
    # pre_scale = abs(loc_q2 - loc_q1); gain = scale / pre_scale; offset = median - pre_median * gain
    loc_q1, pre_median, loc_q2 = np.quantile(x, q=[q1, 0.5, q2], axis=0)
    gain = scale / abs(loc_q2 - loc_q1)
    return x * gain + (median - pre_median * gain)


def _recording(x, unit=u.uvolt, rate=1000.0):
    return io.Recording(x * unit, rate)


def test_mad_matches_spikeinterface_on_a_whole_recording():
    x = _data(2001)
    rec = _recording(x)
    z = pp.RobustScaler(scale="mad").fit(rec, chunk_samples=97).transform(rec)
    assert isinstance(z, io.Recording) and z.channel_units[0].is_unitless
    np.testing.assert_allclose(z.data, _si_zscore_median_mad(x), rtol=0, atol=_atol(x))


@pytest.mark.parametrize("kw", [{}, {"q1": 0.05, "q2": 0.8, "scale": 2.0, "median": 1.5}])
def test_quantile_matches_spikeinterface_on_a_whole_recording(kw):
    x = _data(1500)
    rec = _recording(x, u.mV)
    z = pp.QuantileScaler(**kw).fit(rec, chunk_samples=128).transform(rec).data
    np.testing.assert_allclose(z, _si_normalize_by_quantile(x, **kw), rtol=0, atol=_atol(x))
    # SpikeInterface's mode="pool_channel" (lines 87-90) is our per="dimension" for one dimension
    pooled = pp.QuantileScaler(per="dimension", **kw).fit(x)
    ref = _si_normalize_by_quantile(x.reshape(-1, 1), **kw).reshape(x.shape)
    np.testing.assert_allclose(pooled.transform(x), ref, rtol=0, atol=_atol(x))


# ---------------------------------------------------------------------------- MNE


def test_mne_scaler_mean_on_epochs():
    mne = pytest.importorskip("mne")
    from mne.decoding import Scaler

    rng = np.random.default_rng(3)
    epochs = rng.standard_normal((6, 4, 50)) * 1e-5 + 2e-6  # (epochs, channels, times), in V
    ref = Scaler(scalings="mean").fit_transform(epochs)
    flat = epochs.transpose(0, 2, 1).reshape(-1, 4)  # epochs x times as samples
    ours = pp.StandardScaler().fit(flat * u.volt)
    got = ours.transform(flat * u.volt).reshape(6, 50, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=_atol(flat))
    assert mne.__version__


# ---------------------------------------------------------------------------- streaming == whole


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
@given(chunk=st.integers(1, 400))
@settings(max_examples=8, deadline=None)
def test_streaming_equals_whole(make, chunk):
    x = np.round(_data(401), 3)
    whole = make().fit(x * u.mV)
    rec = make().fit(_recording(x, u.mV), chunk_samples=chunk)  # Recording: the multi-pass selection
    chunks = make().fit([x[i : i + chunk] * u.mV for i in range(0, x.shape[0], chunk)])
    partial = make()
    for i in range(0, x.shape[0], chunk):
        partial.partial_fit(x[i : i + chunk] * u.mV)
    ref = whole.transform(x * u.mV)
    for other in (rec, chunks, partial):
        np.testing.assert_allclose(other.transform(x * u.mV), ref, rtol=0, atol=_atol(x))
    # streaming the transform too: the lazily normalized Recording read chunk by chunk
    lazy = whole.transform(_recording(x, u.mV))
    np.testing.assert_allclose(lazy.mantissa(), ref, rtol=0, atol=_atol(x))


def test_quantiles_are_exact_order_statistics_after_refinement(monkeypatch):
    # small histograms force the refinement passes; the result is still NumPy's quantile bit for bit
    monkeypatch.setattr(_exact, "BINS", 3)
    monkeypatch.setattr(_exact, "COLLECT_LIMIT", 4)
    x = _data(997)
    x[5, 0] = np.inf
    x[9, 1] = -np.inf
    s = pp.QuantileScaler(q1=0.001, q2=0.999).fit(_recording(x), chunk_samples=50)
    np.testing.assert_array_equal(_m(s.center_), np.median(x, axis=0))
    with np.errstate(invalid="ignore"):  # NumPy interpolates towards -inf through a NaN it then overwrites
        low, high = np.quantile(x, 0.001, axis=0), np.quantile(x, 0.999, axis=0)
    np.testing.assert_array_equal(_m(s.quantile_low_), low)
    np.testing.assert_array_equal(_m(s.quantile_high_), high)


def test_iterable_of_chunks_in_and_out():
    x = _data(100)
    s = pp.StandardScaler().fit(iter([x[:40] * u.mV, (x[40:] / 1e3) * u.volt]))
    np.testing.assert_allclose(_m(s.mean_), x.mean(axis=0), rtol=1e-12)
    out = s.transform(iter([x[:10] * u.mV, x[10:] * u.mV]))
    assert not isinstance(out, np.ndarray)
    np.testing.assert_allclose(np.concatenate(list(out)), (x - x.mean(0)) / x.std(0), rtol=0, atol=_atol(x))
    y = pp.RobustScaler().fit_transform(iter([x[:50], x[50:]]))  # a one-shot iterator is kept, then mapped
    np.testing.assert_allclose(np.concatenate(list(y)), sklearn_preprocessing.RobustScaler().fit_transform(x))


def _edf(path, n_channels=4, seconds=100, rate=1000):
    pyedflib = pytest.importorskip("pyedflib")
    from pyedflib import highlevel

    rng = np.random.default_rng(0)
    signals = [np.round(rng.standard_normal(seconds * rate) * 50, 1) for _ in range(n_channels)]
    headers = [
        highlevel.make_signal_header(
            f"ch{i}", dimension="uV", sample_frequency=rate, physical_min=-1000, physical_max=1000
        )
        for i in range(n_channels)
    ]
    highlevel.write_edf(str(path), signals, headers)
    assert pyedflib


def _peaks(rec, make, chunk, out):
    scaler = make()
    tracemalloc.start()
    try:
        scaler.fit(rec, chunk_samples=chunk)
        _, fit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        io.write_npz(out, scaler.transform(rec), chunk_samples=chunk)
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return scaler, fit_peak, write_peak


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
def test_memory_bounded_by_the_chunk(tmp_path, make):
    # the same chunk on a recording 4 times longer: the peak does not grow with the length
    _edf(tmp_path / "short.edf", n_channels=4, seconds=25, rate=1000)
    _edf(tmp_path / "long.edf", n_channels=4, seconds=100, rate=1000)  # 400,000 values, 3.2 MB as float64
    short, long = io.read_edf(tmp_path / "short.edf"), io.read_edf(tmp_path / "long.edf")
    chunk = 2500  # 80 kB of float64: the long recording is 40 chunks long
    chunk_bytes = chunk * long.n_channels * 8
    whole_bytes = long.n_samples * long.n_channels * 8
    _, fit_short, write_short = _peaks(short, make, chunk, tmp_path / "s.npz")
    scaler, fit_long, write_long = _peaks(long, make, chunk, tmp_path / "z.npz")
    for peak_short, peak_long in ((fit_short, fit_long), (write_short, write_long)):
        assert peak_long < 1.25 * peak_short + chunk_bytes, (peak_short, peak_long)
        assert peak_long < 10 * chunk_bytes and peak_long < whole_bytes / 4, (peak_long, chunk_bytes)
    with np.load(tmp_path / "z.npz", allow_pickle=False) as npz:
        ref = make().fit(long.data).transform(long.data)
        np.testing.assert_allclose(npz["data"], ref, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- units


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
@given(scale_exp=st.sampled_from([0, 3, 6]), seed=st.integers(0, 5))
@settings(max_examples=6, deadline=None)
def test_volts_and_microvolts_give_identical_outputs(make, scale_exp, seed):
    x = _data(200, seed=seed)  # in uV
    in_uv = x * u.uvolt
    in_other = (x / 10.0**scale_exp) * [u.uvolt, u.mvolt, u.volt][scale_exp // 3]
    a = make().fit(in_uv).transform(in_uv)
    b = make().fit(in_other).transform(in_other)
    np.testing.assert_allclose(a, b, rtol=0, atol=_atol(x))
    # fitted in uV, fed in V: converted first
    c = make().fit(in_uv).transform(in_other)
    np.testing.assert_allclose(a, c, rtol=0, atol=_atol(x))


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
def test_inverse_transform_returns_the_input_unit(make):
    x = _data(300)
    s = make().fit(x * u.mvolt)
    back = s.inverse_transform(s.transform((x / 1e3) * u.volt))
    assert isinstance(back, u.Quantity) and back.unit == u.mvolt
    np.testing.assert_allclose(back.mantissa, x, rtol=1e-12, atol=1e-12 * np.abs(x).max())
    y32 = s.transform((x * u.mvolt).astype(np.float32))
    assert y32.dtype == np.float32
    plain = make().fit(x)
    np.testing.assert_allclose(plain.inverse_transform(plain.transform(x)), x, rtol=1e-12)


def test_mixed_dimensions_give_tuples_and_groups():
    x = _data(120, 3)
    rec = io.Recording(x, 100.0, ["eeg", "meg", "eeg2"], ["uV", "fT", "mV"])
    s = pp.StandardScaler().fit(rec)
    assert [g.tolist() for g in s.groups_] == [[0, 2], [1]]
    mean_v, mean_t = s.mean_
    assert mean_v.unit == u.uvolt and mean_t.unit == u.ftesla
    np.testing.assert_allclose(mean_v.mantissa, [x[:, 0].mean(), x[:, 2].mean() * 1e3], rtol=1e-12)
    pooled = pp.StandardScaler(per="dimension").fit(rec)
    volts = np.concatenate([x[:, 0], x[:, 2] * 1e3])
    assert float(pooled.mean_[0].mantissa) == pytest.approx(volts.mean(), rel=1e-12)
    assert float(pooled.var_[1].mantissa) == pytest.approx(x[:, 1].var(), rel=1e-12)
    z = s.transform(rec).data
    np.testing.assert_allclose(z, (x - x.mean(0)) / x.std(0), rtol=0, atol=_atol(x))
    back_v, back_t = s.inverse_transform(z)
    assert back_v.unit == u.uvolt and back_t.unit == u.ftesla
    # float64 z * scale + center: rounded around |center| (~7e3 uV), not around |x| (some samples
    # are near 0, where rtol alone asked for 1e-12 of a tiny value: 0.15 of it used)
    back_err = 8 * np.finfo(np.float64).eps * np.abs(x[:, 2] * 1e3).max()
    np.testing.assert_allclose(back_v.mantissa[:, 1], x[:, 2] * 1e3, rtol=1e-12, atol=back_err)
    with pytest.raises(ValueError, match="a layer takes one array"):
        s.as_layer()


def test_pooling_refuses_mixed_dimensions_in_one_line():
    rec = io.Recording(_data(50, 3), 100.0, ["a", "b", "c"], ["uV", "fT", "mV"])
    s = pp.StandardScaler(per=[[0, 1], [2]])
    with pytest.raises(u.UnitMismatchError) as info:
        s.fit(rec)
    message = str(info.value)
    assert "\n" not in message
    assert (
        "pool 0 mixes 2 dimensions (voltage (uV): channels 0; magnetic flux density (fT): channels 1)"
        in message
    )
    assert not hasattr(s, "mean_")
    ok = pp.StandardScaler(per=[[0, 2], [1]]).fit(rec)
    assert [g.tolist() for g in ok.groups_] == [[0, 2], [1]]


# ---------------------------------------------------------------------------- flat channels


def test_flat_policies():
    x = _data(60)
    x[:, 1] = 3.25
    unit = pp.StandardScaler().fit(x * u.mV)
    assert float(unit.scale_.mantissa[1]) == 1.0  # as scikit-learn
    np.testing.assert_array_equal(unit.transform(x * u.mV)[:, 1], 0.0)
    nan = pp.RobustScaler(flat="nan").fit(x)
    assert np.isnan(nan.transform(x)[:, 1]).all() and np.isfinite(nan.transform(x)[:, 0]).all()
    rec = io.Recording(x, 10.0, ["Fz", "Cz", "Pz"], "uV")
    strict = pp.QuantileScaler(flat="raise")
    with pytest.raises(ValueError, match=r"QuantileScaler: channel 'Cz' is flat \(zero spread\)"):
        strict.fit(rec)
    assert not hasattr(strict, "center_")
    # a stream may start flat: partial_fit accepts it, transform refuses while it is flat
    streaming = pp.StandardScaler(flat="raise").partial_fit(x[:1])
    with pytest.raises(ValueError, match=r"channels 0, 1, 2 are flat"):
        streaming.transform(x)
    streaming.partial_fit(x[1:])
    with pytest.raises(ValueError, match=r"channel 1 is flat"):
        streaming.transform(x)


# ---------------------------------------------------------------------------- errors


def test_not_fitted_error():
    for make in SCALERS:
        s = make()
        for call, arg in (
            (s.transform, np.ones((2, 2))),
            (s.inverse_transform, np.ones((2, 2))),
            (s.as_layer, None),
        ):
            with pytest.raises(pp.NotFittedError, match="is not fitted yet; call fit or partial_fit") as info:
                call() if arg is None else call(arg)
            assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


BAD_CONSTRUCTION = [
    (
        lambda: pp.StandardScaler(per="time"),
        ValueError,
        "per must be one of 'channel', 'dimension', got 'time'",
    ),
    (lambda: pp.StandardScaler(flat="zero"), ValueError, "flat must be one of 'unit', 'raise', 'nan'"),
    (lambda: pp.StandardScaler(nan_policy="skip"), ValueError, "nan_policy must be one of"),
    (lambda: pp.StandardScaler(ddof=-1), ValueError, "ddof must be an int >= 0, got -1"),
    (lambda: pp.StandardScaler(with_mean="yes"), TypeError, "with_mean must be True or False"),
    (lambda: pp.RobustScaler(quantile_range=(75, 25)), ValueError, "0 <= q_low < q_high <= 100"),
    (lambda: pp.RobustScaler(scale="std"), ValueError, "scale must be one of 'iqr', 'mad', got 'std'"),
    (lambda: pp.RobustScaler(scale="mad", unit_variance=True), ValueError, "apply to scale='iqr'"),
    (lambda: pp.QuantileScaler(q1=0.9, q2=0.1), ValueError, "need 0 <= q1 < q2 <= 1"),
    (lambda: pp.QuantileScaler(scale=0), ValueError, "scale must be > 0"),
    (lambda: pp.QuantileScaler(median=1 * u.mV), TypeError, "median must be a plain number"),
    (lambda: pp.StandardScaler(per=[[0], []]), ValueError, "non-empty pools"),
]


@pytest.mark.parametrize(("build", "error", "match"), BAD_CONSTRUCTION)
def test_bad_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


def _fitted(make):
    return make().fit(_data(80) * u.mV)


BAD_CALLS = [
    (
        "partial_fit",
        lambda: np.ones((5, 3)) * u.nA,
        u.UnitMismatchError,
        r"channel 0 was fitted in voltage \(mV\), got current \(nA\)",
    ),
    ("partial_fit", lambda: np.ones((5, 2)) * u.mV, ValueError, "expected 3 channels, got 2"),
    ("partial_fit", lambda: np.ones((5, 3)), u.UnitMismatchError, r"got dimensionless"),
    (
        "partial_fit",
        lambda: np.ones(5) * u.mV,
        ValueError,
        r"expected data of shape \(time, channels\), got shape \(5,\)",
    ),
    ("partial_fit", lambda: np.array([["a", "b", "c"]]), TypeError, "expected real numbers"),
    ("partial_fit", lambda: "data.edf", TypeError, "got str"),
    (
        "partial_fit",
        lambda: [np.ones((2, 3)) * u.mV, np.ones((2, 3)) * u.nA],
        u.UnitMismatchError,
        r"chunk 1",
    ),
    ("partial_fit", lambda: iter([]), ValueError, "the iterable of chunks is empty"),
    ("transform", lambda: np.ones((5, 3)) * u.second, u.UnitMismatchError, r"got time \(s\)"),
    ("transform", lambda: np.ones((5, 4)) * u.mV, ValueError, r"expected 3 channels \(as fitted\), got 4"),
    (
        "inverse_transform",
        lambda: np.ones((5, 3)) * u.mV,
        u.UnitMismatchError,
        "expected dimensionless values",
    ),
]


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
@pytest.mark.parametrize(("method", "value", "error", "match"), BAD_CALLS)
def test_bad_calls_leave_the_scaler_unchanged(make, method, value, error, match):
    s = _fitted(make)
    before = _state(s)
    with pytest.raises(error, match=match):
        out = getattr(s, method)(value())
        if not isinstance(
            out, (np.ndarray, u.Quantity, pp.StandardScaler, pp.RobustScaler, pp.QuantileScaler)
        ):
            list(out)
    _same_state(before, _state(s))


def test_nan_raise_names_channels_and_changes_nothing():
    x = _data(40)
    s = pp.RobustScaler(nan_policy="raise").fit(x)
    before = _state(s)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values in channel 2 \(nan_policy='raise'\)"):
        s.partial_fit(bad)
    _same_state(before, _state(s))


def test_recording_channels_by_name():
    x = _data(50)
    rec = io.Recording(x * u.uvolt, 100.0, ["Fz", "Cz", "Pz"])
    s = pp.StandardScaler().fit(rec)
    assert s.channel_names_ == ("Fz", "Cz", "Pz")
    shuffled = io.Recording(x[:, ::-1] * u.uvolt, 100.0, ["Pz", "Cz", "Fz"])
    np.testing.assert_allclose(s.transform(shuffled).data, s.transform(rec).data)  # picked by name
    other = io.Recording(x * u.uvolt, 100.0, ["Fz", "C3", "P3"])
    with pytest.raises(ValueError, match="the data lack the fitted channels 'Cz', 'Pz'"):
        s.transform(other)


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
def test_save_load_roundtrip(tmp_path, make):
    x = np.round(_data(150), 2)
    s = make(nan_policy="omit").fit(x[:100] * u.mV)
    path = tmp_path / "scaler.npz"
    un.save(path, s)
    back = un.load(path)
    assert type(back) is type(s) and back.get_params() == s.get_params()
    for name in ("mean_", "var_", "scale_", "center_"):
        if hasattr(s, name) and getattr(s, name) is not None:
            got, want = getattr(back, name), getattr(s, name)
            assert got.unit == want.unit
            np.testing.assert_array_equal(got.mantissa, want.mantissa)
    np.testing.assert_array_equal(back.transform(x * u.mV), s.transform(x * u.mV))
    # what was saved keeps accumulating exactly
    back.partial_fit(x[100:] * u.mV)
    whole = make(nan_policy="omit").fit(x * u.mV)
    np.testing.assert_allclose(back.transform(x * u.mV), whole.transform(x * u.mV), rtol=0, atol=_atol(x))
    with np.load(path, allow_pickle=False) as npz:  # a plain .npz, no pickle needed
        assert "__unitnorm__" in npz.files
    unfitted = tmp_path / "unfitted.npz"
    un.save(unfitted, make())
    with pytest.raises(pp.NotFittedError):
        un.load(unfitted).transform(x)


def test_save_load_keeps_statistics_not_computed(tmp_path):
    s = pp.StandardScaler(with_std=False, per="dimension").fit(_data(30) * u.mV)
    un.save(tmp_path / "s.npz", s)
    back = un.load(tmp_path / "s.npz")
    assert back.var_ is None and back.scale_ is None and back.mean_.unit == u.mV and back.mean_.shape == ()
    np.testing.assert_array_equal(back.transform(_data(5) * u.mV), s.transform(_data(5) * u.mV))


def test_load_refuses_unknown_scaler_class(tmp_path):
    path = tmp_path / "s.npz"
    un.save(path, pp.StandardScaler().fit(_data(20)))
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["__unitnorm__"]))
    header["root"]["class"] = "EvilScaler"
    arrays["__unitnorm__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ValueError, match="field 'class' names 'EvilScaler', which is not a unitnorm scaler"):
        un.load(tmp_path / "evil.npz")


def test_two_pass_fit_keeps_no_tables(tmp_path):
    x = _data(100)
    s = pp.RobustScaler().fit(_recording(x))
    with pytest.raises(ValueError, match="bounded-memory two-pass method"):
        s.partial_fit(x * u.uvolt)
    un.save(tmp_path / "r.npz", s)
    np.testing.assert_array_equal(
        un.load(tmp_path / "r.npz").transform(x * u.uvolt), s.transform(x * u.uvolt)
    )


# ---------------------------------------------------------------------------- as_layer


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
def test_as_layer_equals_transform(make):
    x = _data(200, far=False)
    s = make().fit(x * u.mV)
    layer = s.as_layer()
    y = jax.jit(lambda layer, v: layer(v))(layer, (x / 1e3).astype(np.float32) * u.volt)
    ref = s.transform(x * u.mV)
    # float32 input and arithmetic: agreement to a few float32 roundings of |x| / scale
    bound = 8 * np.finfo(np.float32).eps * (np.abs(x).max(0) / _m(s.scale_) + 1)
    assert np.all(np.abs(np.asarray(y) - ref) <= bound)
    back = layer.inverse(y)
    assert back.unit == u.mV
    np.testing.assert_allclose(np.asarray(back.mantissa), x, rtol=1e-5, atol=1e-6 * np.abs(x).max())
    leaves = jax.tree_util.tree_leaves(layer)
    assert len(leaves) == 2
    with pytest.raises(u.UnitMismatchError, match="ScalerLayer"):
        layer(x * u.nA)


def test_exports():
    assert un.preprocessing is pp
    assert set(pp.__all__) >= {
        "StandardScaler",
        "RobustScaler",
        "QuantileScaler",
        "exponential_moving_standardize",
        "ExponentialMovingStandardizer",
    }
    with pytest.warns(DeprecationWarning, match="moved to unitnorm.preprocessing.channel_stats"):
        old = io.channel_stats
    assert old is pp.channel_stats
    assert not os.environ.get("UNITNORM_NEVER_SET")


@pytest.mark.slow  # a benchmark smoke run: CI's slow set
def test_bench_scalers_quick(monkeypatch):
    # the benchmark runs and its cases agree with scikit-learn (no timing asserted)
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root))
    spec = importlib.util.spec_from_file_location("bench_scalers", root / "benchmarks" / "bench_scalers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "QUICK", (2, 20, 1, 5))
    rows = bench.run(quick=True)
    assert [r["case"] for r in rows][:2] == [
        "sklearn StandardScaler.partial_fit",
        "unitnorm StandardScaler.fit",
    ]
    for r in rows:
        assert r["median_s"] > 0 and r["ratio_to_baseline"] > 0
        if r["max_rel_diff"] is not None:
            assert r["max_rel_diff"] < 1e-12


def test_scaler_layer_checkpoint(tmp_path):
    x = _data(100, far=False)
    layer = pp.RobustScaler().fit(x * u.mV).as_layer()
    un.save(tmp_path / "layer.npz", layer)
    back = un.load(tmp_path / "layer.npz")
    assert type(back) is pp.ScalerLayer and back.in_unit == u.mV
    np.testing.assert_array_equal(np.asarray(back(x * u.mV)), np.asarray(layer(x * u.mV)))


@pytest.mark.parametrize("make", SCALERS, ids=IDS)
@given(a=st.floats(1e-3, 1e3), b=st.floats(-1e3, 1e3), seed=st.integers(0, 3))
@settings(max_examples=8, deadline=None)
def test_affine_invariance(make, a, b, seed):
    # a x + b (a > 0) normalizes like x: center moves with b, spread scales with a
    x = _data(150, seed=seed, far=False)
    y = a * x + b
    ref = make().fit(x).transform(x)
    got = make().fit(y).transform(y)
    np.testing.assert_allclose(got, ref, rtol=0, atol=_atol(y) + _atol(x))


def test_output_kind_follows_the_input():
    import jax.numpy as jnp

    x = _data(40, far=False)
    s = pp.StandardScaler().fit(x.tolist())  # nested lists read as one (time, channels) array
    np.testing.assert_allclose(s.mean_, x.mean(0), rtol=1e-12)
    assert isinstance(s.transform(x), np.ndarray)
    y = s.transform(jnp.asarray(x, dtype=jnp.float32))
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32
    assert s.transform(x.astype(np.int32)).dtype == np.float64
