"""The ``unitnorm`` command, run for real: ``python -m unitnorm normalize ...`` and ``demo``.

Every invocation is a subprocess of ``sys.executable -m unitnorm``. They are started together
once per module (a thread pool) because each one pays for importing jax; every test then
checks its own invocation.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import unitnorm as un
from unitnorm import io
from unitnorm import preprocessing as pp
from unitnorm.__main__ import main

pyedflib = pytest.importorskip("pyedflib")
pynwb = pytest.importorskip("pynwb")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
BUNDLED = Path(un.__file__).parent / "data" / "test_subsecond_crop.edf"
BDF = Path(pyedflib.__file__).parent / "tests" / "data" / "test_generator.bdf"


def _write_nwb(path: Path, seed: int = 5) -> None:
    from pynwb.ecephys import ElectricalSeries

    nwb = pynwb.NWBFile(
        session_description="cli test",
        identifier="cli",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    device = nwb.create_device(name="amp")
    group = nwb.create_electrode_group(name="g", description="d", location="CA1", device=device)
    for _ in range(3):
        nwb.add_electrode(group=group, location="CA1")
    rng = np.random.default_rng(seed)
    nwb.add_acquisition(
        ElectricalSeries(
            name="raw",
            data=rng.integers(-1000, 1000, size=(2000, 3), dtype=np.int16),
            electrodes=nwb.create_electrode_table_region([0, 1, 2], "all"),
            rate=1000.0,
            conversion=1e-6,
            offset=2e-3,
            channel_conversion=[1.0, 3.0, 0.5],
        )
    )
    nwb.add_acquisition(pynwb.TimeSeries(name="temp", data=np.linspace(36, 37, 20), unit="degC", rate=2.0))
    with pynwb.NWBHDF5IO(str(path), "w") as writer:
        writer.write(nwb)


def _write_unknown_unit_edf(path: Path) -> None:
    from pyedflib import highlevel

    header = highlevel.make_signal_header(
        "Cz", dimension="furlongs", sample_frequency=100, physical_min=-10, physical_max=10
    )
    highlevel.write_edf(str(path), [np.sin(np.arange(1000) / 10.0)], [header])


# Run as real subprocesses: the main job, the demo, and each bad-input case the issue names.
# {d} is the work folder, {o} the case's own (initially empty) output folder.
CASES: dict[str, list[str]] = {
    "zscore": ["normalize", "{d}/eeg.edf", "--out", "{o}/eeg.npz"],
    "demo": ["demo", "--plot", "{o}/demo.png"],
    "missing": ["normalize", "{d}/missing.edf", "--out", "{o}/x.npz"],
    # fit on one recording, save the scaler; then apply it to another (below, after this batch)
    "save_stats": [
        "normalize",
        "{d}/session.nwb",
        "--name",
        "raw",
        "--out",
        "{o}/fit.npz",
        "--method",
        "robust",
        "--save-stats",
        "{o}/stats.npz",
    ],
}
# The same checks in process (main(argv)), to keep the suite fast: each subprocess imports jax.
IN_PROCESS: dict[str, list[str]] = {
    "not_a_recording": ["normalize", "{d}/notes.txt", "--out", "{o}/x.npz"],
    "corrupt_header": ["normalize", "{d}/corrupt.edf", "--out", "{o}/x.npz"],
    "unknown_unit": ["normalize", "{d}/unknown_unit.edf", "--out", "{o}/x.npz"],
    "no_such_channel": ["normalize", "{d}/eeg.edf", "--channels", "Cz", "--out", "{o}/x.npz"],
    "robust": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/eeg.npz",
        "--method",
        "mad",
        "--chunk-seconds",
        "7",
    ],
    "chunked": ["normalize", "{d}/eeg.edf", "--out", "{o}/eeg.npz", "--chunk-seconds", "0.5"],
    "nwb": ["normalize", "{d}/session.nwb", "--name", "raw", "--channels", "0,2", "--out", "{o}/nwb.npz"],
    "bdf": ["normalize", str(BDF), "--channels", "sine 5Hz", "--out", "{o}/bdf.npz"],
    "truncated": ["normalize", "{d}/truncated.edf", "--out", "{o}/x.npz"],
    "mixed_rates": ["normalize", str(BDF), "--out", "{o}/x.npz"],
    "nwb_needs_name": ["normalize", "{d}/session.nwb", "--out", "{o}/x.npz"],
    "overwrite_input": ["normalize", "{d}/victim.edf", "--out", "{d}/victim.edf"],
    "no_out_folder": ["normalize", "{d}/eeg.edf", "--out", "{o}/no/such/folder/x.npz"],
    "bad_chunk": ["normalize", "{d}/eeg.edf", "--out", "{o}/x.npz", "--chunk-seconds", "-2"],
    "quantile": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/q.npz",
        "--method",
        "quantile",
        "--chunk-seconds",
        "5",
    ],
    "stats_wrong_method": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/x.npz",
        "--stats",
        "{d}/eeg_stats.npz",
        "--method",
        "zscore",
    ],
    "stats_missing_channels": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/x.npz",
        "--stats",
        "{d}/nwb_stats.npz",
    ],
    "ems": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/ems.npz",
        "--method",
        "ems",
        "--eps",
        "1e-4uV",
        "--factor-new",
        "0.01",
        "--chunk-seconds",
        "3",
    ],
    "ems_init_block": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/ems.npz",
        "--method",
        "ems",
        "--eps",
        "1e-4uV",
        "--factor-new",
        "0.01",
        "--init-block-size",
        "1000",
        "--chunk-seconds",
        "3",
    ],
    "ems_bad_eps": [
        "normalize",
        "{d}/eeg.edf",
        "--out",
        "{o}/x.npz",
        "--method",
        "ems",
        "--eps",
        "1e-4furlong",
    ],
    "ems_option_without_ems": ["normalize", "{d}/eeg.edf", "--out", "{o}/x.npz", "--eps", "1uV"],
}


class _Done:
    """What a run left: exit status, stdout, stderr (like CompletedProcess)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    (work / "eeg.edf").write_bytes(BUNDLED.read_bytes())
    (work / "victim.edf").write_bytes(BUNDLED.read_bytes())
    (work / "notes.txt").write_text("hello, these are my notes, not a recording\n")
    raw = BUNDLED.read_bytes()
    (work / "corrupt.edf").write_bytes(raw[:8] + b"\x00\xff" * 380 + raw[768:])  # EDF magic, garbage header
    (work / "truncated.edf").write_bytes(raw[: 768 + 296 * 10 + 100])  # header claims 120 records
    _write_unknown_unit_edf(work / "unknown_unit.edf")
    _write_nwb(work / "session.nwb")
    _write_nwb(work / "other_session.nwb", seed=6)
    # saved scalers for the --stats error cases
    un.save(work / "eeg_stats.npz", pp.RobustScaler(scale="mad").fit(io.read_edf(work / "eeg.edf")))
    un.save(work / "nwb_stats.npz", pp.StandardScaler().fit(io.read_nwb(work / "session.nwb", name="raw")))

    def run(name):
        out = work / f"out_{name}"
        out.mkdir()
        args = [a.format(d=work, o=out) for a in CASES[name]]
        proc = subprocess.run(
            [sys.executable, "-m", "unitnorm", *args], capture_output=True, text=True, cwd=work, timeout=300
        )
        return name, (proc, out)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(run, CASES))
    results["work"] = work
    return results


@pytest.fixture
def run_main(runs, tmp_path, capsys):
    """Run ``main(argv)`` in this process for an IN_PROCESS case."""

    def run(name):
        out = tmp_path / f"out_{name}"
        out.mkdir()
        capsys.readouterr()
        status = main([a.format(d=runs["work"], o=out) for a in IN_PROCESS[name]])
        captured = capsys.readouterr()
        return _Done(status, captured.out, captured.err), out

    return run


# ---------------------------------------------------------------------------- success


def test_normalize_edf(runs):
    proc, out = runs["zscore"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    rec = io.read_edf(BUNDLED)
    z, stats = pp.normalize_recording(rec)
    with np.load(out / "eeg.npz", allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["data"], z, atol=1e-6)
        assert npz["data"].shape == (15360, 1)
        assert npz["channel_names"].tolist() == ["Fp1"]
        assert npz["mean_unit"].tolist() == ["uV"] and npz["std_unit"].tolist() == ["uV"]
        np.testing.assert_allclose(npz["mean"], stats.mean_mantissa, rtol=1e-12)
        np.testing.assert_allclose(npz["std"], stats.std_mantissa, rtol=1e-12)
    # the printed table names the channel and the units
    with pyedflib.EdfReader(str(BUNDLED)) as f:
        values = f.readSignal(0)
    assert f"Fp1      {values.mean():.4g} uV  {values.std():.4g} uV" in proc.stdout
    assert [p.name for p in out.iterdir()] == ["eeg.npz"]


def test_normalize_robust_and_chunks(runs, run_main):
    proc, out = run_main("robust")
    assert proc.returncode == 0, proc.stderr
    loaded = io.load_normalized(out / "eeg.npz")
    rec = io.read_edf(BUNDLED)
    z, robust = pp.normalize_recording(rec, method="mad")
    np.testing.assert_allclose(loaded["data"], z, atol=1e-6)
    assert float(loaded["mad"][0].mantissa) == pytest.approx(float(robust.mad_mantissa[0]), rel=1e-12)
    assert "median" in proc.stdout and "MAD" in proc.stdout
    proc_c, out_c = run_main("chunked")
    proc_z, out_z = runs["zscore"]
    assert proc_c.returncode == 0, proc_c.stderr
    with (
        np.load(out_c / "eeg.npz", allow_pickle=False) as a,
        np.load(out_z / "eeg.npz", allow_pickle=False) as b,
    ):
        np.testing.assert_allclose(a["data"], b["data"], atol=1e-6)


def test_normalize_nwb_with_channels(runs, run_main):
    proc, out = run_main("nwb")
    assert proc.returncode == 0, proc.stderr
    with pynwb.NWBHDF5IO(str(runs["work"] / "session.nwb"), "r") as reader:
        volts = reader.read().acquisition["raw"].get_data_in_units()[:, [0, 2]]
    with np.load(out / "nwb.npz", allow_pickle=False) as npz:
        assert npz["channel_names"].tolist() == ["0", "2"]
        assert npz["mean_unit"].tolist() == ["V", "V"]
        np.testing.assert_allclose(npz["mean"], volts.mean(0), rtol=1e-12)
        np.testing.assert_allclose(npz["data"], (volts - volts.mean(0)) / volts.std(0), atol=1e-6)


def test_normalize_bdf_channel(run_main):
    proc, out = run_main("bdf")
    assert proc.returncode == 0, proc.stderr
    with pyedflib.EdfReader(str(BDF)) as f:
        values = f.readSignal(0)
    with np.load(out / "bdf.npz", allow_pickle=False) as npz:
        assert npz["channel_names"].tolist() == ["sine 5Hz"]
        np.testing.assert_allclose(npz["data"][:, 0], (values - values.mean()) / values.std(), atol=1e-5)


def _percentile_scale(x, lo, hi):
    # independent float64 reference: NumPy's percentiles (what scikit-learn's RobustScaler uses)
    q = np.percentile(x, [lo, 50, hi], axis=0)
    return q[1], q[2] - q[0]


def test_normalize_methods_robust_quantile(run_main):
    proc, out = run_main("quantile")
    assert proc.returncode == 0, proc.stderr
    x = io.read_edf(BUNDLED).data.mantissa
    q = np.quantile(x, [0.01, 0.5, 0.99], axis=0)
    with np.load(out / "q.npz", allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["data"], (x - q[1]) / (q[2] - q[0]), rtol=1e-6, atol=1e-6)
        assert str(npz["method"]) == "quantile"


def test_save_stats_then_apply_to_another_recording(runs):
    proc, out = runs["save_stats"]
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "RobustScaler" in proc.stdout
    fitted = un.load(out / "stats.npz")
    assert isinstance(fitted, pp.RobustScaler) and fitted.channel_names_ == ("0", "1", "2")
    x = io.read_nwb(runs["work"] / "session.nwb", name="raw").data
    center, scale = _percentile_scale(np.asarray(x.mantissa), 25, 75)
    np.testing.assert_allclose(fitted.center_.to_decimal(x.unit), center, rtol=1e-12)
    np.testing.assert_allclose(fitted.scale_.to_decimal(x.unit), scale, rtol=1e-12)
    # apply the saved statistics to another recording, in a fresh process
    other = runs["work"] / "other_session.nwb"
    applied = out / "applied.npz"
    args = [
        "normalize",
        str(other),
        "--name",
        "raw",
        "--out",
        str(applied),
        "--stats",
        str(out / "stats.npz"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "unitnorm", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    y = io.read_nwb(other, name="raw").data
    with np.load(applied, allow_pickle=False) as npz:
        assert str(npz["method"]) == "robust"
        expected = (np.asarray(y.to_decimal(x.unit)) - center) / scale
        np.testing.assert_allclose(npz["data"], expected, rtol=1e-5, atol=1e-5)


def _braindecode_ems(x, factor_new, eps):
    # float64 re-implementation of Braindecode's exponential_moving_standardize (pandas ewm, adjust=True,
    # braindecode/preprocessing/preprocess.py): mean and mean square as weighted sums with weights
    # (1 - factor_new)**age, normalized by the sum of the weights
    w = 1.0 - factor_new
    num = np.zeros(x.shape[1])
    den = 0.0
    snum = np.zeros(x.shape[1])
    out = np.empty_like(x)
    for t, row in enumerate(x):
        num = row + w * num
        den = 1.0 + w * den
        d = row - num / den
        snum = d * d + w * snum
        out[t] = d / np.maximum(eps, np.sqrt(snum / den))
    return out


def test_normalize_ems_streams_with_a_unit_eps(run_main):
    proc, out = run_main("ems")
    assert proc.returncode == 0, proc.stderr
    x = io.read_edf(BUNDLED).data  # in uV, so --eps 1e-4uV is 1e-4 in the mantissa's unit
    expected = _braindecode_ems(np.asarray(x.mantissa, dtype=np.float64), 0.01, 1e-4)
    with np.load(out / "ems.npz", allow_pickle=False) as npz:
        assert str(npz["method"]) == "ems" and npz["data"].dtype == np.float32
        # float32 output of an O(1) signal; chunked in 3 s pieces with the state carried over
        np.testing.assert_allclose(npz["data"], expected, rtol=1e-3, atol=1e-3)


def test_normalize_ems_with_an_initial_block_longer_than_a_chunk(run_main):
    """The standardizer holds the first 1000 samples back (chunks are 384): the output still lines up."""
    proc, out = run_main("ems_init_block")
    assert proc.returncode == 0, proc.stderr
    x = np.asarray(io.read_edf(BUNDLED).data.mantissa, dtype=np.float64)
    whole = pp.exponential_moving_standardize(x, factor_new=0.01, init_block_size=1000, eps=1e-4)
    with np.load(out / "ems.npz", allow_pickle=False) as npz:
        assert npz["data"].shape == x.shape
        np.testing.assert_allclose(npz["data"], np.asarray(whole), rtol=1e-4, atol=1e-4)


def test_demo(runs):
    proc, out = runs["demo"]
    assert proc.returncode == 0, proc.stderr
    with pyedflib.EdfReader(str(BUNDLED)) as f:
        values = f.readSignal(0)
    assert "Recording(1 channel: Fp1 [uV]; 15360 samples at 128 Hz, 120 s)" in proc.stdout
    assert f"Fp1      {values.mean():.4g} uV  {values.std():.4g} uV" in proc.stdout
    assert "the same EEG converted to volts gives the same z-scores" in proc.stdout
    # several channels in their units: the one EEG channel as read, in V, and in mV on an offset
    assert "Recording(3 channels: Fp1 [uV], Fp1 in V [V], Fp1 + 50 mV [mV]; 15360 samples" in proc.stdout
    import re

    agree = re.search(r"normalized per channel, their z-scores agree: max difference (\S+)", proc.stdout)
    assert agree is not None and float(agree.group(1)) < 1e-5, proc.stdout
    # the trap, against a float64 formula: epsilon 1e-5 read in uV^2 by one layer, V^2 by the other
    # (momentum 0.99 does not matter: a layer in training normalizes with the batch statistics)
    mean, var = values.mean(), values.var()
    z_uv = (values - mean) / np.sqrt(var + 1e-5)
    z_v = (values - mean) * 1e-6 / np.sqrt(var * 1e-12 + 1e-5)
    trap = re.search(r"adopt their input's unit differ by (\S+): their float", proc.stdout)
    assert trap is not None and float(trap.group(1)) == pytest.approx(np.abs(z_uv - z_v).max(), abs=0.01)
    fix = re.search(
        r"the fix: two BatchNorm0d\(in_unit=u.uvolt\) layers.*agree: max difference (\S+)", proc.stdout
    )
    assert fix is not None and float(fix.group(1)) < 1e-5 * np.abs(z_uv).max()
    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (800, 1280)  # readable on a 1280 px screen without scaling
    assert [p.name for p in out.iterdir()] == ["demo.png"]


# ---------------------------------------------------------------------------- bad input


def _check_refused(proc, out, match):
    import re

    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("unitnorm: error: ")
    assert "Traceback" not in proc.stderr
    assert re.search(match, lines[0]), lines[0]
    assert list(out.iterdir()) == []  # no output, no temporary file
    assert "wrote" not in proc.stdout


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", r"missing\.edf: no such file"),
    ],
)
def test_bad_input_subprocess(runs, case, match):
    _check_refused(*runs[case], match)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("not_a_recording", r"notes\.txt: not an EDF, BDF or NWB file \(it starts with b'hello"),
        ("corrupt_header", r"corrupt\.edf: not a readable EDF/BDF file"),
        ("unknown_unit", r"unknown_unit\.edf: channel 'Cz': unknown unit 'furlongs'"),
        ("no_such_channel", r"eeg\.edf: no channel named 'Cz'; the channels are 'Fp1'"),
        ("truncated", r"truncated\.edf: not a readable EDF/BDF file"),
        (
            "mixed_rates",
            r"test_generator\.bdf: the signals have different sampling rates \(1000 Hz: sine 5Hz",
        ),
        ("nwb_needs_name", r"session\.nwb: the NWB file holds several TimeSeries \['raw', 'temp'\]"),
        ("overwrite_input", r"victim\.edf: the output would overwrite the input"),
        ("no_out_folder", r"x\.npz: the output folder .* does not exist"),
        ("bad_chunk", r"--chunk-seconds must be a positive number of seconds, got -2\.0"),
        ("stats_wrong_method", r"--method zscore does not match --stats .*eeg_stats\.npz, which holds mad"),
        ("stats_missing_channels", r"eeg\.edf lacks the channels '0', '1', '2' of --stats"),
        ("ems_bad_eps", r"unknown unit 'furlong'"),
        ("ems_option_without_ems", r"--factor-new, --init-block-size and --eps apply to --method ems only"),
    ],
)
def test_bad_input_in_process(run_main, case, match):
    _check_refused(*run_main(case), match)


def test_overwrite_refusal_keeps_input(runs, run_main):
    run_main("overwrite_input")
    assert (runs["work"] / "victim.edf").read_bytes() == BUNDLED.read_bytes()
    assert not [p for p in runs["work"].iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------- argument errors (in process)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            ["normalize", "x.edf"],
            r"unitnorm normalize: error: one of the arguments --out --out-dir is required",
        ),
        (["normalize", "x.edf", "--out", "y.npz", "--method", "minmax"], r"invalid choice: 'minmax'"),
        (["frobnicate"], r"unitnorm: error: argument \{demo,normalize,stats\}: invalid choice: 'frobnicate'"),
        (["normalize", "x.edf", "--out", "y.npz", "--chunk-seconds", "soon"], r"invalid float value: 'soon'"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    import re

    assert re.search(match, err), err


def test_main_in_process(tmp_path, capsys):
    out = tmp_path / "o.npz"
    assert main(["normalize", str(BUNDLED), "--out", str(out), "--channels", "Fp1"]) == 0
    assert out.exists()
    assert main(["normalize", str(tmp_path / "nope.edf"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip() == f"unitnorm: error: {tmp_path / 'nope.edf'}: no such file"


def test_console_script_declared():
    text = (REPO / "pyproject.toml").read_text()
    # the entry point is a top-level module: importing it does not run unitnorm/__init__.py (JAX)
    assert 'unitnorm = "unitnorm_cli:main"' in text
    assert 'py-modules = ["unitnorm_cli"]' in text
    assert os.path.exists(REPO / "unitnorm_cli.py")
    assert os.path.exists(REPO / "unitnorm" / "__main__.py")  # python -m unitnorm


def _light_run(*argv):
    """Run the console script's function in a fresh interpreter with -X importtime; return the imports."""
    code = "import sys, unitnorm_cli; sys.argv[0] = 'unitnorm'; sys.exit(unitnorm_cli.main())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    errors = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return proc, imported, errors


@pytest.mark.parametrize(
    "argv", [["--help"], ["demo", "--help"], ["normalize", "--help"], ["stats", "--help"], ["--version"]]
)
def test_help_and_version_do_not_import_jax(argv):
    proc, imported, errors = _light_run(*argv)
    assert proc.returncode == 0, errors
    assert "argparse" in imported  # the import log was read
    assert not imported & {"jax", "jaxlib", "numpy", "brainunit", "unitnorm"}, sorted(imported)
    if argv == ["--version"]:
        assert proc.stdout == f"unitnorm {un.__version__}\n"
    else:
        assert proc.stdout.startswith(f"usage: unitnorm {argv[0] if len(argv) > 1 else ''}".rstrip())


def test_usage_error_does_not_import_jax():
    proc, imported, errors = _light_run("frobnicate")
    assert proc.returncode == 2
    assert errors.startswith("unitnorm: error: argument {demo,normalize,stats}: invalid choice: 'frobnicate'")
    assert "jax" not in imported and "unitnorm" not in imported


def test_light_entry_point_runs_the_subcommands(tmp_path, capsys):
    import unitnorm_cli

    out = tmp_path / "o.npz"
    assert unitnorm_cli.main(["normalize", str(BUNDLED), "--out", str(out)]) == 0
    assert out.exists()
    assert unitnorm_cli.main(["normalize", str(tmp_path / "nope.edf"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip() == f"unitnorm: error: {tmp_path / 'nope.edf'}: no such file"


# ---------------------------------------------------------------------------- first contact (in process)


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"unitnorm {un.__version__}\n"
    # the same version as the one pyproject declares (one source of truth for the user)
    import re

    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared is not None and declared.group(1) == un.__version__


@pytest.mark.parametrize("where", ["missing_folder", "a_folder"])
def test_demo_plot_path_is_checked_before_the_demo_runs(tmp_path, capsys, where):
    if where == "missing_folder":
        plot, match = tmp_path / "missing" / "x.png", f"the folder {tmp_path / 'missing'} does not exist"
    else:
        plot, match = tmp_path, "is a folder; give a file name"
    assert main(["demo", "--plot", str(plot)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unitnorm: error: --plot {plot}: "), captured.err
    assert match in lines[0]
    assert captured.out == ""  # nothing of the demo ran
    assert list(tmp_path.iterdir()) == []


def test_error_lines_name_the_file_not_an_internal_class(tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["normalize", str(BUNDLED), "--channels", "Fp1", "Fp1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"unitnorm: error: {BUNDLED}: channel names must be unique, got repeats of ['Fp1']\n"
    assert not out.exists()
