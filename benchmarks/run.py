"""Time unitnorm against flax.nnx, brainstate, equinox and PyTorch, in one process.

    python -m benchmarks.run [--quick] [--json OUT] [--shapes small,medium] [--groups bn_train,bn_grad]

Every case of one group and shape is built first, warmed up (the first call
compiles), then timed in interleaved rounds (A B C ... then ... C B A, so drift in
the machine's load falls on every case alike) with ``jax.block_until_ready`` on
the outputs. The table shows the median and the fastest call, the median's ratio
to the fastest *peer* (flax.nnx, brainstate, equinox, torch; the jnp references
are shown but are not peers) and the bytes XLA allocates for one call.

Memory. ``tracemalloc`` cannot see XLA's buffers, and ``ru_maxrss`` is one
high-water mark for the whole process, so the per-case figure is XLA's own
accounting of the compiled call (``Compiled.memory_analysis()``): output plus
temporary buffers, less those aliased to donated inputs — the memory one call
adds on top of its inputs, on CPU and GPU alike. The footer adds the process's
peak resident set (``ru_maxrss``) and, on an accelerator, the device's peak
bytes in use. Neither is available for torch or for the eager cases ("-").

Peers that are not installed are skipped, as are unitnorm layers that do not
exist yet. Nothing assumes a CPU: arrays live on JAX's default device; torch
runs on CUDA when it has it, else on the CPU (labelled).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = {"small": (32, 100, 64), "medium": (256, 1000, 64), "large": (64, 4096, 256)}
QUICK_SHAPES = {"tiny": (4, 16, 8)}
GROUPS = {
    "bn_train": "BatchNorm1d, training forward (jit)",
    "bn_eval": "BatchNorm1d, evaluation forward (jit)",
    "bn_grad": "BatchNorm1d, training forward + backward (jit, vjp with a cotangent)",
    "bn_donated": "BatchNorm1d, training forward with the input donated (jit)",
    "bn_eager": "BatchNorm1d, training forward, eager (no user jit): per-call latency",
    "layer_norm": "LayerNorm over channels, forward (jit)",
    "rms_norm": "RMSNorm over channels, forward (jit)",
    "group_norm": "GroupNorm, 8 groups, forward (jit)",
    "instance_norm": "InstanceNorm over time, forward (jit); peers without one: GroupNorm, C groups",
    "weight_std": "weight_standardization of a (k, in, out) weight shaped like the input (jit)",
    "bn_renorm": "BatchRenorm1d, training forward (jit); flax.nnx BatchNorm as the peer (no renorm there)",
    "spectral_norm": "SpectralNorm of a (C, C) dense kernel, 1 power step, then x @ W + b (jit)",
    "weight_norm": "WeightNorm of a (C, C) dense kernel, then x @ W + b (jit)",
    "reductions": "one sum over the batch axes per channel (jit): what XLA charges for a step before it",
}
PEERS = ("flax", "brainstate", "equinox", "torch")
JAX_PEERS = ("flax", "brainstate", "equinox")
# forward groups whose goal is "<= 1.0x the fastest JAX peer" (issue 18), with the layer's name
FORWARD_GOALS = {
    "layer_norm": "LayerNorm",
    "rms_norm": "RMSNorm",
    "group_norm": "GroupNorm",
    "instance_norm": "InstanceNorm",
    "weight_std": "weight_standardization",
}
QUANTITY_VERDICT = ("Quantity overhead, functional batch_norm (jit)", "the array call")
PEER_NAMES = {"flax": "flax.nnx", "brainstate": "brainstate", "equinox": "equinox", "torch": "torch"}
EPS = 1e-5
FLOOR_READ = "floor part: read x once (a sum)"
FLOOR_IN_PLACE = "floor part: read x, write it in place (x * 2, donated)"
FLOOR = "in-place floor: read x twice, write once (the two parts)"
# BatchNorm's training forward with the fewest steps before a reduction that still centres the data:
# one plain sum and one sum of squared deviations from the first row (less accurate than unitnorm's
# two centred sums: its mean carries the plain sum's rounding)
BN_BOUND = "jnp bound for centred statistics: a plain sum, one centred sum of squares"
SUM_PLAIN, SUM_SQUARES = "sum(x)", "sum(x * x)"
SUM_SHIFTED, SUM_SHIFTED_SQUARES = "sum(x - x[0, 0])", "sum((x - x[0, 0]) ** 2)"
GRAD_DONATED = "unitnorm layer (array), cotangent donated"
NUM_GROUPS = 8
# seconds of timed rounds per group, and the most rounds, by shape
BUDGET = {"tiny": (0.2, 3), "small": (3.0, 30), "medium": (6.0, 15), "large": (12.0, 7)}

warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
# torch's OpenMP threads spin after each op by default, stealing the cores from the JAX case timed
# next in an interleaved round; they must sleep instead (read when torch is first imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ----------------------------------------------------------------------------
# cases


@dataclass
class Case:
    """One implementation of one benchmark: ``call()`` does one timed call."""

    name: str
    family: str  # unitnorm, reference, flax, brainstate, equinox, torch
    call: Callable[[], Any]
    prepare: Callable[[], None] | None = None  # untimed, before each call (fresh donated input)
    sync: Callable[[Any], Any] = jax.block_until_ready
    lower: tuple[Any, tuple[Any, ...]] | None = None  # (jitted, args) for XLA's memory/cost analysis
    note: str = ""
    samples: list[float] = field(default_factory=list)
    calls: int = 1  # calls averaged into one sample


@dataclass
class Data:
    shape: tuple[int, int, int]
    x_np: np.ndarray
    g_np: np.ndarray
    x: Any
    g: Any
    xq: Any
    x_cf: Any  # channel-first (batch, channels, length) copy for equinox

    @property
    def channels(self) -> int:
        return self.shape[-1]


def make_data(shape: tuple[int, int, int]) -> Data:
    rng = np.random.default_rng(0)
    # data far from zero, as recordings are: -65 mV +- 2 mV
    x_np = (rng.standard_normal(shape, dtype=np.float32) * 2 - 65).astype(np.float32)
    g_np = rng.standard_normal(shape, dtype=np.float32)
    try:
        import brainunit as u

        xq = None
        x = jnp.asarray(x_np)
        xq = u.Quantity(x, unit=u.mV)
    except ImportError:  # pragma: no cover - brainunit is a core dependency
        x, xq = jnp.asarray(x_np), None
    x_cf = jnp.asarray(np.ascontiguousarray(np.transpose(x_np, (0, 2, 1))))
    data = Data(shape, x_np, g_np, x, jnp.asarray(g_np), xq, x_cf)
    jax.block_until_ready((data.x, data.g, data.x_cf))
    return data


def _jit_case(name: str, family: str, jitted: Any, *args: Any, note: str = "") -> Case:
    return Case(name, family, lambda: jitted(*args), lower=(jitted, args), note=note)


def _donated_case(name: str, family: str, jitted: Any, make_args: Callable[[], tuple[Any, ...]]) -> Case:
    """A call whose input is donated: a fresh copy is made (untimed) before each call."""
    box: dict[str, tuple[Any, ...]] = {}

    def prepare() -> None:
        box["args"] = jax.block_until_ready(make_args())

    def call() -> Any:
        return jitted(*box.pop("args"))

    return Case(name, family, call, prepare=prepare, lower=(jitted, make_args()))


# ----------------------------------------------------------------------------
# unitnorm


def unitnorm_cases(group: str, d: Data) -> list[Case]:
    import brainunit as u

    import unitnorm as un

    L, C = d.shape[1:]
    x, xq = d.x, d.xq
    mV, mV2 = u.mV, u.mV**2
    cases: list[Case] = []
    step = jax.jit(lambda layer, x: (layer(x), layer))

    if group in ("bn_train", "bn_eval"):
        train = group == "bn_train"
        la, lq = un.BatchNorm1d((L, C)), un.BatchNorm1d((L, C), in_unit=mV)
        la.train(train), lq.train(train)
        cases += [
            _jit_case("unitnorm layer (array)", "unitnorm", step, la, x),
            _jit_case("unitnorm layer (Quantity)", "unitnorm", step, lq, xq),
        ]
        fn = jax.jit(
            lambda x, rm, rv, s, b: un.functional.batch_norm(x, rm, rv, s, b, training=train, epsilon=EPS)
        )
        z, o = jnp.zeros(C), jnp.ones(C)
        zq, oq = u.Quantity(z, unit=mV), u.Quantity(o, unit=mV2)
        cases += [
            _jit_case("unitnorm functional (array)", "unitnorm", fn, x, z, o, o, z),
            _jit_case("unitnorm functional (Quantity)", "unitnorm", fn, xq, zq, oq, o, z),
        ]
    elif group == "bn_grad":

        def grad_step(layer: Any, x: Any, g: Any) -> Any:
            def forward(layer: Any, x: Any) -> Any:
                y = layer(x)
                return y, layer

            y, pullback, new_layer = jax.vjp(forward, layer, x, has_aux=True)
            return y, new_layer, pullback(g)

        def grads_first(step: Callable[..., Any]) -> Callable[..., Any]:
            # a donated cotangent's buffer goes to the first output that fits: make that the gradient
            return lambda *args: step(*args)[::-1]

        jitted = jax.jit(grad_step)
        donated = jax.jit(grads_first(grad_step), donate_argnums=2)
        la, lq = un.BatchNorm1d((L, C)), un.BatchNorm1d((L, C), in_unit=mV)
        cases += [
            _jit_case("unitnorm layer (array)", "unitnorm", jitted, la, x, d.g),
            _jit_case("unitnorm layer (Quantity)", "unitnorm", jitted, lq, xq, d.g),
            _donated_case(GRAD_DONATED, "unitnorm", donated, lambda: (la, x, jnp.copy(d.g))),
        ]
    elif group == "bn_donated":
        la = un.BatchNorm1d((L, C))
        donated = jax.jit(lambda layer, x: (layer(x), layer), donate_argnums=1)
        cases += [
            _donated_case("unitnorm layer, x donated", "unitnorm", donated, lambda: (la, jnp.copy(x))),
            _jit_case("unitnorm layer, not donated", "unitnorm", step, la, x),
        ]
    elif group == "bn_eager":
        la, lq = un.BatchNorm1d((L, C)), un.BatchNorm1d((L, C), in_unit=mV)
        cases += [
            Case("unitnorm layer (array)", "unitnorm", lambda: la(x)),
            Case("unitnorm layer (Quantity)", "unitnorm", lambda: lq(xq)),
        ]
    elif group == "bn_renorm":
        if not hasattr(un, "BatchRenorm1d"):
            return []
        ra, rq = un.BatchRenorm1d((L, C)), un.BatchRenorm1d((L, C), in_unit=mV)
        cases += [
            _jit_case("unitnorm BatchRenorm1d (array)", "unitnorm", step, ra, x),
            _jit_case("unitnorm BatchRenorm1d (Quantity)", "unitnorm", step, rq, xq),
            _jit_case(
                "unitnorm BatchNorm1d (array), for scale", "reference", step, un.BatchNorm1d((L, C)), x
            ),
        ]
    elif group in ("spectral_norm", "weight_norm"):
        cls = getattr(un, "SpectralNorm" if group == "spectral_norm" else "WeightNorm", None)
        if cls is None:
            return []
        w = jnp.asarray(np.random.default_rng(1).standard_normal((C, C), dtype=np.float32) / math.sqrt(C))
        b = jnp.zeros(C)
        dense = jax.jit(lambda wrapper, b, x: (x @ wrapper() + b, wrapper))
        cases.append(_jit_case(f"unitnorm {cls.__name__} (array)", "unitnorm", dense, cls(w), b, x))
    elif group == "weight_std":
        fn = jax.jit(un.functional.weight_standardization)
        cases += [
            _jit_case("unitnorm weight_standardization (array)", "unitnorm", fn, x),
            _jit_case("unitnorm weight_standardization (Quantity)", "unitnorm", fn, xq),
        ]
    elif group in ("layer_norm", "rms_norm", "group_norm", "instance_norm"):
        cls_name = {
            "layer_norm": "LayerNorm",
            "rms_norm": "RMSNorm",
            "group_norm": "GroupNorm",
            "instance_norm": "InstanceNorm",
        }[group]
        cls = getattr(un, cls_name, None)
        if cls is None:
            return []
        kw = {"num_groups": NUM_GROUPS} if group == "group_norm" else {}
        fwd = jax.jit(lambda layer, x: layer(x))
        cases += [
            _jit_case(f"unitnorm {cls_name} (array)", "unitnorm", fwd, cls((L, C), **kw), x),
            _jit_case(f"unitnorm {cls_name} (Quantity)", "unitnorm", fwd, cls((L, C), in_unit=mV, **kw), xq),
        ]
        if group in ("group_norm", "instance_norm"):
            # equinox's layout (a reference row, not the goal's): groups of channels first are contiguous
            first = {"feature_axis": 0} if group == "group_norm" else {"feature_axes": 0}
            cases.append(
                _jit_case(
                    f"unitnorm {cls_name} (array), channels first",
                    "reference",
                    fwd,
                    cls((C, L), **first, **kw),
                    d.x_cf,
                    note="input (batch, channels, length), as equinox's",
                )
            )
    return cases


# ----------------------------------------------------------------------------
# plain jnp references (not peers: the same math written by hand)


def _bn_output(x: Any, mean: Any, var: Any, rm: Any, rv: Any, s: Any, b: Any) -> Any:
    """The references' shared end: the normalized output and the updated running statistics."""
    y = (x - mean) * (jax.lax.rsqrt(var + EPS) * s) + b
    return y, 0.99 * rm + 0.01 * mean, 0.99 * rv + 0.01 * var


def _bn_two_pass(x: Any, rm: Any, rv: Any, s: Any, b: Any) -> Any:
    mean = jnp.mean(x, axis=(0, 1))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1))
    return _bn_output(x, mean, var, rm, rv, s, b)


def _bn_one_pass(x: Any, rm: Any, rv: Any, s: Any, b: Any) -> Any:
    n = x.shape[0] * x.shape[1]
    shift = jax.lax.stop_gradient(x[0, 0])
    dev = x - shift
    s1, s2 = jnp.sum(dev, axis=(0, 1)), jnp.sum(dev * dev, axis=(0, 1))
    mean = shift + s1 / n
    var = jnp.maximum(s2 - s1 * s1 / n, 0) / n
    return _bn_output(x, mean, var, rm, rv, s, b)


def _bn_bound(x: Any, rm: Any, rv: Any, s: Any, b: Any) -> Any:
    """BatchNorm's training forward with the fewest steps before a reduction (``BN_BOUND``)."""
    n = x.shape[0] * x.shape[1]
    shift = jax.lax.stop_gradient(x[0, 0])
    mean = jnp.sum(x, axis=(0, 1)) / n
    var = jnp.maximum(jnp.sum(jnp.square(x - shift), axis=(0, 1)) / n - jnp.square(mean - shift), 0)
    return _bn_output(x, mean, var, rm, rv, s, b)


def _reduction_cases(x: Any) -> list[Case]:
    """One sum over the batch axes of ``x``, and of one elementwise step (or ``x * x``) on it.

    The shift is the first row, sliced inside the program as in unitnorm's and the references'
    one-pass statistics.
    """

    def first(x: Any) -> Any:
        return jax.lax.stop_gradient(x[0, 0])

    sums = {
        SUM_PLAIN: lambda x: jnp.sum(x, axis=(0, 1)),
        SUM_SQUARES: lambda x: jnp.sum(x * x, axis=(0, 1)),
        "sum(x + 1)": lambda x: jnp.sum(x + 1.0, axis=(0, 1)),
        SUM_SHIFTED: lambda x: jnp.sum(x - first(x), axis=(0, 1)),
        SUM_SHIFTED_SQUARES: lambda x: jnp.sum(jnp.square(x - first(x)), axis=(0, 1)),
    }
    return [_jit_case(name, "reference", jax.jit(fn), x) for name, fn in sums.items()]


def reference_cases(group: str, d: Data) -> list[Case]:
    C = d.channels
    z, o = jnp.zeros(C), jnp.ones(C)
    x = d.x
    if group == "bn_train":
        return [
            _jit_case("jnp reference, two-pass", "reference", jax.jit(_bn_two_pass), x, z, o, o, z),
            _jit_case("jnp reference, one-pass shifted", "reference", jax.jit(_bn_one_pass), x, z, o, o, z),
            _jit_case(BN_BOUND, "reference", jax.jit(_bn_bound), x, z, o, o, z),
        ]
    if group == "reductions":
        return _reduction_cases(x)
    if group == "bn_eval":
        fn = jax.jit(lambda x, rm, rv, s, b: (x - rm) * (jax.lax.rsqrt(rv + EPS) * s) + b)
        return [_jit_case("jnp reference", "reference", fn, x, z, o, o, z)]
    if group == "bn_grad":

        @jax.jit
        def grad_step(x: Any, s: Any, b: Any, g: Any) -> Any:
            def forward(x: Any, s: Any, b: Any) -> Any:
                y, rm, rv = _bn_two_pass(x, z, o, s, b)
                return y, (rm, rv)

            y, pullback, stats = jax.vjp(forward, x, s, b, has_aux=True)
            return y, stats, pullback(g)

        return [_jit_case("jnp reference, two-pass, autodiff", "reference", grad_step, x, o, z, d.g)]
    if group == "bn_donated":
        # the in-place floor (read x twice, write it once in place) is timed as its two parts: XLA on
        # CPU fuses a sum and an elementwise pass over the same x into one kernel that cannot write
        # in place, so one jitted "floor" function would not be the floor
        read = jax.jit(lambda x: jnp.sum(x, axis=(0, 1)))
        in_place = jax.jit(lambda x: x * 2.0, donate_argnums=0)
        fresh = jax.jit(lambda x: x * 2.0)
        return [
            _jit_case(FLOOR_READ, "reference", read, x),
            _donated_case(FLOOR_IN_PLACE, "reference", in_place, lambda: (jnp.copy(x),)),
            _jit_case("read x, write a fresh array (x * 2)", "reference", fresh, x),
        ]
    if group == "layer_norm":

        def ln(x: Any, s: Any, b: Any) -> Any:
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            return (x - mean) * jax.lax.rsqrt(var + 1e-6) * s + b

        return [_jit_case("jnp reference", "reference", jax.jit(ln), x, o, z)]
    if group == "rms_norm":

        def rms(x: Any, s: Any) -> Any:
            return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6) * s

        return [_jit_case("jnp reference", "reference", jax.jit(rms), x, o)]
    if group == "group_norm":

        def gn(x: Any, s: Any, b: Any) -> Any:
            B, L, C = x.shape
            xg = x.reshape(B, L, NUM_GROUPS, C // NUM_GROUPS)
            mean = jnp.mean(xg, axis=(1, 3), keepdims=True)
            var = jnp.mean(jnp.square(xg - mean), axis=(1, 3), keepdims=True)
            return ((xg - mean) * jax.lax.rsqrt(var + 1e-6)).reshape(B, L, C) * s + b

        return [_jit_case("jnp reference", "reference", jax.jit(gn), x, o, z)]
    if group == "instance_norm":

        def inorm(x: Any, s: Any, b: Any) -> Any:
            mean = jnp.mean(x, axis=1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=1, keepdims=True)
            return (x - mean) * jax.lax.rsqrt(var + 1e-6) * s + b

        return [_jit_case("jnp reference", "reference", jax.jit(inorm), x, o, z)]
    if group == "weight_std":

        def ws(w: Any) -> Any:
            mean = jnp.mean(w, axis=(0, 1), keepdims=True)
            var = jnp.mean(jnp.square(w - mean), axis=(0, 1), keepdims=True)
            return (w - mean) * jax.lax.rsqrt(jnp.maximum(var * (w.shape[0] * w.shape[1]), 1e-4))

        return [_jit_case("jnp reference", "reference", jax.jit(ws), x)]
    return []


# ----------------------------------------------------------------------------
# flax.nnx


def flax_cases(group: str, d: Data) -> list[Case]:
    from flax import nnx

    C = d.channels
    x = d.x
    rngs = nnx.Rngs(0)
    cases: list[Case] = []

    def split_merge(module: Any, donate: bool = False) -> tuple[Any, Any]:
        graphdef, state = nnx.split(module)

        def step(state: Any, x: Any) -> Any:
            m = nnx.merge(graphdef, state)
            return m(x), nnx.state(m)

        return jax.jit(step, donate_argnums=1 if donate else ()), state

    def nnx_jit(module: Any) -> Case:
        fn = nnx.jit(lambda m, x: m(x))
        return Case("flax.nnx, nnx.jit", "flax", lambda: fn(module, x))

    if group in ("bn_train", "bn_eval"):
        train = group == "bn_train"
        bn = nnx.BatchNorm(C, use_running_average=not train, epsilon=EPS, rngs=rngs)
        step, state = split_merge(bn)
        cases += [
            _jit_case("flax.nnx, split/merge + jax.jit", "flax", step, state, x),
            nnx_jit(nnx.BatchNorm(C, use_running_average=not train, epsilon=EPS, rngs=rngs)),
        ]
    elif group == "bn_grad":
        bn = nnx.BatchNorm(C, epsilon=EPS, rngs=rngs)
        graphdef, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)

        def grad_step(params: Any, stats: Any, x: Any, g: Any) -> Any:
            def forward(params: Any, stats: Any, x: Any) -> Any:
                m = nnx.merge(graphdef, params, stats)
                return m(x), nnx.state(m, nnx.BatchStat)

            y, pullback, new_stats = jax.vjp(forward, params, stats, x, has_aux=True)
            return y, new_stats, pullback(g)

        donated = jax.jit(lambda *args: grad_step(*args)[::-1], donate_argnums=3)
        cases += [
            _jit_case("flax.nnx, split/merge + jax.jit", "flax", jax.jit(grad_step), params, stats, x, d.g),
            _donated_case(
                "flax.nnx, cotangent donated", "flax", donated, lambda: (params, stats, x, jnp.copy(d.g))
            ),
        ]
    elif group == "bn_donated":
        step, state = split_merge(nnx.BatchNorm(C, epsilon=EPS, rngs=rngs), donate=True)
        cases.append(_donated_case("flax.nnx, x donated", "flax", step, lambda: (state, jnp.copy(x))))
    elif group == "bn_eager":
        bn = nnx.BatchNorm(C, epsilon=EPS, rngs=rngs)
        cases.append(Case("flax.nnx, eager", "flax", lambda: bn(x)))
    elif group == "bn_renorm":
        step, state = split_merge(nnx.BatchNorm(C, epsilon=EPS, rngs=rngs))
        cases.append(_jit_case("flax.nnx BatchNorm, split/merge + jax.jit", "flax", step, state, x))
    elif group in ("spectral_norm", "weight_norm"):
        linear = nnx.Linear(C, C, rngs=rngs)
        if group == "spectral_norm":
            wrapped = nnx.SpectralNorm(linear, n_steps=1, rngs=rngs)
        else:
            wrapped = nnx.WeightNorm(linear, rngs=rngs)
        step, state = split_merge(wrapped)
        cases.append(_jit_case("flax.nnx, split/merge + jax.jit", "flax", step, state, x))
    elif group in ("layer_norm", "rms_norm", "group_norm"):
        make = {
            "layer_norm": lambda: nnx.LayerNorm(C, rngs=rngs),
            "rms_norm": lambda: nnx.RMSNorm(C, rngs=rngs),
            "group_norm": lambda: nnx.GroupNorm(C, num_groups=NUM_GROUPS, rngs=rngs),
        }[group]
        step, state = split_merge(make())
        cases += [_jit_case("flax.nnx, split/merge + jax.jit", "flax", step, state, x), nnx_jit(make())]
    elif group == "instance_norm" and hasattr(nnx, "InstanceNorm"):
        make = lambda: nnx.InstanceNorm(C, rngs=rngs)  # noqa: E731
        step, state = split_merge(make())
        cases += [_jit_case("flax.nnx, split/merge + jax.jit", "flax", step, state, x), nnx_jit(make())]
    return cases


# ----------------------------------------------------------------------------
# brainstate


def brainstate_cases(group: str, d: Data) -> list[Case]:
    import brainstate

    L, C = d.shape[1:]
    x = d.x
    nn, tjit = brainstate.nn, brainstate.transform.jit

    def fitting(fn: Callable[[], Any], fit: bool) -> Any:
        with brainstate.environ.context(fit=fit):
            return fn()

    if group in ("bn_train", "bn_eval"):
        fit = group == "bn_train"
        bn = nn.BatchNorm1d((L, C), epsilon=EPS)
        fn = tjit(lambda x: fitting(lambda: bn(x), fit))
        return [Case("brainstate, transform.jit", "brainstate", lambda: fn(x))]
    if group == "bn_grad":
        bn = nn.BatchNorm1d((L, C), epsilon=EPS)

        @tjit
        def grad_step(x: Any, g: Any) -> Any:
            def forward(x: Any) -> Any:
                with brainstate.environ.context(fit=True):
                    return bn(x)

            y, pullback = brainstate.transform.vjp(forward, x, grad_states=bn.weight)
            return y, pullback(g)

        return [Case("brainstate, transform.jit + transform.vjp", "brainstate", lambda: grad_step(x, d.g))]
    if group == "bn_eager":
        bn = nn.BatchNorm1d((L, C), epsilon=EPS)
        return [Case("brainstate, eager", "brainstate", lambda: fitting(lambda: bn(x), True))]
    if group in ("layer_norm", "rms_norm", "group_norm"):
        layer = {
            "layer_norm": lambda: nn.LayerNorm((L, C)),
            "rms_norm": lambda: nn.RMSNorm((L, C)),
            "group_norm": lambda: nn.GroupNorm(C, num_groups=NUM_GROUPS),  # it takes one feature axis
        }[group]()
        fn = tjit(lambda x: layer(x))
        return [Case("brainstate, transform.jit", "brainstate", lambda: fn(x))]
    if group == "instance_norm":  # no InstanceNorm in brainstate 0.5: GroupNorm, one channel per group
        layer = nn.GroupNorm(C, num_groups=C)
        fn = tjit(lambda x: layer(x))
        return [Case("brainstate GroupNorm(num_groups=C), transform.jit", "brainstate", lambda: fn(x))]
    if group == "weight_std" and hasattr(nn, "weight_standardization"):
        fn = tjit(nn.weight_standardization)
        return [Case("brainstate weight_standardization, transform.jit", "brainstate", lambda: fn(x))]
    return []


# ----------------------------------------------------------------------------
# equinox (channel-first layout per sample, vmapped over the batch: its convention)


def equinox_cases(group: str, d: Data) -> list[Case]:
    import equinox as eqx

    L, C = d.shape[1:]
    x_cf = d.x_cf
    note = "input (batch, channels, length)"

    def batched(bn: Any, state: Any, x: Any, inference: bool) -> Any:
        call = lambda xi, st: bn(xi, st, inference=inference)  # noqa: E731
        return jax.vmap(call, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)

    if group in ("bn_train", "bn_eval", "bn_eager", "bn_grad"):
        bn, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(C, axis_name="batch", eps=EPS, mode="ema")
        inference = group == "bn_eval"
        if group == "bn_eager":
            return [Case("equinox, eager", "equinox", lambda: batched(bn, state, x_cf, False), note=note)]
        if group == "bn_grad":

            @eqx.filter_jit
            def grad_step(bn: Any, state: Any, x: Any, g: Any) -> Any:
                def forward(bn: Any, x: Any) -> Any:
                    return batched(bn, state, x, False)

                y, pullback, new_state = eqx.filter_vjp(forward, bn, x, has_aux=True)
                return y, new_state, pullback(g)

            g_cf = jnp.transpose(d.g, (0, 2, 1))
            return [
                Case(
                    "equinox, filter_jit + filter_vjp",
                    "equinox",
                    lambda: grad_step(bn, state, x_cf, g_cf),
                    note=note,
                )
            ]
        fn = eqx.filter_jit(lambda bn, state, x: batched(bn, state, x, inference))
        if not inference:
            state = fn(bn, state, x_cf)[1]  # leave the "first call" branch of mode="ema"
        return [Case("equinox, filter_jit", "equinox", lambda: fn(bn, state, x_cf), note=note)]
    if group in ("layer_norm", "rms_norm"):
        layer = eqx.nn.LayerNorm(C) if group == "layer_norm" else eqx.nn.RMSNorm(C)
        fn = eqx.filter_jit(lambda m, x: jax.vmap(jax.vmap(m))(x))
        return [Case("equinox, filter_jit", "equinox", lambda: fn(layer, d.x))]
    if group == "group_norm":
        layer = eqx.nn.GroupNorm(NUM_GROUPS, C)
        fn = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
        return [Case("equinox, filter_jit", "equinox", lambda: fn(layer, x_cf), note=note)]
    if group == "instance_norm":  # no InstanceNorm in equinox: GroupNorm, one channel per group
        layer = eqx.nn.GroupNorm(C, C)
        fn = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
        name = "equinox GroupNorm(groups=C), filter_jit"
        return [Case(name, "equinox", lambda: fn(layer, x_cf), note=note)]
    return []


# ----------------------------------------------------------------------------
# torch (CUDA when it has it, else CPU)


def torch_cases(group: str, d: Data) -> list[Case]:
    import torch

    if group in ("bn_donated", "reductions"):
        return []
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    label = f"torch ({dev})"
    sync = (lambda _: torch.cuda.synchronize()) if dev == "cuda" else (lambda _: None)
    C = d.channels
    x_cl = torch.from_numpy(d.x_np).to(dev)  # (batch, length, channels)
    x_cf = torch.from_numpy(np.ascontiguousarray(np.transpose(d.x_np, (0, 2, 1)))).to(dev)
    note = "input (batch, channels, length)"

    def no_grad(module: Any, inp: Any) -> Callable[[], Any]:
        def call() -> Any:
            with torch.no_grad():
                return module(inp)

        return call

    if group in ("bn_train", "bn_eval", "bn_eager"):
        bn = torch.nn.BatchNorm1d(C, eps=EPS).to(dev).train(group != "bn_eval")
        return [Case(label, "torch", no_grad(bn, x_cf), sync=sync, note=note)]
    if group == "bn_grad":
        bn = torch.nn.BatchNorm1d(C, eps=EPS).to(dev).train()
        g_cf = torch.from_numpy(np.ascontiguousarray(np.transpose(d.g_np, (0, 2, 1)))).to(dev)
        xg = x_cf.clone().requires_grad_(True)

        def call() -> Any:
            xg.grad = None
            bn.zero_grad(set_to_none=True)
            y = bn(xg)
            y.backward(g_cf)
            return y

        return [Case(label, "torch", call, sync=sync, note=note)]
    if group == "layer_norm":
        return [Case(label, "torch", no_grad(torch.nn.LayerNorm(C).to(dev), x_cl), sync=sync)]
    if group == "rms_norm":
        return [Case(label, "torch", no_grad(torch.nn.RMSNorm(C).to(dev), x_cl), sync=sync)]
    if group == "group_norm":
        return [
            Case(
                label, "torch", no_grad(torch.nn.GroupNorm(NUM_GROUPS, C).to(dev), x_cf), sync=sync, note=note
            )
        ]
    if group == "instance_norm":
        layer = torch.nn.InstanceNorm1d(C, affine=True).to(dev)
        return [Case(label, "torch", no_grad(layer, x_cf), sync=sync, note=note)]
    return []


BUILDERS = {
    "unitnorm": unitnorm_cases,
    "reference": reference_cases,
    "flax": flax_cases,
    "brainstate": brainstate_cases,
    "equinox": equinox_cases,
    "torch": torch_cases,
}
MODULES = {"flax": "flax", "brainstate": "brainstate", "equinox": "equinox", "torch": "torch"}


# ----------------------------------------------------------------------------
# timing


def xla_analysis(case: Case) -> dict[str, Any]:
    """Bytes one call allocates (outputs + temporaries - donated aliases) and XLA's cost estimate."""
    if case.lower is None:
        return {}
    jitted, args = case.lower
    try:
        compiled = jitted.lower(*args).compile()
    except Exception:  # noqa: BLE001 - the analysis is optional
        return {}
    out: dict[str, Any] = {}
    mem = compiled.memory_analysis()
    if mem is not None:
        out["alloc_bytes"] = int(mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    if cost:
        out["flops"] = float(cost.get("flops", float("nan")))
        out["bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
    return out


def _one_call(case: Case) -> float:
    if case.prepare is not None:
        case.prepare()
    t0 = time.perf_counter()
    out = case.call()
    case.sync(out)
    dt = time.perf_counter() - t0
    del out
    return dt


# a sample is the mean of enough calls to last this long: a sub-millisecond call timed alone is
# mostly the clock's and the scheduler's noise (the small shape's ratios moved by 0.08 between runs)
MIN_SAMPLE_S = 0.005
MAX_CALLS_PER_SAMPLE = 50


def _calls_per_sample(one_call_s: float) -> int:
    """How many calls of this duration a sample averages to last ``MIN_SAMPLE_S``."""
    return max(1, min(MAX_CALLS_PER_SAMPLE, int(MIN_SAMPLE_S / max(one_call_s, 1e-9))))


def _sample(case: Case) -> float:
    return sum(_one_call(case) for _ in range(case.calls)) / case.calls


def time_cases(cases: list[Case], shape_name: str, quick: bool) -> list[Case]:
    """Warm every case up, then time them in interleaved rounds; drop (and report) those that fail.

    Each sample is the mean time of ``case.calls`` calls (enough to last ``MIN_SAMPLE_S``).
    """
    budget, max_rounds = BUDGET["tiny" if quick else shape_name]
    alive, per_call = [], 0.0
    for case in cases:
        try:
            _one_call(case)  # compiles
            once = _one_call(case)
            case.calls = 1 if quick else _calls_per_sample(once)
            per_call += once * case.calls
            alive.append(case)
        except Exception as err:  # noqa: BLE001 - a peer's failure must not stop the run
            case.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
            print(f"    ! {case.name}: {case.note}", file=sys.stderr)
            if os.environ.get("UNITNORM_BENCH_DEBUG"):
                traceback.print_exc()
    rounds = max(3, min(max_rounds, int(budget / max(per_call, 1e-9))))
    for r in range(rounds):
        for case in alive if r % 2 == 0 else alive[::-1]:
            case.samples.append(_sample(case))
    return cases


# ----------------------------------------------------------------------------
# the run


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_bytes(b: Any) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def run_group(group: str, shape_name: str, d: Data, families: list[str], quick: bool) -> list[dict[str, Any]]:
    cases: list[Case] = []
    for fam in families:
        try:
            cases += BUILDERS[fam](group, d)
        except Exception as err:  # noqa: BLE001 - build failures of a peer are reported, not fatal
            print(f"    ! {fam}: cannot build {group}: {type(err).__name__}: {err}", file=sys.stderr)
            if os.environ.get("UNITNORM_BENCH_DEBUG"):
                traceback.print_exc()
    time_cases(cases, shape_name, quick)
    rows = []
    for case in cases:
        med = statistics.median(case.samples) if case.samples else None
        row = {
            "group": group,
            "shape_name": shape_name,
            "shape": list(d.shape),
            "impl": case.name,
            "family": case.family,
            "median_s": med,
            "min_s": min(case.samples) if case.samples else None,
            "rounds": len(case.samples),
            "calls_per_sample": case.calls,
            "note": case.note,
        }
        if med is not None:
            row.update(xla_analysis(case))
        rows.append(row)
    del cases
    parts = [r["median_s"] for r in rows if r["impl"] in (FLOOR_READ, FLOOR_IN_PLACE) and r["median_s"]]
    if len(parts) == 2:
        rows.append({**rows[-1], "impl": FLOOR, "family": "reference", "median_s": sum(parts), "min_s": None})
        rows[-1]["note"] = "sum of the two parts' medians"
        for key in ("alloc_bytes", "flops", "bytes_accessed"):
            rows[-1].pop(key, None)
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    peers = [r["median_s"] for r in rows if r["family"] in PEERS and r["median_s"]]
    best = min(peers) if peers else None
    floor = [r["median_s"] for r in rows if r["impl"] == FLOOR]
    for r in rows:
        r["ratio_to_fastest_peer"] = r["median_s"] / best if best and r["median_s"] else None
        if floor and floor[0] and r["median_s"]:
            r["ratio_to_in_place_floor"] = r["median_s"] / floor[0]


def print_table(rows: list[dict[str, Any]], group: str, shape_name: str, shape: tuple[int, ...]) -> None:
    if not rows:
        return
    floor = any("ratio_to_in_place_floor" in r for r in rows)
    print(f"\n### {GROUPS[group]} — {shape_name} {tuple(shape)}\n")
    head = "| implementation | median | fastest | × fastest peer |" + (" × in-place floor |" if floor else "")
    print(head + " XLA alloc MiB | note |")
    print("|" + "---|" * (head.count("|") + 1))
    for r in rows:
        ratio = r.get("ratio_to_fastest_peer")
        cells = [
            r["impl"],
            _fmt_time(r["median_s"]),
            _fmt_time(r["min_s"]),
            f"{ratio:.2f}" if ratio else "-",
        ]
        if floor:
            fr = r.get("ratio_to_in_place_floor")
            cells.append(f"{fr:.2f}" if fr else "-")
        cells += [_fmt_bytes(r.get("alloc_bytes")), r.get("note", "")]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def _median(rows: list[dict[str, Any]], group: str, shape: str, impl: str) -> float | None:
    for r in rows:
        if r["group"] == group and r["shape_name"] == shape and r["impl"] == impl and r["median_s"]:
            return r["median_s"]
    return None


def _row(rows: list[dict[str, Any]], group: str, shape: str, impl: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["group"] == group and r["shape_name"] == shape and r["impl"] == impl), None
    )


def paired_quantity_ratio(d: Data, quick: bool) -> dict[str, float]:
    """Functional ``batch_norm`` under jit, Quantity over array, timed as a paired A/B.

    The two calls alternate (A Q, then Q A), each sample the mean of enough calls to last
    ``MIN_SAMPLE_S``, with nothing else between them; the figure is the median of the rounds'
    ratios. In the interleaved table other cases run between the two, and at the small shape
    (~0.2 ms a call) which case ran before moved the ratio by up to 0.08 between runs.
    """
    import brainunit as u

    import unitnorm as un

    fn = jax.jit(lambda x, rm, rv, s, b: un.functional.batch_norm(x, rm, rv, s, b, training=True))
    C = d.channels
    z, o = jnp.zeros(C), jnp.ones(C)
    zq, oq = u.Quantity(z, unit=u.mV), u.Quantity(o, unit=u.mV**2)
    array = Case("array", "unitnorm", lambda: fn(d.x, z, o, o, z))
    quantity = Case("Quantity", "unitnorm", lambda: fn(d.xq, zq, oq, o, z))
    for case in (array, quantity):
        _one_call(case)  # compiles
        case.calls = _calls_per_sample(_one_call(case))
    ratios = []
    for r in range(5 if quick else 60):
        pair = (array, quantity) if r % 2 == 0 else (quantity, array)
        times = {case.name: _sample(case) for case in pair}
        ratios.append(times["Quantity"] / times["array"])
    return {"ratio": statistics.median(ratios), "rounds": len(ratios)}


def units_dispatch_overhead(quick: bool) -> dict[str, float]:
    """Per-call time of jitted calls on a tiny input, arrays vs Quantities: the Python-side cost of units.

    The compiled programs are the same (see XLA's cost estimate in the goals); what a Quantity
    adds is JAX flattening it as a pytree on the way in and rebuilding it on the way out.
    """
    import brainunit as u

    import unitnorm as un

    x = jnp.ones((2, 4, 3))
    xq = u.Quantity(x, unit=u.mV)
    step = jax.jit(lambda layer, x: (layer(x), layer))
    fn = jax.jit(lambda x, rm, rv, s, b: un.functional.batch_norm(x, rm, rv, s, b, training=True))
    z, o = jnp.zeros(3), jnp.ones(3)
    zq, oq = u.Quantity(z, unit=u.mV), u.Quantity(o, unit=u.mV**2)
    la, lq = un.BatchNorm1d((4, 3)), un.BatchNorm1d((4, 3), in_unit=u.mV)
    calls = {
        "layer_array": lambda: step(la, x),
        "layer_quantity": lambda: step(lq, xq),
        "functional_array": lambda: fn(x, z, o, o, z),
        "functional_quantity": lambda: fn(xq, zq, oq, o, z),
    }
    n = 20 if quick else 200
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for call in calls.values():
        jax.block_until_ready(call())
    for _ in range(3 if quick else 9):
        for k, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(n):
                out = call()
            jax.block_until_ready(out)
            samples[k].append((time.perf_counter() - t0) / n)
    return {f"{k}_us": statistics.median(v) * 1e6 for k, v in samples.items()}


def _fastest(
    rows: list[dict[str, Any]], group: str, shape: str, families: tuple[str, ...]
) -> dict[str, Any] | None:
    """The fastest row of ``families`` in one group and shape (by median), or None."""
    timed = [
        r
        for r in rows
        if r["group"] == group and r["shape_name"] == shape and r["family"] in families and r["median_s"]
    ]
    return min(timed, key=lambda r: r["median_s"]) if timed else None


def goals(
    rows: list[dict[str, Any]],
    shapes: list[str],
    overhead: dict[str, float] | None = None,
    paired: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured ratio and a one-line verdict.

    ``paired``: by shape, :func:`paired_quantity_ratio`'s result, which then gives the functional
    Quantity-overhead goal its figure (the table's two rows stay as measured).
    """
    out = []

    def add(
        goal: str,
        shape: str,
        ratio: float | None,
        target: float,
        detail: str = "",
        verdict: tuple[str, ...] = (),
    ) -> None:
        """``verdict``: (what, against what) for the one-line verdict, e.g. ("LayerNorm", "flax.nnx")."""
        if ratio is not None:
            met = ratio <= target
            line = ""
            if verdict:
                what, against = verdict
                mark = "PASS" if met else "FAIL"
                line = f"{mark} {what} {shape} {ratio:.2f}× {against} (goal ≤ {target:g})"
            out.append(
                {
                    "goal": goal,
                    "shape": shape,
                    "ratio": ratio,
                    "target": target,
                    "met": met,
                    "detail": detail,
                    "verdict": line,
                }
            )

    for s in shapes:
        for group, layer in FORWARD_GOALS.items():
            ours = _row(rows, group, s, f"unitnorm {layer} (array)")
            # like for like: equinox takes (channels, length) samples, so it is compared with unitnorm
            # on that layout where the group has such a row; the verdict is the worst ratio over peers
            first = _row(rows, group, s, f"unitnorm {layer} (array), channels first")
            worst = None
            for family in JAX_PEERS:
                peer = _fastest(rows, group, s, (family,))
                mine = first if family == "equinox" and first and first["median_s"] else ours
                if peer and mine and mine["median_s"]:
                    ratio = mine["median_s"] / peer["median_s"]
                    if worst is None or ratio > worst[0]:
                        worst = (ratio, peer, mine is first)
            if worst is not None:
                ratio, peer, on_first = worst
                layout = ", channels first as its input" if on_first else ""
                add(
                    f"{layer} forward / fastest JAX peer",
                    s,
                    ratio,
                    1.0,
                    f"fastest relative to unitnorm: {peer['impl']}{layout}",
                    (layer, f"{PEER_NAMES[peer['family']]}{layout} (fastest JAX peer)"),
                )
        # like for like: torch's GroupNorm takes (batch, channels, length), as unitnorm's channels-first row
        ours, torch_row = (
            _row(rows, "group_norm", s, "unitnorm GroupNorm (array), channels first"),
            _fastest(rows, "group_norm", s, ("torch",)),
        )
        if ours and ours["median_s"] and torch_row:
            last = _row(rows, "group_norm", s, "unitnorm GroupNorm (array)")
            detail = torch_row["impl"] + ", channels first as its input"
            if last and last["median_s"]:
                detail += f"; unitnorm channels last {last['median_s'] / torch_row['median_s']:.2f}×"
            add(
                "GroupNorm forward / torch",
                s,
                ours["median_s"] / torch_row["median_s"],
                1.3,
                detail,
                ("GroupNorm", f"{torch_row['impl']}, channels first as its input"),
            )
        ours = _median(rows, "bn_train", s, "unitnorm layer (array)")
        flax_bn = _median(rows, "bn_train", s, "flax.nnx, split/merge + jax.jit")
        if ours and flax_bn:
            add(
                "BatchNorm training forward / flax.nnx",
                s,
                ours / flax_bn,
                1.0,
                "flax.nnx use_fast_variance=True",
                ("BatchNorm training forward", "flax.nnx"),
            )
        bound = _median(rows, "bn_train", s, BN_BOUND)
        if bound and flax_bn:
            add(
                "centred BatchNorm with the fewest steps (jnp) / flax.nnx",
                s,
                bound / flax_bn,
                math.inf,
                "a plain sum and one centred sum of squares: the least any centred formula adds",
            )
        for centred, plain in ((SUM_SHIFTED, SUM_PLAIN), (SUM_SHIFTED_SQUARES, SUM_SQUARES)):
            a, b = _median(rows, "reductions", s, centred), _median(rows, "reductions", s, plain)
            if a and b:
                add(f"{centred} / {plain}", s, a / b, math.inf, "the cost of one step before a reduction")
        for kind in ("layer", "functional"):
            a = _row(rows, "bn_train", s, f"unitnorm {kind} (array)")
            q = _row(rows, "bn_train", s, f"unitnorm {kind} (Quantity)")
            if a and q and a["median_s"] and q["median_s"]:
                same = a.get("bytes_accessed") == q.get("bytes_accessed") and a.get("flops") == q.get("flops")
                detail = "XLA cost identical" if same and "flops" in a else "XLA cost differs"
                if overhead:
                    extra = overhead[f"{kind}_quantity_us"] - overhead[f"{kind}_array_us"]
                    detail += f"; Quantity dispatch {extra:+.1f} µs/call"
                ratio = q["median_s"] / a["median_s"]
                if kind == "functional" and paired and s in paired:
                    detail += f"; paired A/B over {paired[s]['rounds']} rounds (table rows: {ratio:.2f})"
                    ratio = paired[s]["ratio"]
                add(
                    f"units free under jit ({kind}): Quantity / array",
                    s,
                    ratio,
                    1.05 if kind == "functional" else 1.02,
                    detail,
                    QUANTITY_VERDICT if kind == "functional" else (),
                )
        r = _row(rows, "bn_train", s, "unitnorm layer (array)")
        if r and r.get("ratio_to_fastest_peer"):
            add("training forward / fastest peer", s, r["ratio_to_fastest_peer"], 1.0)
        un_g = _median(rows, "bn_grad", s, "unitnorm layer (array)")
        fx_g = _median(rows, "bn_grad", s, "flax.nnx, split/merge + jax.jit")
        if un_g and fx_g:
            add("forward+backward / flax.nnx", s, un_g / fx_g, 0.6)
        un_gd = _median(rows, "bn_grad", s, GRAD_DONATED)
        fx_best = (
            min(v for v in (fx_g, _median(rows, "bn_grad", s, "flax.nnx, cotangent donated")) if v)
            if fx_g
            else None
        )
        if un_gd and fx_best:
            add("forward+backward, cotangent donated / flax.nnx (its faster way)", s, un_gd / fx_best, 0.6)
        r = _row(rows, "bn_donated", s, "unitnorm layer, x donated")
        if r and r.get("ratio_to_in_place_floor"):
            add("donated training forward / in-place floor", s, r["ratio_to_in_place_floor"], 2.0)
        for group, impl, peer in (
            ("spectral_norm", "unitnorm SpectralNorm (array)", "flax.nnx, split/merge + jax.jit"),
            ("weight_norm", "unitnorm WeightNorm (array)", "flax.nnx, split/merge + jax.jit"),
        ):
            ours, theirs = _median(rows, group, s, impl), _median(rows, group, s, peer)
            if ours and theirs:
                add(f"{impl.split()[1]} / flax.nnx", s, ours / theirs, 1.05)
        un_e = _median(rows, "bn_eager", s, "unitnorm layer (array)")
        for peer, impl in (("flax.nnx", "flax.nnx, eager"), ("brainstate", "brainstate, eager")):
            p = _median(rows, "bn_eager", s, impl)
            if un_e and p:
                add(f"eager call / {peer} eager", s, un_e / p, 0.3 if s in ("small", "tiny") else math.inf)
    return out


def print_verdicts(results: list[dict[str, Any]]) -> None:
    lines = [g["verdict"] for g in results if g.get("verdict")]
    if lines:
        print("\n### Verdicts\n")
        print("\n".join(lines))


def print_goals(results: list[dict[str, Any]]) -> None:
    if not results:
        return
    print("\n### Goals\n")
    print("| goal | shape | measured | target | met |")
    print("|---|---|---|---|---|")
    for g in results:
        target = "-" if math.isinf(g["target"]) else f"≤ {g['target']:.2f}"
        met = "yes" if g["met"] else "no"
        if math.isinf(g["target"]):
            met = "(shown)"
        detail = f" ({g['detail']})" if g["detail"] else ""
        print(f"| {g['goal']}{detail} | {g['shape']} | {g['ratio']:.2f} | {target} | {met} |")


def _thp_mode(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> str | None:
    """The kernel's transparent-huge-page mode (the bracketed word of ``path``); None where unknown."""
    try:
        text = Path(path).read_text()
    except OSError:  # not Linux, or a kernel without transparent huge pages
        return None
    chosen = [w[1:-1] for w in text.split() if w.startswith("[") and w.endswith("]")]
    return chosen[0] if chosen else (text.strip() or None)


def _allocator_env(environ: Any = os.environ) -> dict[str, str]:
    """The environment variables that change how fresh buffers are paid for: glibc's and a preload."""
    return {k: v for k, v in environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}


def environment() -> dict[str, Any]:
    dev = jax.devices()[0]
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # fresh output buffers cost more than the arithmetic on a CPU (docs: "Fresh output pages"):
        # the allocator's settings and the kernel's huge-page policy change every case's time
        "allocator_env": _allocator_env(),
        "transparent_hugepages": _thp_mode(),
    }
    for name in ("brainunit", "unitnorm", "flax", "brainstate", "equinox", "torch"):
        try:
            mod = __import__(name)
            env[name] = getattr(mod, "__version__", "?")
        except ImportError:
            env[name] = None
    if env.get("torch"):
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env


def _peak_memory() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import resource

        out["process_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:  # pragma: no cover - not on POSIX
        pass
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return out


def streaming_results(quick: bool) -> list[dict[str, Any]]:
    """Results of benchmarks/bench_streaming.py (another engineer's), when it exists."""
    path = Path(__file__).with_name("bench_streaming.py")
    if not path.exists():
        return []
    try:
        from benchmarks import bench_streaming

        return list(bench_streaming.run(quick))
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        print(f"    ! bench_streaming failed: {type(err).__name__}: {err}", file=sys.stderr)
        return [{"group": "streaming", "error": f"{type(err).__name__}: {err}"}]


def print_streaming(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\n### Streaming (benchmarks/bench_streaming.py)\n")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny shape, few rounds: a smoke test")
    parser.add_argument("--json", metavar="OUT", help="write every measurement to this JSON file")
    parser.add_argument("--shapes", help=f"comma-separated subset of {', '.join(SHAPES)}")
    parser.add_argument("--groups", help=f"comma-separated subset of {', '.join(GROUPS)}")
    parser.add_argument(
        "--skip", default="", help="comma-separated families to leave out (e.g. torch,equinox)"
    )
    args = parser.parse_args(argv)

    shapes = dict(QUICK_SHAPES) if args.quick else dict(SHAPES)
    if args.shapes:
        wanted = args.shapes.split(",")
        unknown = [s for s in wanted if s not in SHAPES and s not in QUICK_SHAPES]
        if unknown:
            parser.error(f"unknown shape(s) {unknown}; choose from {list(SHAPES)}")
        shapes = {s: {**SHAPES, **QUICK_SHAPES}[s] for s in wanted}
    groups = list(GROUPS)
    if args.groups:
        groups = args.groups.split(",")
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    skip = {s for s in args.skip.split(",") if s}
    families = [f for f in BUILDERS if f not in skip and (f not in MODULES or _installed(MODULES[f]))]
    missing = [f for f in MODULES if f not in families and f not in skip]

    env = environment()
    print("# unitnorm benchmarks\n")
    print(
        f"command: python -m benchmarks.run {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
    )
    print(
        f"jax {env['jax']} on {env['backend']} ({env['device']}), {env['cpu_count']} CPU cores; "
        + ", ".join(
            f"{k} {env[k]}" for k in ("brainunit", "flax", "brainstate", "equinox", "torch") if env.get(k)
        )
    )
    knobs = [f"{k}={v}" for k, v in env["allocator_env"].items()]
    thp = env["transparent_hugepages"] or "n/a"
    print(f"fresh buffers: transparent huge pages {thp}; " + (", ".join(knobs) or "default malloc"))
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    paired: dict[str, dict[str, float]] = {}
    for shape_name, shape in shapes.items():
        d = make_data(shape)
        for group in groups:
            t0 = time.perf_counter()
            group_rows = run_group(group, shape_name, d, families, args.quick)
            rows += group_rows
            print_table(group_rows, group, shape_name, shape)
            if group == "bn_train" and "unitnorm" in families and d.xq is not None:
                pq = paired[shape_name] = paired_quantity_ratio(d, args.quick)
                print(
                    f"\nfunctional batch_norm, Quantity / array, paired A/B: {pq['ratio']:.3f}"
                    f" (median of {pq['rounds']} rounds)"
                )
            print(f"\n({time.perf_counter() - t0:.1f} s)")
        del d
        gc.collect()
        jax.clear_caches()
    # the streaming benchmarks belong to no group: run with the full suite, not with a chosen subset
    streaming = streaming_results(args.quick) if not args.groups else []
    print_streaming(streaming)
    overhead = units_dispatch_overhead(args.quick) if "bn_train" in groups and "unitnorm" in families else {}
    if overhead:
        print(
            "\nunits under jit, per call on a tiny input (Python-side pytree work only): "
            + ", ".join(f"{k[:-3].replace('_', ' ')} {v:.1f} µs" for k, v in overhead.items())
        )
    goal_rows = goals(rows, list(shapes), overhead, paired)
    print_goals(goal_rows)
    print_verdicts(goal_rows)
    peak = _peak_memory()
    total = time.perf_counter() - t_start
    print(
        f"\npeak memory: process max RSS {peak.get('process_max_rss_mib', float('nan')):.0f} MiB"
        + (f", device peak {peak['device_peak_mib']:.0f} MiB" if "device_peak_mib" in peak else "")
        + f"; total time {total:.0f} s"
    )
    if args.json:
        out = {
            "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
            "environment": env,
            "results": rows,
            "streaming": streaming,
            "goals": goal_rows,
            "units_dispatch_overhead_us": overhead,
            "quantity_paired": paired,
            "peak_memory": peak,
            "total_seconds": total,
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
