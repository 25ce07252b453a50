"""``--nan-policy`` on the command line: an EDF+D file whose gaps are read as NaN."""

from __future__ import annotations

import numpy as np
import pytest
from test_io_wild import edf_bytes, eeg, tal

import unitnorm as un
from unitnorm import io
from unitnorm.__main__ import main


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    """An EDF+D with two channels and two gaps, and its samples as the reader gives them (NaN in gaps)."""
    rng = np.random.default_rng(11)
    signals = [eeg("Cz", 8), eeg("Pz", 8, pmin=-100.0, pmax=100.0), {**eeg("EDF Annotations", 8), "dim": ""}]
    onsets = [0.0, 0.5, 2.0, 2.5, 4.25]
    digital = [[rng.integers(-30000, 30000, 8) for _ in range(2)] for _ in onsets]
    records = [d + [tal(t, 8)] for d, t in zip(digital, onsets, strict=True)]
    path = tmp_path_factory.mktemp("gappy") / "gappy.edf"
    path.write_bytes(edf_bytes(signals, records, duration=0.5, reserved="EDF+D"))
    with pytest.warns(io.RecordingWarning, match="EDF"):
        samples = np.asarray(io.read_edf(path).data.mantissa, np.float64)  # uV
    assert np.isnan(samples).any(axis=1).sum() == 36  # 2.25 s at 16 Hz
    return str(path), samples


def test_default_propagates_and_names_the_channels(gappy, tmp_path, capsys):
    path, _ = gappy
    out = tmp_path / "z.npz"
    assert main(["normalize", path, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: the statistics of 2 channels are not finite (Cz, Pz)" in err
    assert "--nan-policy omit" in err
    with np.load(out, allow_pickle=False) as z:
        assert np.isnan(z["mean"]).all() and np.isnan(z["data"]).all()


def test_omit_uses_the_recorded_samples(gappy, tmp_path, capsys):
    path, samples = gappy
    out = tmp_path / "z.npz"
    assert main(["normalize", path, "--out", str(out), "--nan-policy", "omit"]) == 0
    assert "are not finite" not in capsys.readouterr().err
    mean, std = np.nanmean(samples, 0), np.nanstd(samples, 0)
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_allclose(z["mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(z["std"], std, rtol=1e-12)
        data = z["data"].astype(np.float64)
    gap = np.isnan(samples)
    assert (np.isnan(data) == gap).all()  # the gaps stay gaps
    # float32 output of a float64 z-score: one rounding of values below 10 in magnitude
    np.testing.assert_allclose(data[~gap], ((samples - mean) / std)[~gap], rtol=0, atol=1e-6)


def test_raise_stops_before_writing(gappy, tmp_path, capsys):
    path, _ = gappy
    out = tmp_path / "z.npz"
    assert main(["normalize", path, "--out", str(out), "--nan-policy", "raise"]) == 1
    err = capsys.readouterr().err
    assert "non-finite values in channels 'Cz', 'Pz'" in err and "nan_policy='raise'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_stats_with_omit_then_apply(gappy, tmp_path, capsys):
    path, samples = gappy
    stats = tmp_path / "stats.npz"
    assert main(["stats", path, "--out", str(stats), "--nan-policy", "omit"]) == 0
    assert "2 channels: Cz, Pz" in capsys.readouterr().out
    scaler = un.load(str(stats))
    assert scaler.nan_policy == "omit"
    np.testing.assert_allclose(np.asarray(scaler.mean_.mantissa), np.nanmean(samples, 0), rtol=1e-12)
    # --nan-policy with --stats is refused (nothing is fitted), nothing written
    out = tmp_path / "z.npz"
    assert main(["normalize", path, "--out", str(out), "--stats", str(stats), "--nan-policy", "omit"]) == 1
    assert "--nan-policy applies when fitting" in capsys.readouterr().err
    assert not out.exists()


def test_refused_with_ems(gappy, tmp_path, capsys):
    path, _ = gappy
    assert (
        main(["normalize", path, "--out", str(tmp_path / "e.npz"), "--method", "ems", "--nan-policy", "omit"])
        == 1
    )
    assert "not to --method ems" in capsys.readouterr().err


def test_the_option_conflict_is_named_before_the_stats_file_is_read(gappy, tmp_path, capsys):
    path, _ = gappy
    argv = ["normalize", path, "--out", str(tmp_path / "z.npz"), "--stats", str(tmp_path / "missing.npz")]
    assert main([*argv, "--nan-policy", "omit"]) == 1
    assert "--nan-policy applies when fitting" in capsys.readouterr().err
