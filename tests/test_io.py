"""unitnorm.io: unit strings, Recording, and the EDF/BDF, NWB, neo and MNE readers.

Reader tests compare against the libraries themselves on files nobody here wrote
(pyedflib's bundled test files) or that the library wrote (pynwb, pyedflib's writer).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import brainunit as u
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unitnorm as un
from unitnorm import io

pyedflib = pytest.importorskip("pyedflib")
EDF_DATA = Path(pyedflib.__file__).parent / "tests" / "data"
BUNDLED = Path(un.__file__).parent / "data" / "test_subsecond_crop.edf"
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- parse_unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uV", u.uvolt),
        ("\u00b5V", u.uvolt),  # micro sign
        ("\u03bcV", u.uvolt),  # Greek mu
        ("mV", u.mvolt),
        ("MV", u.Mvolt),
        ("V", u.volt),
        ("volts", u.volt),
        ("Volt", u.volt),
        ("microvolts", u.uvolt),
        ("nA", u.namp),
        ("pA", u.pamp),
        ("nanoamperes", u.namp),
        ("T", u.tesla),
        ("fT", u.ftesla),
        ("T/m", u.tesla / u.metre),
        ("fT/cm", u.ftesla / u.cmetre),
        ("fT / cm", u.ftesla / u.cmetre),
        ("uv", u.uvolt),
        ("UV", u.uvolt),
        ("HZ", u.hertz),
        ("kOhm", u.kohm),
        ("M\u03a9", u.Mohm),
        ("uV^2", u.uvolt**2),
        ("uV**2", u.uvolt**2),
        ("m\u00b2", u.metre**2),
        ("m s^-1", u.metre / u.second),
        ("1/s", u.hertz),
        ("mM", u.mmolar),
        ("", u.UNITLESS),
        ("1", u.UNITLESS),
        (" uV ", u.uvolt),
    ],
)
def test_parse_unit_spellings(text, expected):
    got = io.parse_unit(text)
    assert got == expected
    assert got.dim == expected.dim and got.scale == expected.scale


def test_parse_unit_millivolt_is_not_megavolt():
    assert float((1 * io.parse_unit("mV")).to_decimal(u.volt)) == pytest.approx(1e-3)
    assert float((1 * io.parse_unit("MV")).to_decimal(u.volt)) == pytest.approx(1e6)


def test_parse_unit_specials():
    degc = io.parse_unit("degC")
    assert u.get_dim(degc) == u.get_dim(u.kelvin) and str(degc) == "degC"
    assert io.parse_unit("\u00b0C") == degc
    pct = io.parse_unit("%")
    assert str(pct) == "%" and float((50 * pct).to_decimal(u.UNITLESS)) == pytest.approx(0.5)
    assert float((1 * io.parse_unit("mmHg")).to_decimal(u.pascal)) == pytest.approx(133.322387415)
    assert float((60 * io.parse_unit("bpm")).to_decimal(u.hertz)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("mv", r"ambiguous unit 'mv'.*'MV' \(megavolt\).*'mV' \(millivolt\)"),
        ("pa", r"ambiguous unit 'pa'"),
        ("US", r"ambiguous unit 'US'.*microsiemens.*microsecond"),
        ("C", r"ambiguous unit 'C'.*coulomb.*degC"),
        ("furlongs", r"unknown unit 'furlongs'"),
        ("N/A", r"unknown unit 'N/A'.*not available"),
        ("NA", r"unknown unit 'NA'.*write 'nA' for nanoampere"),
        ("m2", r"unknown unit 'm2'"),
        ("V^0", r"unknown unit 'V\^0'"),
        ("uV/", r"unknown unit 'uV/'"),
    ],
)
def test_parse_unit_refuses(text, match):
    with pytest.raises(ValueError, match=match):
        io.parse_unit(text)


@pytest.mark.parametrize("bad", [None, b"uV", 3])
def test_parse_unit_type_error(bad):
    with pytest.raises(TypeError, match="parse_unit expected a str"):
        io.parse_unit(bad)


_PREFIXES = ["", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "da", "d", "c", "m", "u", "n", "p", "f", "a"]
_BASES = [("V", "volt"), ("A", "amp"), ("T", "tesla"), ("S", "siemens"), ("Hz", "hertz"), ("F", "farad")]


@given(st.sampled_from(_PREFIXES), st.sampled_from(_BASES), st.sampled_from(["", "^2", "^-1", "^3"]))
@settings(max_examples=60, deadline=None)
def test_parse_unit_prefix_symbol_property(prefix, base, power):
    symbol, attr = base
    expected = getattr(u, prefix + attr)
    expected = {"": expected, "^2": expected**2, "^-1": expected**-1, "^3": expected**3}[power]
    got = io.parse_unit(prefix + symbol + power)
    assert got == expected
    # brainunit's own spelling reads back to the same unit
    assert io.parse_unit(str(got)) == got


@pytest.mark.parametrize(
    "unit",
    [u.uvolt, u.uvolt**2, u.ftesla / u.cmetre, u.volt * u.amp, u.mvolt / u.msecond, u.amp * u.metre, u.molar],
)
def test_parse_unit_reads_brainunit_spelling(unit):
    assert io.parse_unit(str(unit)) == unit


# ---------------------------------------------------------------------------- Recording


def test_recording_from_quantity():
    x = np.arange(12.0).reshape(6, 2)
    rec = io.Recording(x * u.mV, 500 * u.Hz, channel_names=["a", "b"])
    assert rec.channel_names == ("a", "b")
    assert rec.channel_units == (u.mvolt, u.mvolt)
    assert rec.n_samples == 6 and rec.n_channels == 2
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == 500.0
    assert float(rec.duration.to_decimal(u.second)) == pytest.approx(6 / 500)
    assert rec.data.unit == u.mvolt
    np.testing.assert_array_equal(rec.data.mantissa, x)
    np.testing.assert_array_equal(rec.read(2, 4).mantissa, x[2:4])
    assert repr(rec) == "Recording(2 channels: a [mV], b [mV]; 6 samples at 500 Hz, 0.012 s)"


def test_recording_rate_in_khz_and_plain_float():
    rec = io.Recording(np.zeros(4), 2 * u.kHz)
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == 2000.0
    assert rec.channel_names == ("ch0",)
    assert float(io.Recording(np.zeros(4), 250.0).sampling_rate.to_decimal(u.hertz)) == 250.0


def test_recording_mixed_units_same_dimension_converts_to_first():
    rec = io.Recording(np.ones((3, 2)), 100.0, channel_units=["uV", "mV"])
    data = rec.data
    assert data.unit == u.uvolt
    np.testing.assert_allclose(data.mantissa, [[1.0, 1000.0]] * 3)


def test_recording_mixed_dimensions_lists_groups():
    rec = io.Recording(np.ones((3, 3)), 100.0, ["eeg", "meg", "eeg2"], ["uV", "fT", "V"])
    with pytest.raises(u.UnitMismatchError, match=r"Recording.data needs channels of one dimension") as info:
        _ = rec.data
    msg = str(info.value)
    assert "voltage (uV): eeg, eeg2" in msg and "magnetic flux density (fT): meg" in msg
    assert isinstance(info.value, un.UnitError)


def test_recording_select_converts():
    rec = io.Recording(np.ones((2, 4)), 100.0, ["a", "b", "c", "d"], ["uV", "fT", "mV", "V"])
    volts = rec.select(u.volt)
    assert volts.channel_names == ("a", "c", "d")
    assert volts.channel_units == (u.volt,) * 3
    np.testing.assert_allclose(volts.data.mantissa[0], [1e-6, 1e-3, 1.0])
    tesla = rec.select(u.tesla)
    assert tesla.channel_names == ("b",)
    np.testing.assert_allclose(tesla.data.mantissa, 1e-15)
    with pytest.raises(ValueError, match=r"no channel is current \(A\)"):
        rec.select(u.amp)
    with pytest.raises(TypeError, match="brainunit Unit"):
        rec.select("V")


def test_recording_pick():
    rec = io.Recording(np.arange(6.0).reshape(2, 3), 10.0, ["Fp1", "Fp2", "Cz"], "uV")
    sub = rec.pick(["Cz", "Fp1"])
    assert sub.channel_names == ("Cz", "Fp1")
    np.testing.assert_array_equal(sub.data.mantissa, [[2.0, 0.0], [5.0, 3.0]])
    with pytest.raises(
        ValueError,
        match=r"no channel named 'Fp3' \(did you mean 'Fp2', 'Fp1'\?\); the channels are 'Fp1', 'Fp2', 'Cz'",
    ):
        rec.pick("Fp3")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"data": np.zeros((2, 2, 2))}, ValueError, r"shape \(n_samples, n_channels\)"),
        ({"data": np.array(["a", "b"])}, TypeError, "real numeric array"),
        ({"sampling_rate": 0.0}, ValueError, "finite and > 0"),
        ({"sampling_rate": 3 * u.mV}, u.UnitMismatchError, r"frequency \(Hz\)"),
        ({"channel_names": ["a", "a"]}, ValueError, "unique"),
        ({"channel_names": ["a"]}, ValueError, "1 channel names for 2 channels"),
        ({"channel_units": ["uV", "mV", "V"]}, ValueError, "2 channels but 3 channel_units"),
        ({"channel_units": ["uV", "furlongs"]}, ValueError, "unknown unit 'furlongs'"),
        ({"data": np.zeros((3, 2)) * u.mV, "channel_units": "uV"}, TypeError, "channel_units is for plain"),
    ],
)
def test_recording_rejects(kwargs, error, match):
    args = {"data": np.zeros((3, 2)), "sampling_rate": 100.0} | kwargs
    with pytest.raises(error, match=match):
        io.Recording(**args)


def test_recording_read_window_checked():
    rec = io.Recording(np.zeros((5, 1)), 10.0)
    with pytest.raises(ValueError, match=r"0 <= start <= stop <= 5"):
        rec.read(3, 9)
    with pytest.raises(TypeError, match="start must be an int"):
        rec.read(1.5)


# ---------------------------------------------------------------------------- EDF / BDF


def _edf_reference(path, signals):
    """Physical values and quantization steps straight from pyedflib."""
    with pyedflib.EdfReader(str(path)) as f:
        values = np.stack([f.readSignal(i) for i in signals], axis=1)
        steps = np.array(
            [
                abs(f.getPhysicalMaximum(i) - f.getPhysicalMinimum(i))
                / (f.getDigitalMaximum(i) - f.getDigitalMinimum(i))
                for i in signals
            ]
        )
        labels = [f.getLabel(i) for i in signals]
        rates = {f.getSampleFrequency(i) for i in signals}
    return values, steps, labels, rates


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("test_generator.edf", None),
        ("test_subsecond.edf", None),
        ("test_generator.bdf", ["sine 5Hz"]),
        ("test_generator_datarec_generator_0_5.bdf", ["ramp 14Hz"]),
        ("test_generator_datarec_generator_2.bdf", ["square 6.5Hz"]),
    ],
)
def test_edf_matches_pyedflib(name, channels):
    path = EDF_DATA / name
    if not path.exists():
        pytest.skip(f"pyedflib wheel without {name}")
    rec = io.read_edf(path, channels=channels)
    with pyedflib.EdfReader(str(path)) as f:
        labels = [f.getLabel(i) for i in range(f.signals_in_file)]
    signals = [labels.index(c) for c in channels] if channels else list(range(len(labels)))
    values, steps, ref_labels, rates = _edf_reference(path, signals)
    assert list(rec.channel_names) == ref_labels
    assert rec.channel_units == (u.uvolt,) * len(signals)  # every header says "uV"
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == rates.pop()
    data = rec.data
    assert data.unit == u.uvolt and data.shape == values.shape
    assert np.all(np.abs(data.mantissa - values) <= steps)  # within one quantization step
    np.testing.assert_allclose(data.mantissa, values, rtol=0, atol=1e-9)


def test_edf_negative_gain_from_raw_bytes():
    # test_subsecond.edf's header has physical min 8711 > max -8711. Decode the first data
    # record by hand (EDF spec: header 256 + 256*ns bytes, little-endian int16 samples).
    raw = BUNDLED.read_bytes()
    ns = int(raw[252:256])
    assert ns == 2
    field = lambda offset, width, k: raw[256 + offset * ns + width * k : 256 + offset * ns + width * (k + 1)]  # noqa: E731
    pmin = float(field(16 + 80 + 8, 8, 0))
    pmax = float(field(16 + 80 + 8 + 8, 8, 0))
    dmin = float(field(16 + 80 + 8 + 16, 8, 0))
    dmax = float(field(16 + 80 + 8 + 24, 8, 0))
    assert pmin == 8711 and pmax == -8711
    digital = np.frombuffer(raw[256 + 256 * ns : 256 + 256 * ns + 2 * 128], dtype="<i2").astype(float)
    expected = pmin + (digital - dmin) * (pmax - pmin) / (dmax - dmin)
    rec = io.read_edf(BUNDLED)
    np.testing.assert_allclose(rec.read(0, 128).mantissa[:, 0], expected, rtol=0, atol=1e-9)
    assert digital[0] < 0 < expected[0]  # the gain really is negative


def test_bundled_crop_equals_original():
    original = EDF_DATA / "test_subsecond.edf"
    if not original.exists():
        pytest.skip("pyedflib wheel without test_subsecond.edf")
    crop = io.read_edf(BUNDLED)
    full = io.read_edf(original)
    assert crop.n_samples == 120 * 128
    np.testing.assert_array_equal(crop.data.mantissa, full.read(0, crop.n_samples).mantissa)


def test_edf_window_equals_slice():
    rec = io.read_edf(EDF_DATA / "test_generator.edf", channels=["ramp", "noise"])
    np.testing.assert_array_equal(rec.read(1234, 5678).mantissa, rec.data.mantissa[1234:5678])
    np.testing.assert_array_equal(rec.mantissa(10, 20), rec.data.mantissa[10:20])


def test_edf_annotation_signal_is_not_data():
    path = EDF_DATA / "test_legacy.edf"
    if not path.exists():
        pytest.skip("pyedflib wheel without test_legacy.edf")
    rec = io.read_edf(path)
    assert "EDF Annotations" not in rec.channel_names and rec.n_channels == 11


def test_edf_mixed_rates_listed():
    with pytest.raises(
        ValueError,
        match=r"different sampling rates \(1000 Hz: sine 5Hz; 800 Hz: square 13Hz.*read one rate at a time",
    ):
        io.read_edf(EDF_DATA / "test_generator.bdf")


@pytest.fixture(scope="module")
def mixed_edf(tmp_path_factory):
    """An EDF written by pyedflib with channels in uV, mV and degC, and one with an unknown unit."""
    from pyedflib import highlevel

    folder = tmp_path_factory.mktemp("edf")
    rng = np.random.default_rng(0)
    signals = [
        rng.standard_normal(2560) * 50,
        rng.standard_normal(2560) * 0.05,
        36.5 + rng.standard_normal(2560) * 0.1,
    ]
    headers = [
        highlevel.make_signal_header(
            "Cz", dimension="uV", sample_frequency=256, physical_min=-500, physical_max=500
        ),
        highlevel.make_signal_header(
            "EMG", dimension="mV", sample_frequency=256, physical_min=-1, physical_max=1
        ),
        highlevel.make_signal_header(
            "Temp", dimension="degC", sample_frequency=256, physical_min=30, physical_max=42
        ),
    ]
    good = folder / "mixed.edf"
    highlevel.write_edf(str(good), signals, headers)
    headers[0]["dimension"] = "furlongs"
    bad = folder / "unknown_unit.edf"
    highlevel.write_edf(str(bad), signals, headers)
    return good, bad


def test_edf_units_per_channel(mixed_edf):
    good, _ = mixed_edf
    rec = io.read_edf(good)
    assert rec.channel_units == (u.uvolt, u.mvolt, io.parse_unit("degC"))
    volts = rec.select(u.uvolt)
    assert volts.channel_names == ("Cz", "EMG")
    values, _, _, _ = _edf_reference(good, [0, 1])
    np.testing.assert_allclose(volts.data.mantissa, values * [1.0, 1000.0], rtol=1e-12, atol=1e-9)
    with pytest.raises(u.UnitMismatchError, match=r"temperature \(degC\): Temp"):
        _ = rec.data


def test_edf_unknown_unit_names_channel(mixed_edf):
    _, bad = mixed_edf
    with pytest.raises(
        ValueError,
        match=r"unknown_unit.edf: channel 'Cz': unknown unit 'furlongs'; "
        r"leave it out with skip_unknown_units=True \(command line: --skip-unknown-units\).*expected e.g.",
    ):
        io.read_edf(bad)
    assert io.read_edf(bad, channels="EMG").channel_units == (u.mvolt,)  # the bad channel is not read


def test_edf_no_such_channel():
    with pytest.raises(ValueError, match=r"test_generator.edf: no channel named 'Cz'; the channels are"):
        io.read_edf(EDF_DATA / "test_generator.edf", channels=["Cz"])


def test_edf_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.edf: no such file"):
        io.read_edf(tmp_path / "missing.edf")
    corrupt = tmp_path / "corrupt.edf"
    corrupt.write_bytes(BUNDLED.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"corrupt.edf: not a readable EDF/BDF file"):
        io.read_edf(corrupt)
    text = tmp_path / "notes.edf"
    text.write_text("hello, this is not a recording\n")
    with pytest.raises(ValueError, match=r"notes.edf: not an EDF, BDF or NWB file \(it starts with b'hello"):
        io.read_recording(text)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        io.read_edf(tmp_path)


# ---------------------------------------------------------------------------- NWB


@pytest.fixture(scope="module")
def nwb_file(tmp_path_factory):
    """An NWB file written by pynwb: an int16 ElectricalSeries with conversion, offset and
    channel_conversion, plus a temperature TimeSeries with regular timestamps."""
    pynwb = pytest.importorskip("pynwb")
    from pynwb.ecephys import ElectricalSeries

    path = tmp_path_factory.mktemp("nwb") / "session.nwb"
    nwb = pynwb.NWBFile(
        session_description="unitnorm test",
        identifier="unitnorm-test",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    device = nwb.create_device(name="amplifier")
    group = nwb.create_electrode_group(name="shank", description="d", location="CA1", device=device)
    for _ in range(4):
        nwb.add_electrode(group=group, location="CA1")
    region = nwb.create_electrode_table_region([0, 1, 2, 3], "all electrodes")
    rng = np.random.default_rng(1)
    data = rng.integers(-2000, 2000, size=(3000, 4), dtype=np.int16)
    series = ElectricalSeries(
        name="raw",
        data=data,
        electrodes=region,
        rate=3000.0,
        conversion=0.195e-6,
        offset=-1e-4,
        channel_conversion=[1.0, 2.0, 0.5, 1.5],
    )
    nwb.add_acquisition(series)
    temp = pynwb.TimeSeries(
        name="temperature",
        data=36.0 + rng.standard_normal(50) * 0.1,
        unit="degC",
        timestamps=10 + np.arange(50) * 0.25,
    )
    nwb.add_acquisition(temp)
    with pynwb.NWBHDF5IO(str(path), "w") as writer:
        writer.write(nwb)
    return path


def test_nwb_matches_get_data_in_units(nwb_file):
    import pynwb

    rec = io.read_nwb(nwb_file, name="raw")
    with pynwb.NWBHDF5IO(str(nwb_file), "r") as reader:
        series = reader.read().acquisition["raw"]
        expected = series.get_data_in_units()
        assert series.channel_conversion is not None and series.offset != 0  # the case under test
    assert rec.channel_units == (u.volt,) * 4  # ElectricalSeries unit "volts"
    assert rec.channel_names == ("0", "1", "2", "3")
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == 3000.0
    np.testing.assert_allclose(rec.data.mantissa, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(rec.read(100, 200).mantissa, expected[100:200], rtol=1e-12, atol=0)
    np.testing.assert_allclose(rec.pick(["2", "0"]).data.mantissa, expected[:, [2, 0]], rtol=1e-12, atol=0)


def test_nwb_rate_from_timestamps(nwb_file):
    rec = io.read_nwb(nwb_file, name="temperature")
    assert rec.channel_names == ("temperature",)
    assert rec.channel_units == (io.parse_unit("degC"),)
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == pytest.approx(4.0, rel=1e-12)
    assert rec.n_samples == 50


def test_nwb_several_series_need_a_name(nwb_file):
    with pytest.raises(ValueError, match=r"several TimeSeries \['raw', 'temperature'\]; pass name="):
        io.read_nwb(nwb_file)
    with pytest.raises(ValueError, match=r"no TimeSeries named 'lfp'"):
        io.read_nwb(nwb_file, name="lfp")
    with pytest.raises(ValueError, match=r"no channel named '7'"):
        io.read_nwb(nwb_file, name="raw", channels=["7"])


def test_nwb_irregular_timestamps_and_unknown_unit(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    nwb = pynwb.NWBFile(
        session_description="s",
        identifier="i",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    nwb.add_acquisition(
        pynwb.TimeSeries(
            name="jittery", data=np.zeros(5), unit="V", timestamps=np.array([0.0, 1.0, 2.0, 3.5, 4.0])
        )
    )
    nwb.add_acquisition(pynwb.TimeSeries(name="odd", data=np.zeros(5), unit="furlongs", rate=10.0))
    path = tmp_path / "odd.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as writer:
        writer.write(nwb)
    with pytest.raises(ValueError, match=r"'jittery' has irregular timestamps"):
        io.read_nwb(path, name="jittery")
    with pytest.raises(ValueError, match=r"TimeSeries 'odd': unknown unit 'furlongs'"):
        io.read_nwb(path, name="odd")


def test_nwb_not_nwb(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"plain.h5: not a readable NWB file"):
        io.read_recording(path)


# ---------------------------------------------------------------------------- neo and MNE


def test_from_neo():
    neo = pytest.importorskip("neo")
    pq = pytest.importorskip("quantities")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 3))
    sig = neo.AnalogSignal(
        x,
        units="uV",
        sampling_rate=2 * pq.kHz,
        array_annotations={"channel_names": np.array(["a", "b", "c"])},
    )
    rec = io.from_neo(sig)
    assert rec.channel_names == ("a", "b", "c")
    assert rec.channel_units == (u.uvolt,) * 3
    assert float(rec.sampling_rate.to_decimal(u.hertz)) == 2000.0
    np.testing.assert_array_equal(rec.data.mantissa, x)
    current = io.from_neo(neo.AnalogSignal(x[:, :1], units=pq.pA, sampling_rate=10 * pq.kHz))
    assert current.channel_units == (u.pamp,) and current.channel_names == ("ch0",)
    # the same signal in V gives the same values as the uV one, converted
    volts = io.from_neo(sig.rescale("V"))
    np.testing.assert_allclose(volts.data.to_decimal(u.uvolt), x, rtol=1e-12)
    irregular = neo.IrregularlySampledSignal([0.0, 0.1, 0.3] * pq.s, np.zeros((3, 1)), units="mV")
    with pytest.raises(
        TypeError,
        match="from_neo expected a neo.AnalogSignal or AnalogSignalProxy, got IrregularlySampledSignal",
    ):
        io.from_neo(irregular)


def test_from_mne_mixed_types():
    mne = pytest.importorskip("mne")
    names = ["EEG1", "EEG2", "MAG1", "GRAD1", "STI", "TEMP"]
    kinds = ["eeg", "eeg", "mag", "grad", "stim", "temperature"]
    info = mne.create_info(names, 250.0, kinds, verbose=False)
    rng = np.random.default_rng(3)
    scale = np.array([[1e-5], [2e-5], [1e-12], [1e-11], [1.0], [0.1]])
    raw = mne.io.RawArray(rng.standard_normal((6, 1000)) * scale, info, verbose=False)
    rec = io.from_mne(raw)
    assert rec.channel_names == tuple(names)
    expected_units = {
        "EEG1": u.volt,
        "MAG1": u.tesla,
        "GRAD1": u.tesla / u.metre,
        "TEMP": io.parse_unit("degC"),
    }
    for name, unit in expected_units.items():
        assert rec.channel_units[names.index(name)] == unit
    np.testing.assert_array_equal(rec.mantissa(), raw.get_data().T)
    with pytest.raises(u.UnitMismatchError, match=r"magnetic field gradient \(T / m\): GRAD1"):
        _ = rec.data
    meg = rec.select(u.ftesla)
    assert meg.channel_names == ("MAG1",)
    np.testing.assert_allclose(meg.data.mantissa[:, 0], raw.get_data(picks=["MAG1"])[0] * 1e15, rtol=1e-12)
    np.testing.assert_allclose(
        rec.pick("GRAD1").read(10, 20).mantissa[:, 0], raw.get_data(picks=["GRAD1"])[0, 10:20]
    )
    with pytest.raises(TypeError, match="from_mne expected an mne.io.Raw"):
        io.from_mne(np.zeros(3))


# ---------------------------------------------------------------------------- optional dependencies


def test_import_does_not_load_readers():
    code = (
        "import sys, unitnorm, unitnorm.io\n"
        "heavy = ('pyedflib', 'pynwb', 'h5py', 'hdmf', 'neo', 'mne', 'tqdm', 'quantities')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_io_works_without_optional_readers():
    # Block the optional packages (as if not installed), then use unitnorm.io.
    code = (
        "import sys\n"
        "for m in ('pyedflib', 'pynwb', 'h5py', 'hdmf', 'neo', 'mne', 'tqdm', 'quantities'):\n"
        "    sys.modules[m] = None\n"
        "import numpy as np, brainunit as u\n"
        "import unitnorm.io as io\n"
        "from unitnorm.preprocessing import normalize_recording\n"
        "rec = io.Recording(np.arange(6.0) * u.mV, 10.0)\n"
        "z, stats = normalize_recording(rec, progress=None)\n"
        "print(io.parse_unit('uV'), stats.mean)\n"
        "for call in (lambda: io.read_edf('x.edf'), lambda: io.read_nwb('x.nwb')):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as err:\n"
        "        print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "uV [2.5] mV"
    assert lines[1] == 'read_edf needs pyedflib, which is not installed: pip install -e ".[io]"'
    assert lines[2] == 'read_nwb needs pynwb, which is not installed: pip install -e ".[io]"'


def test_missing_reader_in_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyedflib", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[io\]"'):
        io.read_edf(BUNDLED)


def test_bundled_data_is_packaged():
    text = (REPO / "pyproject.toml").read_text()
    assert '"data/*.edf"' in text and '"data/*.txt"' in text
    note = BUNDLED.with_suffix(".txt").read_text()
    assert "BSD" in note and "pyedflib" in note.lower() and "THIS SOFTWARE IS PROVIDED" in note
    assert os.path.getsize(BUNDLED) == 768 + 120 * 296


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("test_generator.edf", ["ramp", "sine 8 Hz"]),
        ("test_subsecond.edf", None),  # EDF+ with a hidden annotation signal
        ("test_legacy.edf", ["pulse"]),  # plain EDF whose annotation signal pyedflib shows
        ("test_generator.bdf", ["square 13Hz"]),  # 24-bit samples
        ("test_generator_datarec_generator_0_5.bdf", ["pink noise"]),  # 0.5 s records
    ],
)
def test_edf_memory_map_equals_pyedflib_reads(monkeypatch, name, channels):
    from unitnorm.io import _edf

    path = EDF_DATA / name
    if not path.exists():
        pytest.skip(f"pyedflib wheel without {name}")
    fast = io.read_edf(path, channels=channels)
    assert isinstance(fast._source, _edf.MappedSource)  # the memory-mapped path is taken
    fast_all, fast_window = fast.data.mantissa, fast.read(777, 1999).mantissa

    def refuse(path):
        raise _edf.HeaderError("forced")

    monkeypatch.setattr(_edf, "Header", refuse)
    slow = io.read_edf(path, channels=channels)
    assert isinstance(slow._source, _edf.PyedflibSource)
    np.testing.assert_array_equal(fast_all, slow.data.mantissa)
    np.testing.assert_array_equal(fast_window, slow.read(777, 1999).mantissa)
