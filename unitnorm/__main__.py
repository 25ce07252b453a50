"""The ``unitnorm`` command line: ``python -m unitnorm demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def demo() -> int:
    """Run the README's demo: the brainstate example, then the same data in V and mV."""
    import brainunit as u
    import jax.numpy as jnp
    import numpy as np

    import unitnorm as un

    print("1. The brainstate BatchNorm1d example, unchanged")
    layer = un.BatchNorm1d(in_size=(100, 64))
    y = layer(jnp.ones((8, 100, 64)))
    print(f"   input (8, 100, 64) -> output {y.shape}, training={layer.training}")

    print("2. Membrane potentials: the same recording written in V and in mV")
    rng = np.random.default_rng(0)
    mv = jnp.asarray(-65.0 + 4.0 * rng.standard_normal((16, 200, 3)), jnp.float32) * u.mV
    volts = mv.in_unit(u.volt)
    fixed = un.BatchNorm1d((200, 3), in_unit=u.mV)
    z_mv, z_v = fixed(mv), fixed(volts)
    print(f"   running mean: {fixed.running_mean.value}")
    print(f"   running var:  {fixed.running_var.value}")
    print(
        f"   output type: {type(z_mv).__name__} (dimensionless), max |z(mV) - z(V)| = "
        f"{float(jnp.max(jnp.abs(z_mv - z_v))):.2e}"
    )
    a, b = un.BatchNorm1d((200, 3)), un.BatchNorm1d((200, 3))
    naive = float(jnp.max(jnp.abs(a(mv) - b(volts))))
    print(f"   two layers that each adopt their input's unit, float epsilon 1e-5: differ by {naive:.2e}")
    print("      (epsilon is read in the input's unit squared: 1e-5 mV^2 vs 1e-5 V^2)")

    print("3. Affine output in millivolts")
    out = un.BatchNorm1d(
        (200, 3), scale_initializer=un.init.Constant(1 * u.mV), bias_initializer=un.init.Constant(-65 * u.mV)
    )(mv)
    print(f"   output unit: {out.unit}, mean {float(out.mean().mantissa):.3f} mV")

    print("4. A unit of the wrong dimension is refused, and nothing changes")
    before = fixed.running_mean.value
    try:
        fixed(jnp.ones((16, 200, 3)) * u.nA)
    except u.UnitMismatchError as err:
        print(f"   {type(err).__name__}: {err}")
    print(f"   running mean unchanged: {bool(jnp.all(fixed.running_mean.value.mantissa == before.mantissa))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unitnorm`` command."""
    parser = argparse.ArgumentParser(prog="unitnorm", description="Units-aware normalization for JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a short demonstration")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
