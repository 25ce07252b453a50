"""Streaming throughput of unitnorm.io on an EDF file, in MB/s of int16 input, against NumPy.

One process, one file, the cases interleaved over the repeats and the median reported:

- ``numpy memmap``: the file's int16 data records mapped with ``np.memmap``, each channel
  converted to physical float64 values and reduced with ``np.mean`` / ``np.std`` (no library,
  whole file in memory; the floor for this machine).
- ``numpy pyedflib``: every channel read with pyedflib's ``readSignal`` (whole file in memory),
  then ``np.mean`` / ``np.std``.
- ``unitnorm channel_stats``: ``unitnorm.preprocessing.channel_stats(read_edf(path))``, streaming in
  chunks with Chan's combination in float64 (memory bounded by the chunk).
- ``unitnorm write_normalized``: both passes plus writing the normalized ``.npz`` (what
  ``unitnorm normalize`` does).
- ``mne zscore + write``: the same job with MNE, as its users write it: ``read_raw_edf(preload=False)``,
  ``get_data`` per chunk for the mean and std, then again per chunk to z-score and write float32
  (a ``.npy``); the full CLI run is compared with it (``x mne`` column).

MB are 10**6 bytes of int16 samples in the file (not counting header or float output).
Run ``python benchmarks/bench_streaming.py [--quick]``; ``run(quick)`` returns the rows for
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BENCHMARK = "streaming"
# (channels, seconds at 256 Hz, repeats)
QUICK = (16, 240, 3)  # 2.0 MB
FULL = (64, 600, 5)  # 19.7 MB


def make_edf(path: Path, n_channels: int, seconds: int, rate: int = 256) -> None:
    """Write a plain EDF of int16 EEG-like data: the bundled real EEG, shifted per channel, plus noise."""
    import pyedflib
    from pyedflib import highlevel

    import unitnorm as un

    with pyedflib.EdfReader(str(Path(un.__file__).parent / "data" / "test_subsecond_crop.edf")) as f:
        eeg = f.readSignal(0, digital=True).astype(np.int64)
    rng = np.random.default_rng(0)
    n = seconds * rate
    signals, headers = [], []
    for ch in range(n_channels):
        base = np.resize(np.roll(eeg, 997 * ch), n)
        digital = np.clip(base + rng.integers(-40, 40, size=n), -32768, 32767).astype(np.int32)
        signals.append(digital)
        headers.append(
            highlevel.make_signal_header(
                f"EEG{ch:03d}", dimension="uV", sample_frequency=rate, physical_min=-8711, physical_max=8711
            )
        )
    highlevel.write_edf(str(path), signals, headers, digital=True, file_type=pyedflib.FILETYPE_EDF)


def _header(path: Path) -> tuple[int, int, list[int], np.ndarray, np.ndarray]:
    """Parse the EDF header by hand: header bytes, records, samples per record, gains, offsets."""
    raw = path.read_bytes()[:256]
    ns = int(raw[252:256])
    head = path.read_bytes()[: 256 * (ns + 1)]

    def field(offset: int, width: int) -> list[str]:
        start = 256 + offset * ns
        return [head[start + width * i : start + width * (i + 1)].decode().strip() for i in range(ns)]

    pmin = np.array(field(104, 8), dtype=float)
    pmax = np.array(field(112, 8), dtype=float)
    dmin = np.array(field(120, 8), dtype=float)
    dmax = np.array(field(128, 8), dtype=float)
    spr = [int(v) for v in field(216, 8)]
    gain = (pmax - pmin) / (dmax - dmin)
    return 256 * (ns + 1), int(raw[236:244]), spr, gain, pmin - gain * dmin


def numpy_memmap(path: Path) -> tuple[np.ndarray, np.ndarray]:
    nbytes, records, spr, gain, offset = _header(path)
    data = np.memmap(path, dtype="<i2", mode="r", offset=nbytes, shape=(records, sum(spr)))
    means, stds, col = [], [], 0
    for i, k in enumerate(spr):
        x = np.asarray(data[:, col : col + k], dtype=np.float64).reshape(-1) * gain[i] + offset[i]
        means.append(np.mean(x))
        stds.append(np.std(x))
        col += k
    return np.array(means), np.array(stds)


def numpy_pyedflib(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyedflib

    with pyedflib.EdfReader(str(path)) as f:
        x = np.stack([f.readSignal(i) for i in range(f.signals_in_file)], axis=1)
    return np.mean(x, axis=0), np.std(x, axis=0)


def unitnorm_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from unitnorm import io, preprocessing

    stats = preprocessing.channel_stats(io.read_edf(path), progress=False)
    return stats.mean_mantissa, stats.std_mantissa


def unitnorm_write(path: Path, out: Path) -> tuple[np.ndarray, np.ndarray]:
    from unitnorm import io, preprocessing

    scaler = preprocessing.write_normalized(io.read_edf(path), out, progress=False)
    return np.asarray(scaler.mean_.mantissa), np.asarray(scaler.scale_.mantissa)


def mne_zscore_write(path: Path, out: Path, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    import mne

    raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
    n = raw.n_times
    count, mean, m2 = 0, 0.0, 0.0
    for start in range(0, n, chunk):  # pass 1: statistics, Chan's combination as a user would write it
        block = raw.get_data(start=start, stop=min(n, start + chunk)).T
        k = block.shape[0]
        bm = block.mean(0)
        delta = bm - mean
        total = count + k
        m2 = m2 + ((block - bm) ** 2).sum(0) + delta**2 * count * k / total
        mean = mean + delta * k / total
        count = total
    std = np.sqrt(m2 / count)
    data = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, len(raw.ch_names)))
    for start in range(0, n, chunk):  # pass 2: normalize and write
        stop = min(n, start + chunk)
        data[start:stop] = ((raw.get_data(start=start, stop=stop).T - mean) / std).astype(np.float32)
    data.flush()
    del data
    return mean * 1e6, std * 1e6  # volts -> the file's uV


def run(quick: bool) -> list[dict]:
    """Time the five cases; return one dict per case (median seconds, MB/s, ratio to NumPy)."""
    n_channels, seconds, repeats = QUICK if quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.edf"
        make_edf(path, n_channels, seconds)
        _, records, spr, _, _ = _header(path)
        n_samples = records * spr[0]
        mb = n_samples * n_channels * 2 / 1e6
        cases = {
            "numpy memmap": lambda: numpy_memmap(path),
            "numpy pyedflib": lambda: numpy_pyedflib(path),
            "unitnorm channel_stats": lambda: unitnorm_stats(path),
            "unitnorm write_normalized": lambda: unitnorm_write(path, Path(tmp) / "out.npz"),
            "mne zscore + write": lambda: mne_zscore_write(path, Path(tmp) / "mne.npy"),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        results = {}
        for name, fn in cases.items():  # warm-up: imports, page cache
            results[name] = fn()
        for _ in range(repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    ref_mean, ref_std = results["numpy memmap"]
    numpy_s = statistics.median(times["numpy memmap"])
    mne_s = statistics.median(times["mne zscore + write"])
    rows = []
    for name in cases:
        mean, std = results[name]
        seconds_med = statistics.median(times[name])
        rows.append(
            {
                "benchmark": BENCHMARK,
                "case": name,
                "channels": n_channels,
                "samples": n_samples,
                "input_mb": round(mb, 3),
                "repeats": repeats,
                "median_s": seconds_med,
                "mb_per_s": mb / seconds_med,
                "ratio_to_numpy_memmap": seconds_med / numpy_s,
                "ratio_to_mne": seconds_med / mne_s,
                "max_rel_diff_mean": float(np.max(np.abs(mean - ref_mean) / ref_std)),
                "max_rel_diff_std": float(np.max(np.abs(std / ref_std - 1))),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small file (2 MB) and 3 repeats")
    args = parser.parse_args()
    rows = run(args.quick)
    first = rows[0]
    print(
        f"EDF of {first['channels']} channels x {first['samples']} int16 samples = "
        f"{first['input_mb']:.1f} MB, median of {first['repeats']} interleaved repeats"
    )
    print(
        f"{'case':28s} {'seconds':>9s} {'MB/s':>9s} {'x numpy memmap':>15s} {'x mne':>7s} "
        f"{'mean/std agree to':>18s}"
    )
    for r in rows:
        agree = max(r["max_rel_diff_mean"], r["max_rel_diff_std"])
        print(
            f"{r['case']:28s} {r['median_s']:9.4f} {r['mb_per_s']:9.1f} "
            f"{r['ratio_to_numpy_memmap']:15.2f} {r['ratio_to_mne']:7.2f} {agree:18.1e}"
        )


if __name__ == "__main__":
    main()
