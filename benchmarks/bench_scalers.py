"""The scalers' fit on a recording against scikit-learn's ``partial_fit`` over the same chunks.

One process, one EDF file, the cases interleaved over the repeats and the median reported;
every case reads the file chunk by chunk through the same ``Recording`` (so the file reading
cost is shared) and the ratio to scikit-learn is printed:

- ``sklearn StandardScaler.partial_fit``: each chunk's float64 mantissas to
  ``sklearn.preprocessing.StandardScaler.partial_fit``.
- ``unitnorm StandardScaler.fit``: ``unitnorm.preprocessing.StandardScaler().fit(recording)``
  (Chan's merge in float64, units kept).
- ``unitnorm RobustScaler.fit`` / ``QuantileScaler.fit``: exact quantiles by the bounded-memory
  multi-pass selection (several reads of the file). scikit-learn's ``RobustScaler`` has no
  ``partial_fit``; its ``fit`` on the whole array in memory is timed as ``sklearn RobustScaler.fit
  (in memory)`` for scale, and the ratio is to it.

Run ``python benchmarks/bench_scalers.py [--quick]``; ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_streaming import make_edf  # noqa: E402

BENCHMARK = "scalers"
# (channels, seconds at 256 Hz, repeats, chunk seconds)
QUICK = (4, 60, 2, 10)
FULL = (64, 600, 5, 10)


def _chunks(rec, step):
    with rec._reader() as read:
        for start in range(0, rec.n_samples, step):
            yield read(start, min(rec.n_samples, start + step))


def run(quick: bool) -> list[dict]:
    """Time every case; return one dict per case (median seconds, ratio to scikit-learn, agreement)."""
    from sklearn.preprocessing import RobustScaler as SkRobust
    from sklearn.preprocessing import StandardScaler as SkStandard

    from unitnorm import io
    from unitnorm import preprocessing as pp

    n_channels, seconds, repeats, chunk_seconds = QUICK if quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.edf"
        make_edf(path, n_channels, seconds)
        rec = io.read_edf(path)
        step = int(chunk_seconds * float(rec.sampling_rate.mantissa))

        def sk_standard():
            s = SkStandard()
            for block in _chunks(rec, step):
                s.partial_fit(block)
            return s.mean_, s.scale_

        def sk_robust():
            s = SkRobust().fit(rec.mantissa())
            return s.center_, s.scale_

        def ours(make):
            def fit():
                s = make().fit(rec, chunk_samples=step)
                center, scale = s._center_scale(s._layout)
                return center, scale

            return fit

        cases = {
            "sklearn StandardScaler.partial_fit": sk_standard,
            "unitnorm StandardScaler.fit": ours(pp.StandardScaler),
            "sklearn RobustScaler.fit (in memory)": sk_robust,
            "unitnorm RobustScaler.fit": ours(pp.RobustScaler),
            "unitnorm QuantileScaler.fit": ours(pp.QuantileScaler),
        }
        baseline = {
            "unitnorm StandardScaler.fit": "sklearn StandardScaler.partial_fit",
            "unitnorm RobustScaler.fit": "sklearn RobustScaler.fit (in memory)",
            "unitnorm QuantileScaler.fit": "sklearn RobustScaler.fit (in memory)",
        }
        results = {name: fn() for name, fn in cases.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    rows = []
    for name in cases:
        med = statistics.median(times[name])
        base = baseline.get(name, name)
        agree = None
        if name in ("unitnorm StandardScaler.fit", "unitnorm RobustScaler.fit"):
            (c, s), (rc, rs) = results[name], results[base]
            agree = float(max(np.max(np.abs(c - rc) / rs), np.max(np.abs(s / rs - 1))))
        rows.append(
            {
                "benchmark": BENCHMARK,
                "case": name,
                "channels": n_channels,
                "samples": seconds * 256,
                "repeats": repeats,
                "median_s": med,
                "baseline": base,
                "ratio_to_baseline": med / statistics.median(times[base]),
                "max_rel_diff": agree,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small file and 2 repeats")
    args = parser.parse_args()
    rows = run(args.quick)
    first = rows[0]
    print(
        f"EDF of {first['channels']} channels x {first['samples']} samples, "
        f"median of {first['repeats']} interleaved repeats"
    )
    print(f"{'case':40s} {'seconds':>9s} {'x baseline':>11s} {'agrees to':>10s}  baseline")
    for r in rows:
        agree = "" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        ratio = r["ratio_to_baseline"]
        print(f"{r['case']:40s} {r['median_s']:9.4f} {ratio:11.2f} {agree:>10s}  {r['baseline']}")


if __name__ == "__main__":
    main()
