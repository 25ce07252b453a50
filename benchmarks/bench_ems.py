"""Exponential moving standardization: unitnorm under jax.jit against Braindecode's lfilter formula.

One process, the same float32 recording in each library's own layout (unitnorm takes
``(time, channels)``, Braindecode ``(channels, time)``; both arrays are made before timing):

- ``braindecode lfilter formula (scipy)``: Braindecode's current ``exponential_moving_standardize``
  (braindecode/preprocessing/preprocess.py, commit eb3ddee6b72b, lines 488-498), re-written here
  from its formula: three ``scipy.signal.lfilter`` calls (SciPy promotes to float64, since the
  filter coefficients are float64) and NumPy arithmetic. braindecode itself needs torch.
- ``unitnorm jit (loop solver)``: ``jax.jit(exponential_moving_standardize)`` on the default CPU
  solver (blocks of :data:`unitnorm.preprocessing._ems.BLOCK` samples in a ``fori_loop``).
- ``unitnorm jit (parallel solver)``: the loop-free solver used on GPUs, timed here on the CPU.
- ``jax associative_scan (whole EMS)``: the same formula with both recurrences solved by
  ``lax.associative_scan`` over affine maps ``(a, b)`` (the textbook parallel form), for comparison.

The cases are interleaved over the repeats and the median is reported, with each case's time
divided by the lfilter formula's (the goal is <= 1.0) and the largest difference of its output
from the lfilter formula's. Run ``python benchmarks/bench_ems.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCHMARK = "ems"
FULL = (1_000_000, 64, 3)  # samples, channels, repeats
QUICK = (4_000, 8, 3)
FACTOR_NEW, EPS = 1e-3, 1e-4


def braindecode_lfilter(data: np.ndarray, factor_new: float = FACTOR_NEW, eps: float = EPS) -> np.ndarray:
    """Braindecode's lfilter formula on ``(channels, time)``."""
    from scipy.signal import lfilter

    a = [1.0, -(1.0 - factor_new)]
    weight = lfilter([1.0], a, np.ones(data.shape[1]))
    mean = lfilter([1.0], a, data, axis=1) / weight
    dev = data - mean
    var = lfilter([1.0], a, dev * dev, axis=1) / weight
    return dev / np.maximum(eps, np.sqrt(var))


def run(quick: bool) -> list[dict]:
    """Time every case; return one dict per case."""
    import jax
    import jax.numpy as jnp

    from unitnorm.preprocessing import _ems, exponential_moving_standardize

    n, c, repeats = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    drift = np.linspace(0.0, 3.0, n, dtype=np.float32)[:, None]
    x_tc = (drift + (1 + drift) * rng.standard_normal((n, c), dtype=np.float32)).astype(np.float32)
    x_ct = np.ascontiguousarray(x_tc.T)
    xj = jax.device_put(jnp.asarray(x_tc))

    def solver(method: str):
        def f(v):
            flat = v.astype(jnp.float32)
            out, _ = _ems._ems_step(
                flat, _ems._fresh_state(flat[0], flat.dtype), FACTOR_NEW, EPS, method=method
            )
            return out

        return jax.jit(f)

    public = jax.jit(exponential_moving_standardize)
    parallel = solver("parallel")

    def affine_scan(b):
        """``y_t = (1 - a) y_{t-1} + b_t`` by ``lax.associative_scan`` over affine maps."""
        r = jnp.full_like(b, 1.0 - FACTOR_NEW)
        return jax.lax.associative_scan(lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1]), (r, b))[1]

    def assoc_ems(v):
        """The whole EMS with both recurrences as associative scans (shifted, like unitnorm)."""
        xs = v - v[0]
        k = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)[:, None] * jnp.log1p(-jnp.float32(FACTOR_NEW))
        weight = -jnp.expm1(k) / FACTOR_NEW
        dev = xs - affine_scan(xs) / weight
        var = affine_scan(dev * dev) / weight
        return dev / jnp.sqrt(jnp.maximum(var, EPS * EPS))

    assoc = jax.jit(assoc_ems)
    cases = {
        "braindecode lfilter formula (scipy)": lambda: braindecode_lfilter(x_ct).T,
        "unitnorm jit (loop solver)": lambda: public(xj, FACTOR_NEW, None, EPS).block_until_ready(),
        "unitnorm jit (parallel solver)": lambda: parallel(xj).block_until_ready(),
        "jax associative_scan (whole EMS)": lambda: assoc(xj).block_until_ready(),
    }
    outputs = {name: np.asarray(fn()) for name, fn in cases.items()}  # warm-up and compilation
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ref = outputs["braindecode lfilter formula (scipy)"]
    base = statistics.median(times["braindecode lfilter formula (scipy)"])
    rows = []
    for name in cases:
        med = statistics.median(times[name])
        diff = float(np.max(np.abs(outputs[name] - ref)))
        rows.append(
            {
                "benchmark": BENCHMARK,
                "case": name,
                "samples": n,
                "channels": c,
                "repeats": repeats,
                "median_s": med,
                "ratio_to_lfilter": med / base,
                "max_abs_diff": diff,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny shape {QUICK[:2]} (a smoke test)")
    args = parser.parse_args()
    import jax

    rows = run(args.quick)
    n, c = rows[0]["samples"], rows[0]["channels"]
    print(f"# EMS, {n} samples x {c} channels float32, factor_new={FACTOR_NEW}")
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU cores")
    print(f"command: python benchmarks/bench_ems.py {' '.join(sys.argv[1:])}".rstrip() + "\n")
    print("| case | median s | ratio to lfilter | max |difference| |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['median_s']:.3f} | {r['ratio_to_lfilter']:.2f} | {r['max_abs_diff']:.2e} |"
        )
    ours = next(r for r in rows if r["case"] == "unitnorm jit (loop solver)")
    met = "met" if ours["ratio_to_lfilter"] <= 1.0 else "NOT met"
    print(f"\ngoal: unitnorm / lfilter <= 1.0; measured ratio {ours['ratio_to_lfilter']:.2f} ({met})")


if __name__ == "__main__":
    main()
