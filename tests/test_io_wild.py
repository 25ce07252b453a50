"""Recordings in the wild (issue 14): files open elsewhere, threads, EDF+D, header lies,
unknown units, mixed rates, FIF and neo formats, and the error lines that describe them.

References are the libraries that wrote or read the same file (pyedflib, MNE, neo, pynwb)
and, for files written here byte by byte, the EDF formula in float64 NumPy.
"""

from __future__ import annotations

import ast
import re
import shlex
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import brainunit as u
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unitnorm import io
from unitnorm.preprocessing import channel_stats

pyedflib = pytest.importorskip("pyedflib")
EDF_DATA = Path(pyedflib.__file__).parent / "tests" / "data"
GENERATOR = EDF_DATA / "test_generator.edf"


# ---------------------------------------------------------------------------- an EDF writer for tests


def edf_bytes(
    signals: list[dict],
    records: list[list[np.ndarray]],
    duration: float = 1.0,
    reserved: str = "",
    n_records: int | None = None,
    bdf: bool = False,
) -> bytes:
    """An EDF file from the spec's field layout; ``records[r][i]`` is signal i's int16 samples
    (or raw bytes for an annotation signal) in record r."""
    ns = len(signals)

    def field(value: object, width: int) -> bytes:
        text = str(value).encode("latin-1")
        assert len(text) <= width, (value, width)
        return text.ljust(width, b" ")

    head = (
        (b"\xffBIOSEMI" if bdf else b"0       ")
        + field("X X X X", 80)
        + field("Startdate 01-JAN-2024 X X X", 80)
    )
    head += field("01.01.24", 8) + field("00.00.00", 8) + field(256 * (ns + 1), 8) + field(reserved, 44)
    head += field(len(records) if n_records is None else n_records, 8) + field(f"{duration:g}", 8)
    head += field(ns, 4)
    columns = [
        ("label", 16),
        ("transducer", 80),
        ("dim", 8),
        ("pmin", 8),
        ("pmax", 8),
        ("dmin", 8),
        ("dmax", 8),
        ("prefilter", 80),
        ("spr", 8),
        ("reserved", 32),
    ]
    for key, width in columns:
        head += b"".join(
            s[key] if isinstance(s.get(key), bytes) else field(s.get(key, ""), width) for s in signals
        )
    assert len(head) == 256 * (ns + 1)
    body = bytearray()
    for record in records:
        for s, values in zip(signals, record, strict=True):
            if isinstance(values, bytes):
                assert len(values) == (3 if bdf else 2) * s["spr"]
                body += values
            elif bdf:
                assert values.shape == (s["spr"],)
                body += np.asarray(values, dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
            else:
                assert values.shape == (s["spr"],)
                body += np.asarray(values, dtype="<i2").tobytes()
    return head + bytes(body)


def eeg(label: str, spr: int, dim: str = "uV", pmin: float = -3276.8, pmax: float = 3276.7) -> dict:
    return {"label": label, "dim": dim, "pmin": pmin, "pmax": pmax, "dmin": -32768, "dmax": 32767, "spr": spr}


def physical(s: dict, digital: np.ndarray) -> np.ndarray:
    return s["pmin"] + (digital.astype(np.float64) - s["dmin"]) * (s["pmax"] - s["pmin"]) / (
        s["dmax"] - s["dmin"]
    )


def tal(onset: float, spr: int, width: int = 2) -> bytes:
    text = f"+{onset:g}\x14\x14\x00".encode()
    return text.ljust(width * spr, b"\x00")


@settings(max_examples=25, deadline=None)
@given(
    bdf=st.booleans(),
    spr=st.integers(1, 6),
    n_signals=st.integers(1, 4),
    steps=st.lists(
        st.integers(0, 3), min_size=1, max_size=5
    ),  # record r starts `step` records after r-1 ends
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_edf_reader_equals_the_formula(tmp_path_factory, bdf, spr, n_signals, steps, seed, data):
    """Random EDF/BDF(+D) files written here: every window equals the float64 formula, gaps NaN."""
    rng = np.random.default_rng(seed)
    top = 2**23 - 1 if bdf else 32767
    signals = []
    for i in range(n_signals):
        dmin = int(rng.integers(-top - 1, 0))
        dmax = int(rng.integers(dmin + 1, top + 1))
        pmin, pmax = (float(np.round(v, 2)) for v in rng.uniform(-9999, 9999, 2))
        signals.append(
            {
                "label": f"S{i}",
                "dim": "mV",
                "pmin": pmin,
                "pmax": pmax,
                "dmin": dmin,
                "dmax": dmax,
                "spr": spr,
            }
        )
    discontinuous = any(steps[1:])
    onsets = np.cumsum([0] + [1 + k for k in steps[1:]]).astype(float)  # in records of 1 s
    digital = [[rng.integers(sg["dmin"], sg["dmax"] + 1, spr) for sg in signals] for _ in onsets]
    all_signals = signals + (
        [{**eeg("BDF Annotations" if bdf else "EDF Annotations", 8), "dim": ""}] if discontinuous else []
    )
    records = [
        d + ([tal(t, 8, 3 if bdf else 2)] if discontinuous else [])
        for d, t in zip(digital, onsets, strict=True)
    ]
    kind = "BDF" if bdf else "EDF"
    path = tmp_path_factory.mktemp("prop") / "x.edf"
    path.write_bytes(edf_bytes(all_signals, records, reserved=f"{kind}+D" if discontinuous else "", bdf=bdf))
    expected = np.full((int(onsets[-1] + 1) * spr, n_signals), np.nan)
    for t, d in zip(onsets, digital, strict=True):
        for j, sg in enumerate(signals):
            expected[int(t) * spr : int(t) * spr + spr, j] = physical(sg, d[j])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", io.RecordingWarning)
        rec = io.read_edf(path)
    assert rec.n_samples == expected.shape[0] and rec.channel_units == (u.mvolt,) * n_signals
    a = data.draw(st.integers(0, rec.n_samples))
    b = data.draw(st.integers(a, rec.n_samples))
    np.testing.assert_allclose(rec.mantissa(a, b), expected[a:b], rtol=1e-15, atol=1e-9)
    np.testing.assert_allclose(rec.mantissa(), expected, rtol=1e-15, atol=1e-9)
    assert sum(y - x for x, y in rec.gaps) == int(np.isnan(expected[:, 0]).sum())


# ---------------------------------------------------------------------------- 3: open elsewhere, threads


def test_edf_readable_while_pyedflib_and_mne_have_it_open():
    mne = pytest.importorskip("mne")
    with pyedflib.EdfReader(str(GENERATOR)) as other:
        reference = np.stack([other.readSignal(i) for i in range(other.signals_in_file)], axis=1)
        raw = mne.io.read_raw_edf(GENERATOR, preload=False, verbose="error")
        rec = io.read_edf(GENERATOR)  # pyedflib refuses a second open of this file right now
        data = rec.data.mantissa
        mne_volts = raw.get_data(start=100, stop=900).T
        raw.close()
    np.testing.assert_allclose(data, reference, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.read(100, 900).mantissa * 1e-6, mne_volts, rtol=1e-12, atol=1e-15)


def test_edf_read_from_many_threads():
    rec = io.read_edf(GENERATOR)
    whole = rec.data.mantissa
    rng = np.random.default_rng(0)
    windows = [tuple(sorted(rng.integers(0, rec.n_samples, 2))) for _ in range(64)]
    barrier = threading.Barrier(8)

    def work(k: int) -> list[bool]:
        barrier.wait()
        return [np.array_equal(rec.mantissa(int(a), int(b)), whole[a:b]) for a, b in windows[k::8]]

    with ThreadPoolExecutor(8) as pool:
        results = [ok for part in pool.map(work, range(8)) for ok in part]
    assert len(results) == 64 and all(results)


def test_pyedflib_fallback_is_serialized_and_says_file_is_open(monkeypatch):
    from unitnorm.io import _edf

    fast = io.read_edf(GENERATOR, channels=["ramp", "noise"]).data.mantissa

    def refuse(path):
        raise _edf.HeaderError("forced")

    monkeypatch.setattr(_edf, "Header", refuse)  # as for a header our reader does not understand
    rec = io.read_edf(GENERATOR, channels=["ramp", "noise"])
    assert isinstance(rec._source, _edf.PyedflibSource)
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda k: rec.mantissa(k * 1000, (k + 1) * 1000), range(4)))
    np.testing.assert_array_equal(np.concatenate(parts), fast[:4000])
    with pyedflib.EdfReader(str(GENERATOR)), pytest.raises(ValueError) as info:
        io.read_edf(GENERATOR)
    text = str(info.value)
    assert "pyedflib has this file open already" in text and "close the other reader" in text
    assert "not a readable" not in text


# ---------------------------------------------------------------------------- 4: error lines


def test_edf_errors_name_the_path_once_and_the_signal(tmp_path):
    s = [eeg("Fp1", 4), eeg("Fp2", 4)]
    records = [[np.arange(4), np.arange(4)] for _ in range(3)]
    bad = tmp_path / "bad_label.edf"
    raw = bytearray(edf_bytes(s, records))
    raw[256 + 16 : 256 + 20] = b"F\x07p2"  # a control character in signal 2's label
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as info:
        io.read_edf(bad)
    text = str(info.value)
    assert text.count(str(bad)) == 1, text
    assert re.search(r"not a readable EDF/BDF file: signal 2: the label b'F\\x07p2 *' holds control", text)
    truncated = tmp_path / "cut.edf"
    truncated.write_bytes(edf_bytes(s, records)[:-5])
    with pytest.raises(ValueError) as info:
        io.read_edf(truncated)
    text = str(info.value)
    assert text.count(str(truncated)) == 1, text
    assert "truncated: the header says 3 data records but the file holds 2 and 11 bytes" in text


# ---------------------------------------------------------------------------- 6: EDF+D


@pytest.fixture(scope="module")
def edf_d(tmp_path_factory):
    """An EDF+D: 2 signals of 8 samples per 0.5 s record, 5 records at onsets with 2 gaps."""
    rng = np.random.default_rng(3)
    signals = [eeg("Cz", 8), eeg("Pz", 8, pmin=-100.0, pmax=100.0), {**eeg("EDF Annotations", 8), "dim": ""}]
    onsets = [0.0, 0.5, 2.0, 2.5, 4.25]  # gaps 1.0..2.0 s and 3.0..4.25 s
    digital = [[rng.integers(-30000, 30000, 8) for _ in range(2)] for _ in onsets]
    records = [d + [tal(t, 8)] for d, t in zip(digital, onsets, strict=True)]
    path = tmp_path_factory.mktemp("edfd") / "gappy.edf"
    path.write_bytes(edf_bytes(signals, records, duration=0.5, reserved="EDF+D"))
    return path, signals, onsets, digital


def test_edf_plus_d_gaps_are_nan(edf_d):
    path, signals, onsets, digital = edf_d
    with pytest.warns(io.RecordingWarning, match=r"EDF\+D \(discontinuous\): 2 gaps \(2.25 s in all\)"):
        rec = io.read_edf(path)
    rate = 16.0
    expected = np.full((int(round(4.75 * rate)), 2), np.nan)
    for t, d in zip(onsets, digital, strict=True):
        i = int(round(t * rate))
        for j in range(2):
            expected[i : i + 8, j] = physical(signals[j], d[j])
    assert rec.n_samples == expected.shape[0] and rec.channel_names == ("Cz", "Pz")
    np.testing.assert_allclose(rec.data.mantissa, expected, rtol=0, atol=1e-9)
    assert rec.gaps == ((16, 32), (48, 68))
    assert any("discontinuous" in note for note in rec.notes)
    np.testing.assert_allclose(
        rec.mantissa(30, 50), expected[30:50], rtol=0, atol=1e-9
    )  # windows across gaps


def test_edf_plus_d_omit_gives_stats_of_recorded_samples(edf_d):
    import unitnorm as un

    mne = pytest.importorskip("mne")
    path = edf_d[0]
    with pytest.warns(io.RecordingWarning):
        rec = io.read_edf(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE's own notes about this file
        joined = mne.io.read_raw_edf(path, preload=True, verbose="error").get_data(picks=["Cz", "Pz"]).T
    x = rec.data.mantissa
    kept = x[~np.isnan(x).any(axis=1)]
    np.testing.assert_allclose(kept * 1e-6, joined, rtol=1e-12, atol=1e-15)  # MNE joins the records
    mean, var = un.functional.compute_stats(rec.data, axes=0, nan_policy="omit")
    np.testing.assert_allclose(
        np.asarray(mean.to_decimal(u.uvolt)), joined.mean(0) * 1e6, rtol=1e-5, atol=1e-3
    )
    np.testing.assert_allclose(np.asarray(var.to_decimal(u.uvolt**2)), joined.var(0) * 1e12, rtol=1e-4)


def test_edf_plus_d_overlapping_records_refused(tmp_path):
    signals = [eeg("Cz", 4), {**eeg("EDF Annotations", 8), "dim": ""}]
    records = [[np.arange(4), tal(t, 8)] for t in (0.0, 1.0, 1.5)]
    path = tmp_path / "overlap.edf"
    path.write_bytes(edf_bytes(signals, records, reserved="EDF+D"))
    with pytest.raises(
        ValueError, match=r"EDF\+D \(discontinuous\) file: data record 2 starts at 1.5 s, before"
    ):
        io.read_edf(path)


# ---------------------------------------------------------------------------- 7: mixed rates


def test_mixed_rates_message_is_ready_to_paste():
    path = EDF_DATA / "test_generator.bdf"
    with pytest.raises(ValueError) as info:
        io.read_edf(path)
    text = str(info.value)
    assert "different sampling rates" in text
    groups = re.findall(r"(\d+(?:\.\d+)?) Hz: --channels (.*?) \(Python: channels=(\[.*?\])\)", text)
    with pyedflib.EdfReader(str(path)) as f:
        labels = [f.getLabel(i) for i in range(f.signals_in_file)]
        rates = {f.getSampleFrequency(i) for i in range(f.signals_in_file)}
    assert len(groups) == len(rates) > 1, text
    seen = []
    for rate, args, python in groups:
        cli = io.read_edf(path, channels=shlex.split(args))
        assert float(cli.sampling_rate.to_decimal(u.hertz)) == float(rate)
        assert list(cli.channel_names) == ast.literal_eval(python)
        seen += cli.channel_names
    assert sorted(seen) == sorted(labels)


def test_read_edf_by_rate_one_recording_per_rate():
    path = EDF_DATA / "test_generator.bdf"
    recs = io.read_edf_by_rate(path)
    with pyedflib.EdfReader(str(path)) as f:
        labels = [f.getLabel(i) for i in range(f.signals_in_file)]
        rates = [f.getSampleFrequency(i) for i in range(f.signals_in_file)]
        signals = [f.readSignal(i) for i in range(f.signals_in_file)]
    assert [float(r.sampling_rate.to_decimal(u.hertz)) for r in recs] == list(dict.fromkeys(rates))
    assert sorted(n for r in recs for n in r.channel_names) == sorted(labels)
    for rec in recs:
        rate = float(rec.sampling_rate.to_decimal(u.hertz))
        members = [lab for lab, r in zip(labels, rates, strict=True) if r == rate]
        assert list(rec.channel_names) == members
        expected = np.stack([signals[labels.index(m)] for m in members], axis=1)
        np.testing.assert_allclose(rec.mantissa(), expected, rtol=0, atol=1e-9)
    single = io.read_edf_by_rate(GENERATOR)
    assert len(single) == 1 and single[0].channel_names == io.read_edf(GENERATOR).channel_names


# ---------------------------------------------------------------------------- 8: unknown units


@pytest.fixture(scope="module")
def odd_units(tmp_path_factory):
    from pyedflib import highlevel

    path = tmp_path_factory.mktemp("units") / "polygraph.edf"
    rng = np.random.default_rng(5)
    dims = ["uV", "l/min", "cmH2O", "a.u.", "n.a.", "mV"]
    names = ["C3", "Flow", "Pressure", "Pleth", "Marker", "ECG"]
    headers = [
        highlevel.make_signal_header(n, dimension=d, sample_frequency=64, physical_min=-100, physical_max=100)
        for n, d in zip(names, dims, strict=True)
    ]
    highlevel.write_edf(str(path), [rng.standard_normal(640) * 20 for _ in names], headers)
    return path


def test_unknown_units_refused_with_the_flag_named(odd_units):
    with pytest.raises(ValueError) as info:
        io.read_edf(odd_units)
    text = str(info.value)
    assert "4 channels have units unitnorm does not know: 'Flow' ('l/min'), 'Pressure' ('cmH2O')" in text
    assert "skip_unknown_units=True (command line: --skip-unknown-units)" in text
    with pytest.raises(ValueError, match="--skip-unknown-units"):
        io.read_recording(odd_units)


def test_skip_unknown_units_leaves_them_out_with_one_warning(odd_units):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = io.read_recording(odd_units, skip_unknown_units=True)
    assert len(caught) == 1 and caught[0].category is io.RecordingWarning
    text = str(caught[0].message)
    for name in ("'Flow' ('l/min')", "'Pressure' ('cmH2O')", "'Pleth' ('a.u.')", "'Marker' ('n.a.')"):
        assert name in text
    assert rec.channel_names == ("C3", "ECG") and rec.channel_units == (u.uvolt, u.mvolt)
    with pyedflib.EdfReader(str(odd_units)) as f:
        expected = np.stack([f.readSignal(0), f.readSignal(5)], axis=1)
    np.testing.assert_allclose(rec.mantissa(), expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- 11: header lies


def test_header_with_too_few_records_warns_and_reads_all(tmp_path):
    mne = pytest.importorskip("mne")
    s = [eeg("Cz", 16)]
    rng = np.random.default_rng(7)
    digital = [[rng.integers(-9000, 9000, 16)] for _ in range(6)]
    path = tmp_path / "liar.edf"
    path.write_bytes(edf_bytes(s, digital, n_records=5))
    with pytest.warns(io.RecordingWarning, match=r"the header says 5 data records but the file holds 6"):
        rec = io.read_edf(path)
    expected = physical(s[0], np.concatenate([d[0] for d in digital]))
    np.testing.assert_allclose(rec.data.mantissa[:, 0], expected, rtol=0, atol=1e-9)
    with pytest.warns(RuntimeWarning, match="Number of records from the header does not match"):
        mne_data = mne.io.read_raw_edf(path, preload=True, verbose="warning").get_data()[0]
    np.testing.assert_allclose(rec.data.mantissa[:, 0] * 1e-6, mne_data, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- 9: FIF and neo formats


def write_brainvision(folder: Path, data: np.ndarray, resolution: list[float], rate: float) -> Path:
    """A BrainVision header/marker/int16 data triple (the format's text spec), channels in µV."""
    names = [f"E{i + 1}" for i in range(data.shape[1])]
    channel_lines = "\n".join(
        f"Ch{i + 1}={n},,{r:g},\u00b5V" for i, (n, r) in enumerate(zip(names, resolution, strict=True))
    )
    (folder / "rec.vhdr").write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
        "DataFile=rec.eeg\nMarkerFile=rec.vmrk\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
        f"NumberOfChannels={data.shape[1]}\nSamplingInterval={1e6 / rate:g}\n\n"
        f"[Binary Infos]\nBinaryFormat=INT_16\n\n[Channel Infos]\n{channel_lines}\n",
        encoding="utf-8",
    )
    (folder / "rec.vmrk").write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
        "DataFile=rec.eeg\n\n[Marker Infos]\nMk1=New Segment,,1,1,0,20240101000000000000\n",
        encoding="utf-8",
    )
    (folder / "rec.eeg").write_bytes(np.ascontiguousarray(data, dtype="<i2").tobytes())
    return folder / "rec.vhdr"


@pytest.fixture
def collect_neo_files():
    """neo's BrainVision reader leaves its memory-mapped file to the garbage collector: collect it here.

    Otherwise a later, unrelated test may see the ResourceWarning of its finalizer.
    """
    yield
    import gc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.usefixtures("collect_neo_files")
def test_brainvision_through_neo_streamed(tmp_path):
    pytest.importorskip("neo")
    mne = pytest.importorskip("mne")
    rng = np.random.default_rng(11)
    digital = rng.integers(-20000, 20000, size=(3000, 3))
    resolution = [0.1, 0.5, 0.049]
    path = write_brainvision(tmp_path, digital, resolution, rate=500.0)
    rec = io.read_recording(path)
    from unitnorm.io import _neo

    assert isinstance(rec._source, _neo.NeoProxySource)  # a lazy proxy, read per window
    assert rec.channel_names == ("E1", "E2", "E3") and rec.channel_units == (u.uvolt,) * 3
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == 500.0
    expected = digital * np.array(resolution)  # the format: value = digital * resolution, in µV
    np.testing.assert_allclose(rec.mantissa(), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(rec.mantissa(1234, 2345), expected[1234:2345], rtol=1e-6, atol=1e-9)
    mne_volts = mne.io.read_raw_brainvision(path, preload=True, verbose="error").get_data().T
    # neo scales in float32 (rounding 2^-24 relative); MNE in float64
    np.testing.assert_allclose(rec.mantissa() * 1e-6, mne_volts, rtol=2**-22, atol=1e-12)
    picked = io.read_recording(path, channels=["E3", "E1"])
    np.testing.assert_allclose(picked.mantissa(10, 20), expected[10:20, [2, 0]], rtol=1e-6)


@pytest.mark.usefixtures("collect_neo_files")
def test_from_neo_streams_a_proxy_chunk_by_chunk(tmp_path):
    neo = pytest.importorskip("neo")
    rng = np.random.default_rng(13)
    digital = rng.integers(-20000, 20000, size=(2000, 2))
    path = write_brainvision(tmp_path, digital, [0.1, 0.2], rate=1000.0)
    proxy = neo.io.BrainVisionIO(str(path)).read_block(lazy=True).segments[0].analogsignals[0]
    windows = []
    load = proxy.load

    def counted(*args, **kwargs):  # the real load, its calls noted
        signal = load(*args, **kwargs)
        windows.append(signal.shape[0])
        return signal

    proxy.load = counted
    rec = io.from_neo(proxy)
    stats = channel_stats(rec, chunk_samples=300, progress=False)
    assert windows == [300] * 6 + [200]  # never the whole signal at once
    expected = digital * np.array([0.1, 0.2])
    np.testing.assert_allclose(stats.mean_mantissa, expected.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std_mantissa, expected.std(0), rtol=1e-6)


def test_fif_through_mne_by_content(tmp_path):
    mne = pytest.importorskip("mne")
    rng = np.random.default_rng(12)
    info = mne.create_info(["EEG1", "EEG2", "MAG1"], 200.0, ["eeg", "eeg", "mag"])
    values = rng.standard_normal((3, 1000)) * np.array([[2e-5], [3e-5], [1e-12]])
    raw = mne.io.RawArray(values, info, verbose="error")
    fif = tmp_path / "session_raw.fif"
    raw.save(fif, verbose="error")
    renamed = tmp_path / "session.dat"  # no telling name: the first bytes decide
    renamed.write_bytes(fif.read_bytes())
    for path in (fif, renamed):
        rec = io.read_recording(path)
        assert rec.channel_units == (u.volt, u.volt, u.tesla)
        reference = mne.io.read_raw_fif(fif, preload=True, verbose="error").get_data()
        np.testing.assert_array_equal(rec.select(u.volt).mantissa(), reference[:2].T)
        np.testing.assert_array_equal(rec.pick("MAG1").mantissa(500, 700)[:, 0], reference[2, 500:700])
    with pytest.raises(
        ValueError, match=r"name= picks an NWB TimeSeries or a neo signal; this is a FIF file"
    ):
        io.read_recording(fif, name="x")


def test_unknown_format_says_what_was_tried(tmp_path):
    notes = tmp_path / "notes.vhdr"  # neo's BrainVision reader takes the name, not the content
    notes.write_text("hello, this is not a recording\n")
    with pytest.raises(ValueError) as info:
        io.read_recording(notes)
    text = str(info.value)
    assert text.startswith(f"{notes}: not an EDF, BDF or NWB file (it starts with b'hello")
    assert "neo cannot read it (BrainVisionIO:" in text and text.count(str(notes)) == 1


# ---------------------------------------------------------------------------- 4: NWB error lines


@pytest.fixture(scope="module")
def nwb13(tmp_path_factory):
    pynwb = pytest.importorskip("pynwb")
    import datetime

    import h5py

    nwb = pynwb.NWBFile(
        session_description="unitnorm test",
        identifier="unitnorm-13",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    for k in range(13):
        series = pynwb.TimeSeries(
            name=f"probe_{k:02d}_lfp_filtered", data=np.arange(20.0), unit="V", rate=10.0
        )
        nwb.add_acquisition(series)
    folder = tmp_path_factory.mktemp("nwb13")
    path = folder / "many.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as writer:
        writer.write(nwb)
    norate = folder / "norate.nwb"
    norate.write_bytes(path.read_bytes())
    with h5py.File(norate, "a") as f:
        del f["acquisition/probe_03_lfp_filtered/starting_time"]
    return path, norate


def test_nwb_many_series_keep_the_fix_in_one_line(nwb13):
    from unitnorm.__main__ import _one_line

    path, _ = nwb13
    with pytest.raises(ValueError) as info:
        io.read_nwb(path)
    line = _one_line(info.value)
    assert len(line) <= 400
    assert line.endswith("; pass name=... (or --name)"), line
    assert "'probe_00_lfp_filtered'" in line and "'probe_12_lfp_filtered'" in line and " ... " in line
    assert io.read_nwb(path, name="probe_07_lfp_filtered").n_samples == 20


def test_nwb_without_rate_says_so(nwb13):
    _, norate = nwb13
    with pytest.raises(ValueError) as info:
        io.read_recording(norate, name="probe_03_lfp_filtered")
    text = str(info.value)
    assert text.startswith(
        f"{norate}: not a readable NWB file: either 'timestamps' or 'rate' must be specified"
    )
    assert "acquisition/probe_03_lfp_filtered" in text
    assert "GroupBuilder" not in text and "DatasetBuilder" not in text and len(text) < 400


# ---------------------------------------------------------------------------- 5, 8, hostile files: the CLI


def _cli(capsys, *argv: str) -> tuple[int, str, list[str]]:
    from unitnorm.__main__ import main

    status = main(["normalize", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def test_cli_hides_library_deprecations_shows_data_warnings(tmp_path, capsys):
    pynwb = pytest.importorskip("pynwb")
    import datetime

    nwb = pynwb.NWBFile(
        session_description="unitnorm test",
        identifier="unitnorm-dev",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    with pytest.warns(DeprecationWarning, match="'manufacturer' field is deprecated"):
        nwb.create_device(name="amp", manufacturer="Intan")  # read back, pynwb warns again
    nwb.add_acquisition(pynwb.TimeSeries(name="lfp", data=np.sin(np.arange(200.0)), unit="mV", rate=100.0))
    path = tmp_path / "dev.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as writer:
        writer.write(nwb)
    with warnings.catch_warnings(record=True) as direct:
        warnings.simplefilter("always")
        io.read_nwb(path)
    assert any(issubclass(w.category, DeprecationWarning) for w in direct)  # the library does warn
    status, out, err = _cli(capsys, path, "--out", tmp_path / "dev.npz")
    assert status == 0 and "wrote" in out and err == []

    liar = tmp_path / "liar.edf"
    liar.write_bytes(edf_bytes([eeg("Cz", 16)], [[np.arange(16) * (k + 1)] for k in range(6)], n_records=5))
    status, out, err = _cli(capsys, liar, "--out", tmp_path / "liar.npz")
    assert status == 0, err
    assert len(err) == 1 and err[0].startswith("unitnorm: warning: RecordingWarning: ")
    assert "the header says 5 data records but the file holds 6" in err[0]


def test_cli_skip_unknown_units(odd_units, tmp_path, capsys):
    status, _, err = _cli(capsys, odd_units, "--out", tmp_path / "x.npz")
    assert status == 1 and len(err) == 1 and "--skip-unknown-units" in err[0]
    assert list(tmp_path.iterdir()) == []
    status, out, err = _cli(capsys, odd_units, "--out", tmp_path / "x.npz", "--skip-unknown-units")
    assert status == 0, err
    assert len(err) == 1 and "left out 4 channels with units unitnorm does not know" in err[0]
    with np.load(tmp_path / "x.npz", allow_pickle=False) as npz:
        assert npz["channel_names"].tolist() == ["C3", "ECG"]


@pytest.mark.parametrize("case", ["bad_label", "overlap", "norate"])
def test_cli_hostile_files_one_line(case, tmp_path, capsys, nwb13):
    extra: list[str] = []
    if case == "bad_label":
        path = tmp_path / "bad.edf"
        raw = bytearray(edf_bytes([eeg("Fp1", 4), eeg("Fp2", 4)], [[np.arange(4)] * 2] * 3))
        raw[256 + 16] = 0x1B
        path.write_bytes(bytes(raw))
        match = r"bad\.edf: not a readable EDF/BDF file: signal 2: the label"
    elif case == "overlap":
        path = tmp_path / "overlap.edf"
        records = [[np.arange(4), tal(t, 8)] for t in (0.0, 0.5)]
        signals = [eeg("Cz", 4), {**eeg("EDF Annotations", 8), "dim": ""}]
        path.write_bytes(edf_bytes(signals, records, reserved="EDF+D"))
        match = r"overlap\.edf: EDF\+D \(discontinuous\) file: data record 1 starts at 0.5 s"
    else:
        path, extra = nwb13[1], ["--name", "probe_03_lfp_filtered"]
        match = r"norate\.nwb: not a readable NWB file: either 'timestamps' or 'rate' must be specified"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    status, out, err = _cli(capsys, path, "--out", out_dir / "x.npz", *extra)
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("unitnorm: error: ") and re.search(match, err[0]), err[0]
    assert "Traceback" not in err[0] and list(out_dir.iterdir()) == [] and "wrote" not in out


def test_edf_changed_after_opening_is_refused(tmp_path):
    s = [eeg("Cz", 4)]
    path = tmp_path / "growing.edf"
    path.write_bytes(edf_bytes(s, [[np.arange(4)]] * 3))
    rec = io.read_edf(path)
    with open(path, "ab") as fh:  # a writer appends a record: the memory map's shape is stale
        fh.write(np.arange(4, dtype="<i2").tobytes())
    with pytest.raises(ValueError, match=r"growing\.edf: the file changed since it was opened"):
        rec.mantissa()
    path.unlink()
    with pytest.raises(
        ValueError, match=r"growing\.edf: not a readable EDF/BDF file any more \(No such file"
    ):
        rec.mantissa()


def test_header_lies_other_ways(tmp_path):
    s = [eeg("Cz", 4)]
    body = [[np.arange(4) * k] for k in range(3)]
    trailing = tmp_path / "trailing.edf"
    trailing.write_bytes(edf_bytes(s, body) + b"\x01\x02\x03")
    with pytest.warns(io.RecordingWarning, match=r"the 3 bytes after the last complete data record are"):
        rec = io.read_edf(trailing)
    np.testing.assert_allclose(rec.mantissa()[:, 0], physical(s[0], np.concatenate([b[0] for b in body])))
    unknown = tmp_path / "recording.edf"  # -1: the count was never written (recording in progress)
    unknown.write_bytes(edf_bytes(s, body, n_records=-1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: -1 means "see the file size"
        assert io.read_edf(unknown).n_samples == 12


def test_one_line_keeps_reason_and_fix():
    from unitnorm.__main__ import _one_line

    reason, fix = "x.nwb: the NWB file holds several TimeSeries", "; pass name=... (or --name)"
    middle = ", ".join(f"'series_{k:03d}'" for k in range(200))
    line = _one_line(ValueError(f"{reason} [{middle}]{fix}"))
    assert len(line) <= 400 and line.startswith(reason) and line.endswith(fix) and " ... " in line
    assert _one_line(ValueError("short\n  message")) == "short message"
