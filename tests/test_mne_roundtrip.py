"""MNE in and out: Recording.to_mne, from_mne(to_mne(rec)), scalers on Raw and Epochs, to_xarray."""

from __future__ import annotations

import os
from pathlib import Path

import brainunit as u
import numpy as np
import pytest

import unitnorm as un
from unitnorm import io
from unitnorm.preprocessing import QuantileScaler, RobustScaler, StandardScaler

mne = pytest.importorskip("mne")
pytest.importorskip("pyedflib")

BUNDLED = Path(un.__file__).parent / "data" / "test_subsecond_crop.edf"


def _to_si(rec):
    out = np.empty((rec.n_samples, rec.n_channels))
    m = rec.mantissa()
    for c, unit in enumerate(rec.channel_units):
        si = u.Unit(u.get_dim(unit))  # the SI unit of that dimension (scale 0, factor 1)
        out[:, c] = np.asarray(u.Quantity(m[:, c], unit=unit).to_decimal(si))
    return out


def _meg_eeg_fif(tmp_path, n=600):
    """A Neuromag-style MEG+EEG recording written by MNE to a FIF file and read back by read_fif."""
    names = [f"MEG {i:03d}{k}" for i in range(11, 15) for k in (1, 2, 3)]
    types = ["mag" if name.endswith("1") else "grad" for name in names]
    names += ["EEG 001", "EEG 002", "EEG 003", "EOG 061", "ECG 063", "STI 014"]
    types += ["eeg", "eeg", "eeg", "eog", "ecg", "stim"]
    scale = {"mag": 1e-12, "grad": 1e-11, "eeg": 2e-5, "eog": 1e-4, "ecg": 5e-4, "stim": 1.0}
    rng = np.random.default_rng(7)
    # EEG with a DC offset of a few µV (as amplifiers give); MEG around zero
    offset = np.array([[3e-6 if t in ("eeg", "eog", "ecg") else 0.0] for t in types])
    data = rng.normal(size=(len(names), n)) * np.array([[scale[t]] for t in types]) + offset
    raw = mne.io.RawArray(data, mne.create_info(names, 600.0, types), verbose="error")
    raw.set_annotations(mne.Annotations([0.1], [0.2], ["blink"]))
    path = os.fspath(tmp_path / "meg_eeg_raw.fif")
    raw.save(path, verbose="error")
    return path, mne.io.read_raw_fif(path, preload=True, verbose="error")


def _mne_test_fif():
    """MNE's own test file when this MNE ships it (source checkouts do, the wheels do not)."""
    here = Path(mne.__file__).parent / "io" / "tests" / "data" / "test_raw.fif"
    env = os.environ.get("UNITNORM_MNE_TEST_FIF")
    for p in (Path(env) if env else None, here):
        if p is not None and p.is_file() and p.stat().st_size > 0:
            return p
    return None


# ---------------------------------------------------------------------------- to_mne / from_mne


def test_bundled_eeg_round_trip():
    rec = io.read_edf(BUNDLED)
    raw = rec.to_mne()
    assert isinstance(raw, mne.io.RawArray)
    assert raw.ch_names == list(rec.channel_names)
    assert raw.info["sfreq"] == float(rec.sampling_rate.to_decimal(u.hertz))
    want = _to_si(rec)
    np.testing.assert_allclose(raw.get_data().T, want, rtol=1e-12, atol=0)
    back = io.from_mne(raw)
    assert back.channel_names == rec.channel_names
    for a, b in zip(back.channel_units, rec.channel_units, strict=True):
        assert u.get_dim(a) == u.get_dim(b)
    np.testing.assert_allclose(_to_si(back), want, rtol=1e-12, atol=0)


def test_meg_eeg_fif_round_trip(tmp_path):
    path, raw = _meg_eeg_fif(tmp_path)
    rec = io.read_fif(path)
    again = rec.to_mne()
    assert again.get_channel_types() == raw.get_channel_types()
    assert [c["unit"] for c in again.info["chs"]] == [c["unit"] for c in raw.info["chs"]]
    np.testing.assert_allclose(again.get_data(), raw.get_data(), rtol=1e-12, atol=0)
    back = io.from_mne(again)
    assert back.channel_units == rec.channel_units
    np.testing.assert_allclose(back.mantissa(), rec.mantissa(), rtol=1e-12, atol=0)


@pytest.mark.skipif(_mne_test_fif() is None, reason="MNE's test_raw.fif is not in this MNE install")
def test_mne_test_fif_round_trip():
    raw = mne.io.read_raw_fif(_mne_test_fif(), preload=False, verbose="error")
    raw = raw.crop(0, 2.0).pick(["meg", "eeg", "eog", "stim"])
    rec = io.from_mne(raw)
    again = rec.to_mne()
    assert set(again.get_channel_types()) >= {"mag", "grad", "eeg"}
    np.testing.assert_allclose(again.get_data(), raw.get_data(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(io.from_mne(again).mantissa(), rec.mantissa(), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("name", "unit", "kind"),
    [
        ("Fp1", "uV", "eeg"),
        ("EOG left", "uV", "eog"),
        ("ECG", "mV", "ecg"),
        ("EKG1", "mV", "ecg"),
        ("EMG chin", "uV", "emg"),
        ("sEEG A1", "uV", "seeg"),
        ("ECoG 3", "uV", "ecog"),
        ("MEG 0111", "fT", "mag"),
        ("MEG 0112", "fT/cm", "grad"),
        ("STI 014", "", "stim"),
        ("counter", "", "misc"),
        ("temp", "degC", "misc"),
        ("current", "nA", "misc"),
    ],
)
def test_to_mne_channel_types_and_si_values(name, unit, kind):
    rec = io.Recording(np.array([[1.0], [-2.5]]), 100.0, [name], [unit])
    raw = rec.to_mne()
    assert raw.get_channel_types() == [kind]
    # SI values: brainunit's own conversion of the same numbers
    want = np.asarray(
        u.Quantity(np.array([1.0, -2.5]), unit=io.parse_unit(unit)).to_decimal(
            u.Unit(u.get_dim(io.parse_unit(unit)))
        )
    )
    np.testing.assert_allclose(raw.get_data()[0], want, rtol=1e-15)
    back = io.from_mne(raw)
    assert u.get_dim(back.channel_units[0]) == u.get_dim(io.parse_unit(unit))
    np.testing.assert_allclose(_to_si(back)[:, 0], want, rtol=1e-12)


def test_to_mne_refuses_a_dimension_without_fiff_unit():
    rec = io.Recording(np.ones((2, 2)), 10.0, ["Cz", "speed"], ["uV", "m/s"])
    with pytest.raises(ValueError, match=r"to_mne: channel 'speed' is m / s .*no FIFF unit"):
        rec.to_mne()
    with pytest.raises(TypeError, match="to_mne expected a unitnorm.io.Recording"):
        io.to_mne(np.ones((2, 2)))


# ---------------------------------------------------------------------------- scalers on Raw / Epochs


@pytest.mark.parametrize("scaler", [StandardScaler, RobustScaler, QuantileScaler])
def test_scaler_on_raw_equals_scaler_on_recording(tmp_path, scaler):
    _, raw = _meg_eeg_fif(tmp_path)
    raw = raw.copy().pick(["meg", "eeg", "eog", "ecg"])  # a flat stim channel is not data
    out = scaler().fit_transform(raw)
    assert isinstance(out, mne.io.BaseRaw)
    assert out.ch_names == raw.ch_names and out.get_channel_types() == raw.get_channel_types()
    assert list(out.annotations.description) == ["blink"]
    rec = io.from_mne(raw)
    want = scaler().fit(rec).transform(rec).mantissa()
    np.testing.assert_array_equal(out.get_data().T, want)
    # and against float64 NumPy for the standard scaler: per channel, mixed units (T, T/m, V)
    if scaler is StandardScaler:
        x = raw.get_data().T
        ref = (x - x.mean(axis=0)) / x.std(axis=0)
        np.testing.assert_allclose(out.get_data().T, ref, rtol=1e-9, atol=1e-12)
    # the input Raw is unchanged
    np.testing.assert_array_equal(raw.get_data(), io.from_mne(raw).mantissa().T)


def test_scaler_on_epochs_equals_scaler_on_recording(tmp_path):
    _, raw = _meg_eeg_fif(tmp_path)
    raw = raw.pick(["meg", "eeg"])
    events = mne.make_fixed_length_events(raw, duration=0.25)
    epochs = mne.Epochs(
        raw, events, tmin=0.0, tmax=0.25 - 1 / 600, baseline=None, preload=True, verbose="error"
    )
    for scaler in (StandardScaler, RobustScaler):
        out = scaler().fit_transform(epochs)
        assert isinstance(out, mne.BaseEpochs)
        np.testing.assert_array_equal(out.events, epochs.events)
        np.testing.assert_array_equal(out.times, epochs.times)
        # statistics over epochs x time, per channel: the same rows as a Recording
        block = epochs.get_data()
        rows = block.transpose(0, 2, 1).reshape(-1, block.shape[1])
        rec = io.Recording(rows, 600.0, epochs.ch_names, io.from_mne(raw).channel_units)
        want = scaler().fit(rec).transform(rec).mantissa()
        got = out.get_data().transpose(0, 2, 1).reshape(-1, block.shape[1])
        np.testing.assert_array_equal(got, want)
    # a scaler fitted on the Raw, applied to its Epochs: the Raw's statistics
    fitted = StandardScaler().fit(raw)
    x = raw.get_data().T
    ref = (epochs.get_data() - x.mean(axis=0)[:, None]) / x.std(axis=0)[:, None]
    np.testing.assert_allclose(fitted.transform(epochs).get_data(), ref, rtol=1e-9, atol=1e-12)


def test_raw_with_other_unit_than_fitted_is_an_error():
    rng = np.random.default_rng(1)
    eeg = mne.io.RawArray(
        rng.normal(size=(1, 50)) * 1e-5, mne.create_info(["X"], 100.0, "eeg"), verbose="error"
    )
    mag = mne.io.RawArray(
        rng.normal(size=(1, 50)) * 1e-12, mne.create_info(["X"], 100.0, "mag"), verbose="error"
    )
    fitted = StandardScaler().fit(eeg)
    before = fitted.mean_
    with pytest.raises(
        u.UnitMismatchError, match=r"'X' was fitted in voltage \(V\).*magnetic flux density \(T\)"
    ):
        fitted.transform(mag)
    assert fitted.mean_ is before


# ---------------------------------------------------------------------------- xarray


def test_to_xarray_coordinates_and_units():
    xr = pytest.importorskip("xarray")
    rec = io.Recording(np.arange(6.0).reshape(3, 2), 250 * u.Hz, ["Cz", "Pz"], "uV")
    da = rec.to_xarray()
    assert isinstance(da, xr.DataArray) and da.dims == ("time", "channel")
    assert da["channel"].values.tolist() == ["Cz", "Pz"]
    np.testing.assert_allclose(da["time"].values, np.arange(3) / 250.0, rtol=1e-15)
    assert da["time"].attrs["units"] == "s" and da.attrs["units"] == "uV"
    np.testing.assert_array_equal(da.values, np.arange(6.0).reshape(3, 2))
    mixed = io.Recording(np.ones((2, 3)), 10.0, ["a", "b", "c"], ["uV", "fT/cm", "uV^2"]).to_xarray()
    assert "units" not in mixed.attrs
    assert mixed["unit"].values.tolist() == ["uV", "fT / cm", "uV ** 2"]


@pytest.mark.parametrize("unit", ["uV", "mV", "fT/cm", "T/m", "uV^2", "nA", "degC", "%", "mmHg", "bpm", "Hz"])
def test_to_xarray_units_read_by_pint(unit):
    pytest.importorskip("xarray")
    pint = pytest.importorskip("pint")
    ureg = pint.UnitRegistry()
    rec = io.Recording(np.ones((2, 1)), 10.0, ["x"], [unit])
    spelled = rec.to_xarray().attrs["units"]
    if unit == "degC":  # pint's Celsius is an offset unit: compare the unit itself
        assert ureg.Unit(spelled) == ureg.degC
        return
    # one of the unit, in SI, by pint and by brainunit: the same number
    by_pint = (1 * ureg(spelled)).to_base_units().magnitude
    parsed = io.parse_unit(unit)
    by_brainunit = float((1.0 * parsed).to_decimal(u.Unit(u.get_dim(parsed))))
    assert by_pint == pytest.approx(by_brainunit, rel=1e-9)
