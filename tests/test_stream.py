"""Streaming statistics and normalization of recordings (unitnorm.preprocessing; writers in unitnorm.io).

References: float64 NumPy formulas on the whole array, and unitnorm.functional in memory.
"""

from __future__ import annotations

import contextlib
import io as stdio
import os
import sys
from pathlib import Path

import brainunit as u
import numpy as np
import pytest
from _oracle import U32, U64, assert_close_f32, f32_bound, perturbed_bound, stats_bounds
from hypothesis import given, settings
from hypothesis import strategies as st

import unitnorm as un
from unitnorm import io
from unitnorm import preprocessing as pp
from unitnorm.io import _stream
from unitnorm.preprocessing import _exact

BUNDLED = Path(un.__file__).parent / "data" / "test_subsecond_crop.edf"


def _data(n=997, c=3, seed=0):
    rng = np.random.default_rng(seed)
    # channels far from zero, of different spreads, one constant
    x = rng.standard_normal((n, c)) * np.array([2.0, 0.01, 0.0][:c]) + np.array([-65.0, 1e3, 7.0][:c])
    return x


# ---------------------------------------------------------------------------- ChannelStats


@given(st.lists(st.integers(1, 300), min_size=1, max_size=6))
@settings(max_examples=40, deadline=None)
def test_merge_equals_whole(sizes):
    x = _data(sum(sizes))
    names, units = ["a", "b", "c"], [u.mvolt] * 3
    stats = pp.ChannelStats.of_block(names, units, np.empty((0, 3)))
    start = 0
    for size in sizes:
        stats = stats.merge(pp.ChannelStats.of_block(names, units, x[start : start + size]))
        start += size
    assert stats.count == x.shape[0]
    np.testing.assert_allclose(stats.mean_mantissa, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.var_mantissa[:2], x.var(axis=0)[:2], rtol=1e-9)
    assert stats.var_mantissa[2] == 0.0  # the constant channel: exactly zero, whatever the chunks


def test_merge_rejects_other_channels():
    a = pp.ChannelStats.of_block(["a"], ["mV"], np.ones((2, 1)))
    b = pp.ChannelStats.of_block(["a"], ["uV"], np.ones((2, 1)))
    with pytest.raises(ValueError, match="same channel names and units"):
        a.merge(b)
    with pytest.raises(TypeError, match="ChannelStats.merge expected ChannelStats"):
        a.merge(np.ones(2))
    with pytest.raises(ValueError, match=r"block of shape \(samples, 1\)"):
        pp.ChannelStats.of_block(["a"], ["mV"], np.ones((2, 2)))


def test_stats_units():
    x = _data(50, 2)
    rec = io.Recording(x, 100.0, ["v", "i"], ["mV", "nA"])
    stats = pp.channel_stats(rec)
    mean, std = stats.channel("i")
    assert mean.unit == u.namp and std.unit == u.namp
    assert float(mean.mantissa) == pytest.approx(x[:, 1].mean(), rel=1e-14)
    with pytest.raises(u.UnitMismatchError, match=r"ChannelStats.mean needs channels of one dimension"):
        _ = stats.mean
    same = pp.channel_stats(io.Recording(x, 100.0, ["a", "b"], ["mV", "uV"]))
    assert same.mean.unit == u.mvolt and same.var.unit == u.mvolt**2
    np.testing.assert_allclose(same.mean.mantissa, x.mean(0) * [1.0, 1e-3], rtol=1e-13)
    np.testing.assert_allclose(same.var.mantissa, x.var(0) * [1.0, 1e-6], rtol=1e-9)
    with pytest.raises(ValueError, match="no channel named 'z'"):
        stats.channel("z")


# ---------------------------------------------------------------------------- streaming = in memory


@given(chunk=st.integers(1, 1200))
@settings(max_examples=25, deadline=None)
def test_streaming_stats_equal_in_memory(chunk):
    x = _data()
    rec = io.Recording(x * u.mV, 1000 * u.Hz)
    stats = pp.channel_stats(rec, chunk_samples=chunk)
    whole = pp.channel_stats(rec, chunk_samples=x.shape[0])
    np.testing.assert_allclose(stats.mean_mantissa, whole.mean_mantissa, rtol=1e-6)
    np.testing.assert_allclose(stats.var_mantissa, whole.var_mantissa, rtol=1e-6)
    # and both equal the float64 NumPy formula
    np.testing.assert_allclose(stats.mean_mantissa, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var_mantissa, x.var(0), rtol=1e-8, atol=0)


@given(chunk=st.integers(1, 1200))
@settings(max_examples=25, deadline=None)
def test_streaming_normalization_equals_in_memory(chunk):
    x = _data()
    rec = io.Recording(x * u.mV, 1000 * u.Hz)
    z, _ = pp.normalize_recording(rec, chunk_samples=chunk)
    z_whole, _ = pp.normalize_recording(rec, chunk_samples=x.shape[0])
    np.testing.assert_allclose(z, z_whole, atol=1e-6, rtol=0)
    std = x.std(0)
    expected = np.where(std > 0, (x - x.mean(0)) / np.where(std > 0, std, 1), 0.0)
    np.testing.assert_allclose(z, expected, atol=1e-6, rtol=0)
    assert z.dtype == np.float32 and np.all(z[:, 2] == 0)


def test_streaming_agrees_with_functional_compute_stats():
    rec = io.read_edf(BUNDLED)
    stats = pp.channel_stats(rec, chunk_seconds=7.0)
    mean, var = un.functional.compute_stats(rec.data, axes=0)  # in memory, float32, JAX
    assert mean.unit == u.uvolt
    np.testing.assert_allclose(
        np.asarray(mean.mantissa), stats.mean_mantissa, atol=1e-5 * stats.std_mantissa[0]
    )
    np.testing.assert_allclose(np.asarray(var.mantissa), stats.var_mantissa, rtol=1e-5)
    y = un.functional.normalize(rec.data, mean, var, reduction_axes=0, epsilon=0.0 * u.uvolt**2)
    z, _ = pp.normalize_recording(rec, chunk_seconds=7.0)
    # y: float32 all the way (15360-value sums in the CPU's order, the input rounded to float32);
    # z: float64 statistics, rounded once to float32. Each against the float64 truth.
    x64 = np.asarray(rec.data.mantissa, np.float64)
    truth = (x64 - x64.mean(0)) / x64.std(0)
    bound = f32_bound(x64, 0) + perturbed_bound(x64, 0, U32 * np.abs(x64).max())
    assert_close_f32(y, truth, bound)
    assert_close_f32(z, truth, 2 * U32 * np.abs(truth).max())


def test_volts_and_microvolts_give_same_zscores():
    x = _data(500, 2)
    in_v = io.Recording(x * u.volt, 250.0)
    in_uv = io.Recording((x * 1e6) * u.uvolt, 250.0)
    z_v, stats_v = pp.normalize_recording(in_v, chunk_samples=64)
    z_uv, stats_uv = pp.normalize_recording(in_uv, chunk_samples=101)
    np.testing.assert_allclose(z_v, z_uv, atol=1e-6, rtol=0)
    np.testing.assert_allclose(stats_v.mean.to_decimal(u.uvolt), stats_uv.mean.mantissa, rtol=1e-12)
    # and on the real EEG, read in uV and selected in V
    eeg = io.read_edf(BUNDLED)
    z1, _ = pp.normalize_recording(eeg)
    z2, _ = pp.normalize_recording(eeg.select(u.volt))
    np.testing.assert_allclose(z1, z2, atol=1e-6, rtol=0)


def test_robust_stats_and_normalization():
    x = _data(801, 3)
    x[::50, 0] += 500.0  # outliers
    rec = io.Recording(x, 100.0, channel_units=["mV", "mV", "uV"])
    robust = pp.robust_stats(rec)
    med = np.median(x, axis=0)
    mad = np.median(np.abs(x - med), axis=0)
    np.testing.assert_array_equal(robust.median_mantissa, med)
    np.testing.assert_array_equal(robust.mad_mantissa, mad)
    assert robust.channel("ch1")[0].unit == u.mvolt
    z, used = pp.normalize_recording(rec, method="mad", chunk_samples=77)
    assert isinstance(used, pp.RobustStats)
    scale = 1.482602218505602 * mad
    expected = np.where(scale > 0, (x - med) / np.where(scale > 0, scale, 1), 0.0)
    np.testing.assert_allclose(z, expected, atol=1e-5, rtol=1e-6)


def test_robust_stats_refine_in_small_windows(monkeypatch):
    # tiny histograms and collection windows force several refinement passes; still exact
    x = _data(3000, 3)
    x[:, 1] = np.round(x[:, 1], 2)  # quantized: many repeated values
    rec = io.Recording(x * u.mV, 100.0)
    monkeypatch.setattr(_exact, "BINS", 4)
    monkeypatch.setattr(_exact, "COLLECT_LIMIT", 7)
    small = pp.robust_stats(rec, chunk_samples=111)
    med = np.median(x, axis=0)
    np.testing.assert_array_equal(small.median_mantissa, med)
    np.testing.assert_array_equal(small.mad_mantissa, np.median(np.abs(x - med), axis=0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chunk_samples": 0}, ValueError, "chunk_samples must be >= 1"),
        ({"chunk_samples": 2.5}, TypeError, "chunk_samples must be an int"),
        ({"chunk_seconds": -1.0}, ValueError, "chunk_seconds must be finite and > 0"),
        ({"chunk_seconds": 1.0, "chunk_samples": 5}, ValueError, "not both"),
        (
            {"method": "minmax"},
            ValueError,
            r"method must be one of 'zscore', 'robust', 'mad', 'quantile', got 'minmax'",
        ),
    ],
)
def test_normalize_rejects(kwargs, error, match):
    rec = io.Recording(np.zeros((10, 1)), 10.0)
    with pytest.raises(error, match=match):
        pp.normalize_recording(rec, **kwargs)


def test_empty_and_wrong_type():
    with pytest.raises(ValueError, match="channel_stats: the recording has no samples"):
        pp.channel_stats(io.Recording(np.zeros((0, 2)), 10.0))
    with pytest.raises(TypeError, match="channel_stats expected a unitnorm.io.Recording, got ndarray"):
        pp.channel_stats(np.zeros((3, 2)))


def test_chunk_seconds_uses_rate():
    rec = io.read_edf(BUNDLED)
    assert _stream.chunk_size(rec, 2.0, None) == 256
    assert _stream.chunk_size(rec, None, None) == 2**20  # one channel: the default ~2**20 values


# ---------------------------------------------------------------------------- progress bars


class _Terminal(stdio.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal(monkeypatch):
    rec = io.Recording(_data(2000, 2), 100.0)
    pipe = stdio.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    pp.channel_stats(rec, chunk_samples=100)
    assert pipe.getvalue() == ""  # not a terminal: no bar
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    pp.channel_stats(rec, chunk_samples=100)
    assert "statistics" in term.getvalue()
    term2 = _Terminal()
    monkeypatch.setattr(sys, "stderr", term2)
    pp.channel_stats(rec, chunk_samples=100, progress=False)
    assert term2.getvalue() == ""


# ---------------------------------------------------------------------------- writing .npz


def test_write_normalized_roundtrip(tmp_path):
    rec = io.read_edf(BUNDLED)
    out = tmp_path / "eeg.npz"
    pp.write_normalized(rec, out, chunk_seconds=3.0)
    z, used = pp.normalize_recording(rec)
    with np.load(out, allow_pickle=False) as npz:
        assert set(npz.files) >= {"data", "channel_names", "mean", "mean_unit", "std", "std_unit", "format"}
        np.testing.assert_allclose(npz["data"], z, atol=1e-6)
        assert npz["data"].dtype == np.float32 and npz["data"].shape == (15360, 1)
        assert npz["channel_names"].tolist() == ["Fp1"]
        assert npz["mean_unit"].tolist() == ["uV"] and npz["std_unit"].tolist() == ["uV"]
        # float64 statistics from 3 s chunks and from the default chunks: two summation orders
        # (numpy's SIMD width decides its own), each within the float64 bound of the truth
        x64 = np.asarray(rec.data.mantissa, np.float64)
        mean_err, var_err = stats_bounds(x64, 0, roundoff=U64)
        assert_close_f32(npz["mean"], used.mean_mantissa, 2 * float(mean_err.max()))
        assert_close_f32(npz["std"], used.std_mantissa, float((var_err / x64.std(0)).max()))
        assert str(npz["method"]) == "zscore" and float(npz["sampling_rate"]) == 128.0
        # data * scale + center gives the samples back
        back = npz["data"] * npz["scale"] + npz["center"]
        np.testing.assert_allclose(back, rec.data.mantissa, atol=1e-5 * float(npz["std"][0]))
    loaded = io.load_normalized(out)
    assert loaded["mean"][0].unit == u.uvolt and loaded["method"] == "zscore"
    assert loaded["sampling_rate"].unit == u.hertz
    assert [p.name for p in tmp_path.iterdir()] == ["eeg.npz"]  # no temporary file left


def test_write_normalized_robust_fields(tmp_path):
    rec = io.Recording(_data(200, 2) * u.nA, 50.0)
    out = tmp_path / "robust.npz"
    pp.write_normalized(rec, out, method="mad")
    loaded = io.load_normalized(out)
    assert loaded["method"] == "mad"
    assert [q.unit for q in loaded["mad"]] == [u.namp, u.namp]
    np.testing.assert_allclose(
        [float(q.mantissa) for q in loaded["scale"]],
        [1.482602218505602 * float(q.mantissa) for q in loaded["mad"]],
    )


class _FailingSource:
    """A source whose file breaks after a few chunks (as a disk or network read might)."""

    def __init__(self, x, fail_at):
        self.x, self.fail_at, self.n_samples = x, fail_at, x.shape[0]

    @contextlib.contextmanager
    def open(self):
        def read(start, stop, columns):
            if start >= self.fail_at:
                raise OSError("simulated read error")
            return self.x[start:stop][:, list(columns)]

        yield read


def test_write_is_atomic_on_failure(tmp_path):
    x = _data(1000, 2)
    out = tmp_path / "out.npz"
    out.write_bytes(b"previous contents")
    # fails in the second (normalizing) pass, after part of the output was written
    calls = {"n": 0}

    class SecondPassFails(_FailingSource):
        @contextlib.contextmanager
        def open(self):
            calls["n"] += 1
            if calls["n"] == 1:
                with _FailingSource(self.x, 10**9).open() as read:
                    yield read
            else:
                with super().open() as read:
                    yield read

    rec = io.Recording._from_source(SecondPassFails(x, 500), ["a", "b"], [u.mvolt] * 2, 100.0)
    with pytest.raises(OSError, match="simulated read error"):
        pp.write_normalized(rec, out, chunk_samples=100)
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def test_write_after_input_vanished(tmp_path):
    copy = tmp_path / "copy.edf"
    copy.write_bytes(BUNDLED.read_bytes())
    rec = io.read_edf(copy)
    copy.unlink()
    with pytest.raises(ValueError, match="not a readable EDF/BDF file"):
        pp.write_normalized(rec, tmp_path / "out.npz")
    assert list(tmp_path.iterdir()) == []


def test_write_needs_existing_folder(tmp_path):
    rec = io.Recording(np.ones((3, 1)), 1.0)
    with pytest.raises(FileNotFoundError, match="the output folder .* does not exist"):
        pp.write_normalized(rec, tmp_path / "no" / "such" / "out.npz")


def test_load_normalized_names_missing_field(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, format=np.array(_stream.FORMAT), method=np.array("zscore"), data=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="field 'channel_names' is missing"):
        io.load_normalized(path)
    other = tmp_path / "other.npz"
    arrays = {k: np.zeros(1) for k in _stream._REQUIRED}
    arrays["format"] = np.array("something/9")
    np.savez(other, **arrays)
    with pytest.raises(ValueError, match="field 'format' is 'something/9'"):
        io.load_normalized(other)
    assert os.path.exists(path)


def test_callers_array_is_never_modified(tmp_path):
    x = _data(300, 3)
    before = x.copy()
    rec = io.Recording(x, 100.0, channel_units="mV")
    pp.normalize_recording(rec, chunk_samples=7)
    pp.normalize_recording(rec, method="mad")
    pp.normalize_recording(rec, method="quantile")
    pp.write_normalized(rec.select(u.volt), tmp_path / "o.npz")
    np.testing.assert_array_equal(x, before)


@pytest.mark.slow  # a benchmark smoke run: CI's slow set
def test_benchmark_smoke(monkeypatch):
    # the streaming benchmark runs and its cases agree (no timing asserted)
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_streaming", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_streaming.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "QUICK", (3, 20, 1))
    rows = bench.run(quick=True)
    assert [r["case"] for r in rows] == [
        "numpy memmap",
        "numpy pyedflib",
        "unitnorm channel_stats",
        "unitnorm write_normalized",
        "mne zscore + write",
    ]
    for r in rows:
        assert r["mb_per_s"] > 0 and r["input_mb"] == pytest.approx(3 * 20 * 256 * 2 / 1e6, abs=1e-3)
        assert r["max_rel_diff_mean"] < 1e-10 and r["max_rel_diff_std"] < 1e-10
