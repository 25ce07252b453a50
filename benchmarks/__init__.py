"""Benchmarks of unitnorm against flax.nnx, brainstate, equinox and PyTorch.

Run them with ``python -m benchmarks.run`` (``--quick`` for a smoke test on a tiny
shape, ``--json OUT`` to keep the numbers); see ``docs/performance.md``.
"""
