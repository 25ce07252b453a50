"""Corpus statistics: serial against a local Dask cluster, on a generated corpus of EDF files.

Generates ``--files`` EDF files of ``--channels`` int16 channels (about ``--mb`` MB each),
then fits ``--method`` over the corpus with :func:`unitnorm.preprocessing.fit_corpus`:

- serially (``scheduler=None``), in this process;
- on a ``LocalCluster(n_workers=--workers, threads_per_worker=1, processes=True)`` started
  beforehand (loopback, no dashboard), the workers warmed by importing unitnorm;
- once more with ``scheduler='processes'``, cluster start-up included.

The serial and cluster runs alternate ``--repeats`` times (the page cache is warmed
first, so both read from memory) and the best time of each is kept. Printed: the
speed-up, files/s and MB/s (10**6 bytes of EDF file), the peak resident memory of every
worker process (``ru_maxrss``) and of this process, and whether the statistics were
bit-identical. ``--normalize DIR`` also times ``normalize_corpus`` into Zarr stores.
Speed is a ratio measured in one process, never asserted.

Run ``python benchmarks/bench_corpus.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_SPEEDUP = 1.7
GOAL_WORKER_MB = 300.0


def write_edf(path: Path, n_channels: int, seconds: int, seed: int, rate: int = 256) -> None:
    """A plain EDF (1 s records) of int16 samples in uV, written field by field, a minute at a time."""

    def field(value: object, width: int) -> bytes:
        return str(value).encode("ascii").ljust(width)[:width]

    header = b"".join(
        [
            field(0, 8),
            field("X X X X", 80),
            field("Startdate 01-JAN-2020 X X X", 80),
            field("01.01.20", 8),
            field("00.00.00", 8),
            field(256 * (n_channels + 1), 8),
            field("", 44),
            field(seconds, 8),
            field(1, 8),
            field(n_channels, 4),
        ]
    )
    columns = [
        ([f"EEG{i:03d}" for i in range(n_channels)], 16),
        (["AgAgCl electrode"] * n_channels, 80),
        (["uV"] * n_channels, 8),
        (["-3276.8"] * n_channels, 8),
        (["3276.7"] * n_channels, 8),
        (["-32768"] * n_channels, 8),
        (["32767"] * n_channels, 8),
        ([""] * n_channels, 80),
        ([rate] * n_channels, 8),
        ([""] * n_channels, 32),
    ]
    for values, width in columns:
        header += b"".join(field(v, width) for v in values)
    rng = np.random.default_rng(seed)
    offsets = rng.integers(-3000, 3000, size=(1, n_channels, 1))
    with open(path, "wb") as fh:
        fh.write(header)
        for start in range(0, seconds, 60):
            records = min(60, seconds - start)
            block = rng.integers(-2000, 2000, size=(records, n_channels, rate)) + offsets
            fh.write(block.astype("<i2").tobytes())


def make_corpus(folder: Path, files: int, n_channels: int, mb: float) -> list[Path]:
    seconds = max(1, round(mb * 1e6 / (2 * n_channels * 256)))
    paths = []
    for i in range(files):
        path = folder / f"rec{i:04d}.edf"
        if not path.exists():
            write_edf(path, n_channels, seconds, seed=i)
        paths.append(path)
    return paths


def _warm_cache(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _uss_mb() -> float:
    """Memory only this process holds (not the shared libraries' pages every worker maps): psutil's USS."""
    import psutil

    return psutil.Process().memory_full_info().uss / 1e6


def _same(a: object, b: object) -> bool:
    sa = {k: np.asarray(v).tobytes() for k, (v, _) in a._stats.items() if v is not None}
    sb = {k: np.asarray(v).tobytes() for k, (v, _) in b._stats.items() if v is not None}
    return sa == sb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 files of 1 MB (a smoke run)")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--mb", type=float, default=21.0, help="MB per file (default 21: 2.1 GB for 100)")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--method", default="zscore", choices=["zscore", "robust", "mad", "quantile"])
    parser.add_argument("--dir", help="where the corpus is generated (kept); default a temporary folder")
    parser.add_argument("--normalize", metavar="DIR", help="also time normalize_corpus into DIR")
    parser.add_argument(
        "--dask-malloc",
        action="store_true",
        help="keep Dask's MALLOC_TRIM_THRESHOLD_=65536 for the workers (unitnorm's own cluster unsets it)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.mb, args.channels, args.repeats = 6, 1.0, 8, 1

    import dask
    import distributed

    from unitnorm.preprocessing import _corpus, fit_corpus, normalize_corpus

    malloc = {} if args.dask_malloc else _corpus.WORKER_ENVIRON

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="unitnorm-corpus-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        paths = make_corpus(folder, args.files, args.channels, args.mb)
        total_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"corpus: {len(paths)} EDF files, {args.channels} channels, {total_mb:.0f} MB "
            f"in {folder} (generated in {time.perf_counter() - t0:.1f} s); method {args.method}"
        )
        _warm_cache(paths)
        files = [str(p) for p in paths]
        fit_corpus(files[:1], args.method)  # imports and first-call costs, as the workers' warm-up
        with (
            dask.config.set(malloc),
            distributed.LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.run(lambda: __import__("unitnorm.preprocessing._corpus"))
            fit_corpus(files[:1], args.method, scheduler=client)
            base = client.run(_rss_mb)
            serial_s, dask_s, serial_cpu, worker_cpu = [], [], [], []
            serial = parallel = None
            for _ in range(args.repeats):
                t, c = time.perf_counter(), time.process_time()
                serial = fit_corpus(files, args.method).scaler
                serial_s.append(time.perf_counter() - t)
                serial_cpu.append(time.process_time() - c)
                before = client.run(time.process_time)
                t = time.perf_counter()
                parallel = fit_corpus(files, args.method, scheduler=client).scaler
                dask_s.append(time.perf_counter() - t)
                after = client.run(time.process_time)
                worker_cpu.append(sum(after[w] - before[w] for w in after))
            peaks = client.run(_rss_mb)
            uss = client.run(_uss_mb)
        t = time.perf_counter()
        started = fit_corpus(files, args.method, scheduler="processes", n_workers=args.workers).scaler
        with_startup = time.perf_counter() - t
        best_serial, best_dask = min(serial_s), min(dask_s)
        speedup = best_serial / best_dask
        identical = _same(serial, parallel) and _same(serial, started)
        print(
            f"serial:              {best_serial:7.2f} s  {len(files) / best_serial:7.1f} files/s  "
            f"{total_mb / best_serial:7.0f} MB/s  (peak RSS of this process {_rss_mb():.0f} MB)"
        )
        print(
            f"processes x{args.workers}:        {best_dask:7.2f} s  {len(files) / best_dask:7.1f} files/s  "
            f"{total_mb / best_dask:7.0f} MB/s"
        )
        print(f"scheduler='processes' (cluster start-up included): {with_startup:.2f} s")
        cpu_s, cpu_w = min(serial_cpu), min(worker_cpu)
        print(
            f"CPU seconds: serial {cpu_s:.2f} ({cpu_s / best_serial:.2f} of a core while it ran), "
            f"workers together {cpu_w:.2f} ({cpu_w / best_dask:.2f} cores while they ran)"
        )
        print(
            f"projection for {args.workers} idle cores (CPU-bound: serial CPU / per-worker CPU): "
            f"{cpu_s / (cpu_w / args.workers):.2f}x"
        )
        print(f"worker malloc settings: {'Dask default' if args.dask_malloc else malloc}")
        print(
            f"speed-up serial / processes x{args.workers}: {speedup:.2f} (goal >= {GOAL_SPEEDUP}; "
            f"{os.cpu_count()} CPUs on this machine, shared)"
        )
        worst = max(peaks.values())
        for addr in sorted(peaks):
            print(
                f"worker {addr}: peak RSS {peaks[addr]:.0f} MB; idle after warm-up {base[addr]:.0f} MB; "
                f"the tasks added {peaks[addr] - base[addr]:.0f} MB"
            )
        print(f"peak memory per worker: {worst:.0f} MB (goal <= {GOAL_WORKER_MB:.0f} MB)")
        print(
            "memory unique to each worker after the runs (USS, without shared library pages): "
            + ", ".join(f"{uss[a]:.0f} MB" for a in sorted(uss))
        )
        print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"statistics bit-identical (serial, Client, 'processes'): {identical}")
        print("### Goals")
        print(
            f"speed-up >= {GOAL_SPEEDUP}: {'met' if speedup >= GOAL_SPEEDUP else 'not met'} ({speedup:.2f})"
        )
        print(
            f"worker memory <= {GOAL_WORKER_MB:.0f} MB: {'met' if worst <= GOAL_WORKER_MB else 'not met'} "
            f"({worst:.0f} MB)"
        )
        if args.normalize:
            t = time.perf_counter()
            report = normalize_corpus(
                files, args.normalize, serial, scheduler="processes", n_workers=args.workers
            )
            took = time.perf_counter() - t
            print(
                f"normalize_corpus to Zarr, processes x{args.workers}: {took:.2f} s, "
                f"{len(report.written)} stores, {total_mb / took:.0f} MB/s of input"
            )
        return 0 if identical else 1
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
