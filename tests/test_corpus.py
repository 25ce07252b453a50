"""Corpus statistics and normalization: exact against float64 NumPy, the same on every scheduler.

The corpus is generated here: EDF files (digital samples written as given, so the
reference knows every physical value from the header's gain and offset) and an NWB file,
in uV, mV and V, with shuffled channel orders and a channel missing from one file.
Cluster tests share one ``LocalCluster(n_workers=2, processes=True)`` (loopback).
"""

import datetime
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _oracle import U64, assert_close_f32, stats_bounds

pyedflib = pytest.importorskip("pyedflib")
pynwb = pytest.importorskip("pynwb")
zarr = pytest.importorskip("zarr")

import brainunit as u  # noqa: E402

import unitnorm as un  # noqa: E402
from unitnorm import io  # noqa: E402
from unitnorm import preprocessing as pp  # noqa: E402
from unitnorm.preprocessing import _corpus  # noqa: E402

RATE = 250
# EDF records last 1 s: sample counts are multiples of RATE (pyedflib pads the last record)
# physical value = (digital - DMIN) * GAIN[unit] + PMIN[unit]; the reference uses this formula
DMIN, DMAX = -32768, 32767
PHYS = {"uV": (-3276.8, 3276.7), "mV": (-3.2768, 3.2767), "": (-3276.8, 3276.7)}
TO_UV = {"uV": 1.0, "mV": 1e3, "V": 1e6}


def _physical(digital: np.ndarray, unit: str) -> np.ndarray:
    pmin, pmax = PHYS[unit]
    return (digital.astype(np.float64) - DMIN) * ((pmax - pmin) / (DMAX - DMIN)) + pmin


def write_edf(path: Path, channels: dict[str, tuple[str, np.ndarray]]) -> None:
    """An EDF whose channels hold the given digital samples (int16), with units and physical ranges."""
    headers, signals = [], []
    for name, (unit, digital) in channels.items():
        pmin, pmax = PHYS[unit]
        headers.append(
            pyedflib.highlevel.make_signal_header(
                name,
                dimension=unit,
                sample_frequency=RATE,
                physical_min=pmin,
                physical_max=pmax,
                digital_min=DMIN,
                digital_max=DMAX,
            )
        )
        signals.append(digital.astype(np.int32))
    assert pyedflib.highlevel.write_edf(str(path), signals, headers, digital=True)


def write_nwb(path: Path, names: list[str], data: np.ndarray, conversion: float) -> None:
    """An NWB ElectricalSeries in volts (``data * conversion``), electrodes labelled by name."""
    from pynwb.ecephys import ElectricalSeries

    nwb = pynwb.NWBFile(
        session_description="corpus",
        identifier=path.stem,
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    device = nwb.create_device(name="amp")
    group = nwb.create_electrode_group(name="g", description="d", location="cortex", device=device)
    nwb.add_electrode_column(name="label", description="channel name")
    for name in names:
        nwb.add_electrode(group=group, location="cortex", label=name)
    nwb.add_acquisition(
        ElectricalSeries(
            name="raw",
            data=data,
            electrodes=nwb.create_electrode_table_region(list(range(len(names))), "all"),
            rate=float(RATE),
            conversion=conversion,
        )
    )
    with pynwb.NWBHDF5IO(str(path), "w") as writer:
        writer.write(nwb)


def _digital(rng, n, center):
    return np.clip(np.round(rng.normal(center, 400.0, n)), DMIN, DMAX).astype(np.int16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five recordings; ``ref[name]`` holds every value of channel ``name`` in uV, in path order."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    ref: dict[str, list[np.ndarray]] = {}

    def add(name, values_uv):
        ref.setdefault(name, []).append(values_uv)

    # a.edf (uV): Fz, Cz, Pz -- fixes every channel's unit (uV) as the first file in path order
    chans = {n: ("uV", _digital(rng, 1500, c)) for n, c in (("Fz", 900), ("Cz", -300), ("Pz", 50))}
    write_edf(root / "a.edf", chans)
    for n, (unit, d) in chans.items():
        add(n, _physical(d, unit) * TO_UV[unit])
    # b.edf (mV), shuffled order: Pz, Fz, Cz
    chans = {n: ("mV", _digital(rng, 1000, c)) for n, c in (("Pz", 4000), ("Fz", -2000), ("Cz", 100))}
    write_edf(root / "b.edf", chans)
    for n, (unit, d) in chans.items():
        add(n, _physical(d, unit) * TO_UV[unit])
    # c.nwb (V): Cz, Fz -- no Pz
    raw = rng.integers(-3000, 3000, size=(1200, 2), dtype=np.int16)
    write_nwb(root / "c.nwb", ["Cz", "Fz"], raw, 1e-7)
    add("Cz", raw[:, 0] * 1e-7 * TO_UV["V"])
    add("Fz", raw[:, 1] * 1e-7 * TO_UV["V"])
    # d.edf (uV), another order and an extra channel O1
    chans = {n: ("uV", _digital(rng, 750, c)) for n, c in (("Cz", 20), ("O1", -700), ("Pz", 300), ("Fz", 10))}
    write_edf(root / "d.edf", chans)
    for n, (unit, d) in chans.items():
        add(n, _physical(d, unit) * TO_UV[unit])
    return root, {k: np.concatenate(v) for k, v in ref.items()}


def _files(root):
    return [str(root / n) for n in ("a.edf", "b.edf", "c.nwb", "d.edf")]


def _stats_of(scaler):
    return {k: np.asarray(v) for k, (v, _) in scaler._stats.items() if v is not None}


def _assert_identical(a, b):
    sa, sb = _stats_of(a), _stats_of(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].tobytes() == sb[k].tobytes(), k


# ---------------------------------------------------------------------------- exactness (serial)


def test_zscore_intersection_equals_float64_numpy(corpus):
    root, ref = corpus
    report = pp.fit_corpus(_files(root))
    assert report.channel_names == ("Fz", "Cz")  # Pz is missing from c.nwb, O1 from three files
    s = report.scaler
    assert s.mean_.unit == u.uvolt and s.var_.unit == u.uvolt**2
    for i, name in enumerate(report.channel_names):
        x = ref[name]
        np.testing.assert_allclose(s.mean_.mantissa[i], x.mean(), rtol=1e-12)
        np.testing.assert_allclose(s.var_.mantissa[i], x.var(), rtol=1e-12)
    assert s.n_samples_seen_ == 1500 + 1000 + 1200 + 750
    assert report.files == tuple(_files(root)) and report.skipped == ()


def test_union_takes_each_channel_from_the_files_that_have_it(corpus):
    root, ref = corpus
    s = pp.fit_corpus(root, channels="union").scaler  # a folder: files found by content
    assert s.channel_names_ == ("Fz", "Cz", "Pz", "O1")
    for i, name in enumerate(s.channel_names_):
        np.testing.assert_allclose(s.mean_.mantissa[i], ref[name].mean(), rtol=1e-12)
        np.testing.assert_allclose(s.var_.mantissa[i], ref[name].var(), rtol=1e-12)
    assert s.n_samples_seen_.tolist() == [4450, 4450, 3250, 750]


@pytest.mark.parametrize(
    ("method", "levels"),
    [("robust", (0.25, 0.5, 0.75)), ("quantile", (0.01, 0.5, 0.99))],
)
def test_order_statistics_are_exact(corpus, method, levels):
    root, ref = corpus
    s = pp.fit_corpus(_files(root), method, channels=["Cz", "Fz"]).scaler
    assert s.channel_names_ == ("Cz", "Fz")
    for i, name in enumerate(s.channel_names_):
        q = np.quantile(ref[name], levels)
        np.testing.assert_allclose(s.center_.mantissa[i], q[1], rtol=1e-12)
        spread = q[2] - q[0]
        np.testing.assert_allclose(s.scale_.mantissa[i], spread, rtol=1e-12)


def test_mad_is_exact(corpus, monkeypatch):
    root, ref = corpus
    # small windows force several histogram passes over the corpus
    monkeypatch.setattr(pp._exact, "COLLECT_LIMIT", 64)
    s = pp.fit_corpus(_files(root), "mad").scaler
    for i, name in enumerate(s.channel_names_):
        med = np.median(ref[name])
        np.testing.assert_allclose(s.center_.mantissa[i], med, rtol=1e-12)
        np.testing.assert_allclose(s.mad_.mantissa[i], np.median(np.abs(ref[name] - med)), rtol=1e-12)


def test_per_dimension_pools_the_corpus_channels(corpus):
    root, ref = corpus
    s = pp.fit_corpus(_files(root), pp.StandardScaler(per="dimension")).scaler
    x = np.concatenate([ref["Fz"], ref["Cz"]])
    np.testing.assert_allclose(s.mean_.mantissa, x.mean(), rtol=1e-12)
    np.testing.assert_allclose(s.var_.mantissa, x.var(), rtol=1e-12)


def test_volts_and_microvolts_contribute_the_same_numbers(tmp_path):
    rng = np.random.default_rng(3)
    d1, d2 = _digital(rng, 750, 500), _digital(rng, 1000, -100)
    uv, mixed = tmp_path / "uv", tmp_path / "mixed"
    uv.mkdir(), mixed.mkdir()
    write_edf(uv / "1.edf", {"Cz": ("uV", d1)})
    write_edf(uv / "2.edf", {"Cz": ("uV", d2)})
    write_edf(mixed / "1.edf", {"Cz": ("uV", d1)})
    # the same physical values in V, as an NWB file: data * conversion
    write_nwb(mixed / "2.nwb", ["Cz"], d2.astype(np.int16)[:, None], 0.1e-6)
    a = pp.fit_corpus(uv, "zscore").scaler
    b = pp.fit_corpus(mixed, "zscore").scaler
    assert b.mean_.unit == u.uvolt  # the unit of the first file in path order
    np.testing.assert_allclose(b.mean_.mantissa, a.mean_.mantissa, rtol=1e-12)
    np.testing.assert_allclose(b.var_.mantissa, a.var_.mantissa, rtol=1e-12)
    ra, rb = pp.fit_corpus(uv, "robust").scaler, pp.fit_corpus(mixed, "robust").scaler
    np.testing.assert_allclose(rb.center_.mantissa, ra.center_.mantissa, rtol=1e-12)


def test_a_channel_with_two_dimensions_names_both_files(tmp_path):
    rng = np.random.default_rng(1)
    write_edf(tmp_path / "a.edf", {"Cz": ("uV", _digital(rng, 250, 0))})
    write_nwb(tmp_path / "b.nwb", ["Cz"], np.ones((100, 1), dtype=np.int16), 1.0)  # volts: fine
    pp.fit_corpus(tmp_path)
    from pynwb import TimeSeries  # a current, not a voltage

    nwb = pynwb.NWBFile(
        session_description="x",
        identifier="c",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    nwb.add_acquisition(TimeSeries(name="Cz", data=np.ones(100), unit="nA", rate=float(RATE)))
    with pynwb.NWBHDF5IO(str(tmp_path / "c.nwb"), "w") as writer:
        writer.write(nwb)
    with pytest.raises(u.UnitMismatchError, match=r"'Cz'.*a\.edf.*c\.nwb"):
        pp.fit_corpus(tmp_path)


# ---------------------------------------------------------------------------- finding files, BIDS


def test_folders_are_searched_by_content_and_globs_expand(corpus, tmp_path):
    root, _ = corpus
    shutil.copy(root / "a.edf", tmp_path / "recording.dat")  # EDF content, another name
    (tmp_path / "notes.txt").write_text("not a recording")
    (tmp_path / ".hidden.edf").write_bytes((root / "a.edf").read_bytes())
    assert pp.find_recordings(tmp_path) == [str(tmp_path / "recording.dat")]
    assert pp.find_recordings([str(root / "*.edf")]) == [str(root / n) for n in ("a.edf", "b.edf", "d.edf")]
    with pytest.raises(ValueError, match="no file matches"):
        pp.find_recordings(str(tmp_path / "*.bdf"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        pp.find_recordings(tmp_path / "missing.edf")


def test_bids_channels_tsv_units_and_bad_channels(tmp_path):
    rng = np.random.default_rng(9)
    (tmp_path / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    values = {}
    for sub in ("01", "02"):
        folder = tmp_path / f"sub-{sub}" / "eeg"
        folder.mkdir(parents=True)
        chans = {n: ("", _digital(rng, 500, c)) for n, c in (("Cz", 100), ("Pz", -50), ("T7", 0))}
        write_edf(folder / f"sub-{sub}_task-rest_eeg.edf", chans)  # no unit in the EDF header
        status = "bad" if sub == "02" else "good"
        (folder / f"sub-{sub}_task-rest_channels.tsv").write_text(
            f"name\ttype\tunits\tstatus\nCz\tEEG\tuV\tgood\nPz\tEEG\tmV\tgood\nT7\tEEG\tuV\t{status}\n"
        )
        for n, (unit, d) in chans.items():
            values.setdefault(n, []).append(_physical(d, unit))
    (tmp_path / "derivatives").mkdir()
    shutil.copy(tmp_path / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf", tmp_path / "derivatives" / "x.edf")
    report = pp.fit_corpus(tmp_path)
    assert len(report.files) == 2  # derivatives/ is not part of the corpus
    assert report.channel_names == ("Cz", "Pz")  # T7 is bad in sub-02: not in the intersection
    s = report.scaler
    assert s.mean_.unit == u.uvolt  # the TSV's units: Cz in uV, Pz in mV (converted to Cz's uV)
    np.testing.assert_allclose(s.mean_.mantissa[0], np.concatenate(values["Cz"]).mean(), rtol=1e-12)
    np.testing.assert_allclose(s.mean_.mantissa[1], np.concatenate(values["Pz"]).mean() * 1e3, rtol=1e-12)
    union = pp.fit_corpus(tmp_path, channels="union").scaler
    assert union.n_samples_seen_.tolist() == [1000, 1000, 500]  # T7 from sub-01 only


# ---------------------------------------------------------------------------- faults


@pytest.fixture
def with_corrupt(corpus, tmp_path):
    root, _ = corpus
    for name in _files(root):
        shutil.copy(name, tmp_path / Path(name).name)
    (tmp_path / "bb.edf").write_bytes(b"0       " + b"\x00garbage" * 40)  # EDF by content, corrupt
    return tmp_path


def test_corrupt_file_raise_stops_before_writing_and_names_it(with_corrupt, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "stores"
    with pytest.raises(ValueError, match="bb.edf"):
        pp.normalize_corpus(with_corrupt, out)
    assert not out.exists()
    with pytest.raises(ValueError, match="bb.edf"):
        pp.fit_corpus(with_corrupt, "robust")


def test_corrupt_file_skip_is_reported_and_left_out(corpus, with_corrupt, tmp_path_factory):
    root, _ = corpus
    report = pp.fit_corpus(with_corrupt, on_error="skip")
    assert [Path(p).name for p, _ in report.skipped] == ["bb.edf"]
    assert report.skipped[0][1]  # the reason
    _assert_identical(report.scaler, pp.fit_corpus(_files(root)).scaler)
    out = tmp_path_factory.mktemp("skip")
    written = pp.normalize_corpus(with_corrupt, out, "robust", on_error="skip")
    assert sorted(os.listdir(out)) == ["a.zarr", "b.zarr", "c.zarr", "d.zarr"]
    assert [Path(p).name for p, _ in written.skipped] == ["bb.edf"]


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="on_error"):
        pp.fit_corpus(".", on_error="ignore")
    with pytest.raises(ValueError, match="channels"):
        pp.fit_corpus(".", channels="all")
    with pytest.raises(TypeError, match="scaler"):
        pp.fit_corpus(".", scaler=3)
    with pytest.raises(ValueError, match="n_workers"):
        _corpus._Runner(None, 2, False)


# ---------------------------------------------------------------------------- output


def test_zarr_stores_open_with_zarr_dask_and_read_zarr(corpus, tmp_path):
    da = pytest.importorskip("dask.array")
    root, ref = corpus
    report = pp.normalize_corpus(_files(root), tmp_path, "zscore", chunk_samples=256)
    assert [Path(p).name for p in report.written] == ["a.zarr", "b.zarr", "c.zarr", "d.zarr"]
    s = report.scaler
    store = zarr.open(str(tmp_path / "b.zarr"), mode="r")
    data = store["data"]
    assert data.dtype == np.float32 and data.shape == (1000, 2) and data.chunks == (256, 2)
    attrs = dict(store.attrs)
    assert attrs["channel_names"] == ["Fz", "Cz"] and attrs["sampling_rate_hz"] == RATE
    assert attrs["method"] == "zscore" and attrs["unitnorm_version"] == un.__version__
    assert attrs["stats"]["mean"]["unit"] == ["uV", "uV"] and attrs["stats"]["var"]["unit"] == ["uV^2"] * 2
    import hashlib

    assert attrs["source"] == {
        "path": str(root / "b.edf"),
        "sha256": hashlib.sha256((root / "b.edf").read_bytes()).hexdigest(),
    }
    lazy = da.from_zarr(str(tmp_path / "b.zarr"), component="data")
    np.testing.assert_array_equal(lazy.compute(), data[:])
    # the values: (x - mean) / std with the corpus statistics, x from the reference formula (b.edf in mV)
    rec = io.read_edf(root / "b.edf")
    x_uv = rec.pick(["Fz", "Cz"]).select(u.uvolt).data.mantissa
    expected = (x_uv - s.mean_.mantissa) / np.sqrt(s.var_.mantissa)
    np.testing.assert_allclose(data[:], expected, rtol=2e-7, atol=2e-7)  # float32 rounding
    back = io.read_zarr(tmp_path / "b.zarr")
    assert back.channel_names == ("Fz", "Cz") and float(back.sampling_rate.mantissa) == RATE
    assert back.stats["mean"][0].unit == u.uvolt and back.stats["var"][1].unit == u.uvolt**2
    assert u.math.allclose(back.stats["mean"][1], s.mean_[1], rtol=1e-15)
    np.testing.assert_array_equal(back.mantissa(), data[:].astype(np.float64))
    # a union run writes each recording with the channels it has
    union = pp.normalize_corpus(_files(root), tmp_path / "union", channels="union")
    assert zarr.open(str(tmp_path / "union" / "c.zarr"), mode="r").attrs["channel_names"] == ["Fz", "Cz"]
    assert zarr.open(str(tmp_path / "union" / "d.zarr"), mode="r").attrs["channel_names"] == [
        "Fz",
        "Cz",
        "Pz",
        "O1",
    ]
    assert union.channel_names == ("Fz", "Cz", "Pz", "O1")


def test_resume_skips_complete_stores_of_the_same_statistics(corpus, tmp_path):
    root, _ = corpus
    first = pp.normalize_corpus(_files(root), tmp_path, "robust")
    assert len(first.written) == 4
    # a run stopped half way: two stores missing, a temporary store left by the crash
    shutil.rmtree(tmp_path / "c.zarr")
    shutil.rmtree(tmp_path / "d.zarr")
    shutil.copytree(tmp_path / "a.zarr", tmp_path / ".c.zarr.0123abcd.tmp")
    before = {n: os.stat(tmp_path / n / "zarr.json").st_mtime_ns for n in ("a.zarr", "b.zarr")}
    again = pp.normalize_corpus(_files(root), tmp_path, "robust")
    assert [Path(p).name for p in again.reused] == ["a.zarr", "b.zarr"]
    assert [Path(p).name for p in again.written] == ["c.zarr", "d.zarr"]
    assert before == {n: os.stat(tmp_path / n / "zarr.json").st_mtime_ns for n in ("a.zarr", "b.zarr")}
    # other statistics: every store is rewritten
    other = pp.normalize_corpus(_files(root), tmp_path, "zscore")
    assert len(other.written) == 4 and other.reused == ()
    assert zarr.open(str(tmp_path / "a.zarr"), mode="r").attrs["method"] == "zscore"
    # a fitted scaler applied again gives the same digest: nothing to do
    applied = pp.normalize_corpus(_files(root), tmp_path, other.scaler)
    assert len(applied.reused) == 4


def test_two_recordings_with_one_stem_are_refused(corpus, tmp_path):
    root, _ = corpus
    (tmp_path / "x").mkdir()
    shutil.copy(root / "a.edf", tmp_path / "x" / "a.edf")
    with pytest.raises(ValueError, match="distinct file names"):
        pp.normalize_corpus([root / "a.edf", tmp_path / "x" / "a.edf"], tmp_path / "out")


def test_scaler_checkpoint_round_trip_applies_by_name(corpus, tmp_path):
    root, _ = corpus
    s = pp.fit_corpus(_files(root)).scaler
    un.save(tmp_path / "stats.npz", s)
    loaded = un.load(tmp_path / "stats.npz")
    _assert_identical(loaded, s)
    report = pp.normalize_corpus([root / "d.edf"], tmp_path / "out", loaded)
    assert io.read_zarr(report.written[0]).channel_names == ("Fz", "Cz")
    only = pp.normalize_corpus([root / "a.edf"], tmp_path / "cz", loaded, channels=["Cz"])
    back = io.read_zarr(only.written[0])
    assert back.channel_names == ("Cz",) and back.stats["mean"][0] == s.mean_[1]
    with pytest.raises(ValueError, match="not among the fitted"):
        pp.normalize_corpus([root / "a.edf"], tmp_path / "pz", loaded, channels=["Pz"])


def test_import_does_not_pull_dask_or_zarr():
    import subprocess
    import sys

    code = (
        "import sys, unitnorm, unitnorm.preprocessing, unitnorm.io; "
        "print(sorted(m for m in ('dask', 'zarr', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_progress_lines_when_not_on_a_terminal(corpus, capsys, monkeypatch):
    root, _ = corpus
    monkeypatch.setattr(_corpus, "PROGRESS_SECONDS", 0.0)
    pp.fit_corpus(_files(root), progress=None)
    err = capsys.readouterr().err
    assert "unitnorm: statistics: 4/4 files" in err and " MB" in err


# ---------------------------------------------------------------------------- a real Dask cluster


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        yield lc, client


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zscore", "robust", "mad"])
def test_bit_identical_serial_processes_client_address(corpus, cluster, method):
    root, _ = corpus
    lc, client = cluster
    serial = pp.fit_corpus(_files(root), method, channels="union").scaler
    on_client = pp.fit_corpus(_files(root), method, channels="union", scheduler=client).scaler
    by_address = pp.fit_corpus(_files(root), method, channels="union", scheduler=lc.scheduler_address).scaler
    _assert_identical(serial, on_client)
    _assert_identical(serial, by_address)


@pytest.mark.slow
def test_normalize_on_the_cluster_writes_the_same_stores(corpus, cluster, tmp_path):
    root, _ = corpus
    _, client = cluster
    a = pp.normalize_corpus(_files(root), tmp_path / "serial", "robust")
    b = pp.normalize_corpus(_files(root), tmp_path / "dask", "robust", scheduler=client)
    for pa, pb in zip(a.written, b.written, strict=True):
        za, zb = zarr.open(pa, mode="r"), zarr.open(pb, mode="r")
        np.testing.assert_array_equal(za["data"][:], zb["data"][:])
        assert dict(za.attrs) == dict(zb.attrs)


@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(cluster, tmp_path):
    _, client = cluster
    rng = np.random.default_rng(11)
    for i in range(8):  # large enough that tasks are still running when the worker dies
        d = rng.integers(-5000, 5000, size=(2, 600_000), dtype=np.int16)
        write_edf(tmp_path / f"r{i}.edf", {"Cz": ("uV", d[0]), "Pz": ("uV", d[1])})
    expected = pp.fit_corpus(tmp_path, "robust").scaler
    pids = client.run(os.getpid)
    result: dict = {}
    run = threading.Thread(
        target=lambda: result.update(r=pp.fit_corpus(tmp_path, "robust", scheduler=client))
    )
    run.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and run.is_alive():
        busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
        if busy:
            victim = busy[0]
            time.sleep(0.05)  # into the task
            os.kill(pids[victim], signal.SIGKILL)
            killed_while_running = run.is_alive()
        time.sleep(0.005)
    run.join(120)
    assert victim is not None and killed_while_running, "the run ended before a worker could be killed"
    _assert_identical(result["r"].scaler, expected)
    # chunks of 2**19 samples: large enough that a multi-threaded BLAS would split a dot product
    _assert_identical(pp.fit_corpus(tmp_path).scaler, pp.fit_corpus(tmp_path, scheduler=client).scaler)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it
    assert pids[victim] not in client.run(os.getpid).values()


# ---------------------------------------------------------------------------- command line


def test_cli_stats_then_normalize_with_the_saved_statistics(corpus, tmp_path, capsys):
    from unitnorm.__main__ import main

    root, ref = corpus
    stats = tmp_path / "stats.npz"
    pattern = str(root / "*.edf")
    argv = ["stats", pattern, str(root / "c.nwb"), "--out", str(stats), "--method", "robust"]
    assert main([*argv, "--channels", "Fz,Cz"]) == 0
    out = capsys.readouterr().out
    assert "fitted RobustScaler over 4 recordings (0 skipped), 2 channels: Fz, Cz" in out
    saved = un.load(stats)
    np.testing.assert_allclose(
        saved.center_.mantissa, [np.median(ref["Fz"]), np.median(ref["Cz"])], rtol=1e-12
    )
    out_dir = tmp_path / "z"
    assert main(["normalize", str(root), "--out-dir", str(out_dir), "--stats", str(stats)]) == 0
    assert "wrote 4 Zarr stores" in capsys.readouterr().out
    back = io.read_zarr(out_dir / "a.zarr")
    assert back.attrs["method"] == "robust" and back.stats["center"][0].unit == u.uvolt
    assert main(["normalize", str(root), "--out-dir", str(out_dir), "--stats", str(stats)]) == 0
    assert "(4 already complete, 0 skipped)" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_writes_nothing(corpus, tmp_path, capsys):
    from unitnorm.__main__ import main

    root, _ = corpus
    shutil.copy(root / "a.edf", tmp_path / "a.edf")
    (tmp_path / "broken.edf").write_bytes(b"0       " + b"\x01" * 300)
    out_dir = tmp_path / "out"
    assert main(["normalize", str(tmp_path), "--out-dir", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "broken.edf" in err
    assert not out_dir.exists()
    assert main(["stats", str(tmp_path), "--out", str(tmp_path / "s.npz")]) == 1
    assert "broken.edf" in capsys.readouterr().err and not (tmp_path / "s.npz").exists()
    assert main(["stats", str(tmp_path), "--out", str(tmp_path / "s.npz"), "--on-error", "skip"]) == 0
    assert f"skipped {tmp_path / 'broken.edf'}: " in capsys.readouterr().out
    assert main(["stats", str(tmp_path), "--out", str(tmp_path / "t.npz"), "--workers", "2"]) == 1
    assert "--workers needs --scheduler processes" in capsys.readouterr().err
    assert (
        main(["normalize", str(root / "a.edf"), str(root / "b.edf"), "--out", str(tmp_path / "x.npz")]) == 1
    )
    assert "use --out-dir" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_quick_mode_runs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_corpus.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for text in ("files/s", "MB/s", "speed-up serial / processes x2", "peak memory per worker", "### Goals"):
        assert text in proc.stdout
    assert "statistics bit-identical (serial, Client, 'processes'): True" in proc.stdout


# ---------------------------------------------------------------------------- a law


@pytest.mark.parametrize("method", ["zscore", "robust"])
def test_unit_of_each_file_does_not_change_the_statistics(tmp_path_factory, method):
    """Property: a corpus gives the same statistics (in uV) whether each file is stored in uV or mV."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=8, deadline=None)
    @given(
        units=st.lists(st.sampled_from(["uV", "mV"]), min_size=2, max_size=3),
        seed=st.integers(0, 2**16),
    )
    def law(units, seed):
        rng = np.random.default_rng(seed)
        digital = [_digital(rng, RATE * 2, rng.integers(-3000, 3000)) for _ in units]
        plain, mixed = tmp_path_factory.mktemp("uv"), tmp_path_factory.mktemp("mixed")
        for i, (unit, d) in enumerate(zip(units, digital, strict=True)):
            write_edf(plain / f"{i}.edf", {"Cz": ("uV", d)})
            write_edf(mixed / f"{i}.edf", {"Cz": (unit, d * 1)})  # mV: the same digits, 1000x the gain
        a = pp.fit_corpus(plain, method).scaler
        b = pp.fit_corpus(mixed, method).scaler
        # mixed files hold d * 1e-4 mV = d * 0.1 uV, the plain ones d * 0.1 uV: the same values
        scale = 1.0 if units[0] == "uV" else 1e3  # b's unit is its first file's
        if method == "zscore":
            # two float64 accumulations of differently scaled values (a mean near 0 when the files'
            # centres cancel: rtol alone asked for 1e-12 of it): each within the float64 bound
            values = np.concatenate(digital).astype(np.float64)[:, None] * 0.1
            mean_err, var_err = (2 * float(e.max()) for e in stats_bounds(values, 0, roundoff=U64))
            big_var = float(values.var())
            assert_close_f32(
                b.mean_.mantissa * scale, a.mean_.mantissa, mean_err + 4 * U64 * np.abs(values).max()
            )
            assert_close_f32(b.var_.mantissa * scale**2, a.var_.mantissa, var_err + 4 * U64 * big_var)
        else:
            # a median or quantile is a sample (or the mean of two) read through the EDF formula
            # pmin + (d - dmin) * gain and converted from mV: a few float64 roundings of numbers as
            # large as the physical range (3276.8 uV), so the bound is absolute (a median near 0 is
            # not known to 1e-12 of itself: 4.4e-13 off at -0.2 uV was seen)
            atol = 16 * U64 * max(abs(p) for p in PHYS["uV"])
            assert_close_f32(b.center_.mantissa * scale, a.center_.mantissa, atol)
            assert_close_f32(b.scale_.mantissa * scale, a.scale_.mantissa, 2 * atol)
        assert str(b.mean_.unit if method == "zscore" else b.center_.unit) == units[0]

    law()


@pytest.mark.slow
def test_cli_on_a_running_cluster(corpus, cluster, tmp_path, capsys):
    from unitnorm.__main__ import main

    root, _ = corpus
    lc, _ = cluster
    stats = tmp_path / "s.npz"
    argv = ["stats", *_files(root), "--out", str(stats), "--method", "mad", "--channels", "union"]
    assert main([*argv, "--scheduler", lc.scheduler_address]) == 0
    _assert_identical(un.load(stats), pp.fit_corpus(_files(root), "mad", channels="union").scaler)
    argv = ["normalize", *_files(root), "--out-dir", str(tmp_path / "z"), "--stats", str(stats)]
    assert main([*argv, "--channels", "union", "--scheduler", lc.scheduler_address]) == 0
    assert "wrote 4 Zarr stores" in capsys.readouterr().out
