"""The benchmark entry point runs (on a tiny shape), so it cannot rot. No timings are asserted."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import run as bench  # noqa: E402


@pytest.mark.slow  # a benchmark smoke run: CI's slow set
def test_quick_run_times_every_group_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    rows = result["results"]
    assert {r["group"] for r in rows} == set(bench.GROUPS)
    assert {r["shape_name"] for r in rows} == {"tiny"}
    # every unitnorm case and every jnp reference ran (peers may be missing or fail: reported, not fatal)
    ours = [r for r in rows if r["family"] in ("unitnorm", "reference")]
    assert ours and all(r["median_s"] and r["median_s"] > 0 and r["rounds"] >= 3 for r in ours), [
        (r["impl"], r["note"]) for r in ours if not r["median_s"]
    ]
    assert {"bn_train", "bn_grad", "bn_eager", "bn_donated"} <= {r["group"] for r in ours}
    assert any(r.get("alloc_bytes") is not None for r in ours)
    assert result["environment"]["jax"]
    assert any(g["verdict"].startswith(("PASS ", "FAIL ")) for g in result["goals"])
    for text in ("### Goals", "× fastest peer", "peak memory", "### Verdicts"):
        assert text in proc.stdout


def test_unknown_names_are_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--groups", "bn_train,nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "unknown group(s) ['nonsense']" in proc.stderr


def row(group, impl, family, median, shape="small", **extra):
    return {"group": group, "shape_name": shape, "impl": impl, "family": family, "median_s": median, **extra}


def test_ratios_and_goals_from_measurements():
    train = [
        row("bn_train", "unitnorm layer (array)", "unitnorm", 2.0, flops=1.0, bytes_accessed=8.0),
        row("bn_train", "unitnorm layer (Quantity)", "unitnorm", 2.02, flops=1.0, bytes_accessed=8.0),
        row("bn_train", "jnp reference, two-pass", "reference", 1.0),
        row("bn_train", "flax.nnx, split/merge + jax.jit", "flax", 4.0),
        row("bn_train", "torch (cpu)", "torch", 2.5),
    ]
    bench._add_ratios(train)
    assert train[0]["ratio_to_fastest_peer"] == 2.0 / 2.5  # the jnp reference is not a peer
    donated = [
        row("bn_donated", "unitnorm layer, x donated", "unitnorm", 3.0),
        row("bn_donated", bench.FLOOR, "reference", 2.0),
    ]
    bench._add_ratios(donated)
    assert donated[0]["ratio_to_in_place_floor"] == 1.5
    eager = [
        row("bn_eager", "unitnorm layer (array)", "unitnorm", 1.0),
        row("bn_eager", "flax.nnx, eager", "flax", 4.0),
        row("bn_eager", "brainstate, eager", "brainstate", 2.0),
    ]
    grad = [
        row("bn_grad", "unitnorm layer (array)", "unitnorm", 5.0),
        row("bn_grad", "flax.nnx, split/merge + jax.jit", "flax", 10.0),
    ]
    goals = {g["goal"]: g for g in bench.goals(train + donated + eager + grad, ["small"])}
    units = goals["units free under jit (layer): Quantity / array"]
    assert math.isclose(units["ratio"], 1.01) and units["met"] and units["detail"] == "XLA cost identical"
    assert goals["training forward / fastest peer"]["met"]
    backward = goals["forward+backward / flax.nnx"]
    assert backward["ratio"] == 0.5 and backward["met"]
    assert goals["donated training forward / in-place floor"]["ratio"] == 1.5
    assert goals["eager call / flax.nnx eager"]["met"] and not goals["eager call / brainstate eager"]["met"]


def test_forward_goals_take_the_fastest_jax_peer_and_give_a_verdict():
    rows = [
        row("layer_norm", "unitnorm LayerNorm (array)", "unitnorm", 0.9, shape="medium"),
        row("layer_norm", "flax.nnx, split/merge + jax.jit", "flax", 1.2, shape="medium"),
        row("layer_norm", "equinox, filter_jit", "equinox", 1.0, shape="medium"),
        row("layer_norm", "torch (cpu)", "torch", 0.5, shape="medium"),  # not a JAX peer
        row("group_norm", "unitnorm GroupNorm (array)", "unitnorm", 2.6, shape="medium"),
        row("group_norm", "flax.nnx, split/merge + jax.jit", "flax", 2.0, shape="medium"),
        row("group_norm", "unitnorm GroupNorm (array), channels first", "reference", 2.6, shape="medium"),
        row("group_norm", "torch (cpu)", "torch", 2.0, shape="medium"),
    ]
    goals = {g["goal"]: g for g in bench.goals(rows, ["medium"])}
    ln = goals["LayerNorm forward / fastest JAX peer"]
    assert ln["ratio"] == 0.9 and ln["met"]
    assert ln["verdict"] == "PASS LayerNorm medium 0.90× equinox (fastest JAX peer) (goal ≤ 1)"
    gn = goals["GroupNorm forward / fastest JAX peer"]
    assert gn["verdict"].startswith("FAIL GroupNorm medium 1.30× flax.nnx")
    torch_goal = goals["GroupNorm forward / torch"]
    assert torch_goal["ratio"] == 1.3 and torch_goal["met"]  # the goal: <= 1.3x torch


def test_torch_goal_compares_on_torchs_own_layout():
    """torch's GroupNorm takes (batch, channels, length): it is held against unitnorm's channels-first
    row, and the channels-last ratio is reported beside it."""
    rows = [
        row("group_norm", "unitnorm GroupNorm (array)", "unitnorm", 4.0, shape="large"),
        row("group_norm", "unitnorm GroupNorm (array), channels first", "reference", 1.2, shape="large"),
        row("group_norm", "torch (cpu)", "torch", 1.0, shape="large"),
    ]
    torch_goal = {g["goal"]: g for g in bench.goals(rows, ["large"])}["GroupNorm forward / torch"]
    assert math.isclose(torch_goal["ratio"], 1.2) and torch_goal["met"]
    assert torch_goal["verdict"] == (
        "PASS GroupNorm large 1.20× torch (cpu), channels first as its input (goal ≤ 1.3)"
    )
    assert torch_goal["detail"].endswith("unitnorm channels last 4.00×")


def test_forward_goal_compares_equinox_on_its_own_layout():
    """equinox normalizes (channels, length) samples: it is held against unitnorm's channels-first row."""
    rows = [
        row("group_norm", "unitnorm GroupNorm (array)", "unitnorm", 2.6, shape="medium"),
        row("group_norm", "unitnorm GroupNorm (array), channels first", "reference", 0.8, shape="medium"),
        row("group_norm", "equinox, filter_jit", "equinox", 1.0, shape="medium"),
        row("group_norm", "flax.nnx, split/merge + jax.jit", "flax", 2.5, shape="medium"),
    ]
    gn = {g["goal"]: g for g in bench.goals(rows, ["medium"])}["GroupNorm forward / fastest JAX peer"]
    # the worst like-for-like ratio: 2.6 / 2.5 against flax.nnx, not 2.6 / 1.0 against equinox
    assert math.isclose(gn["ratio"], 2.6 / 2.5) and not gn["met"]
    assert gn["verdict"].startswith("FAIL GroupNorm medium 1.04× flax.nnx (fastest JAX peer)")
    rows[1]["median_s"] = 1.5  # now unitnorm on equinox's layout is the worst case
    gn = {g["goal"]: g for g in bench.goals(rows, ["medium"])}["GroupNorm forward / fastest JAX peer"]
    assert gn["ratio"] == 1.5 and "equinox, channels first as its input" in gn["verdict"]


def test_quantity_goal_takes_the_paired_measurement_when_there_is_one():
    rows = [
        row("bn_train", "unitnorm functional (array)", "unitnorm", 2.0, flops=1.0, bytes_accessed=8.0),
        row("bn_train", "unitnorm functional (Quantity)", "unitnorm", 2.2, flops=1.0, bytes_accessed=8.0),
    ]
    name = "units free under jit (functional): Quantity / array"
    table = {g["goal"]: g for g in bench.goals(rows, ["small"])}[name]
    assert math.isclose(table["ratio"], 1.1) and not table["met"]
    paired = {"small": {"ratio": 1.01, "rounds": 60}}
    goal = {g["goal"]: g for g in bench.goals(rows, ["small"], paired=paired)}[name]
    assert goal["ratio"] == 1.01 and goal["met"]
    assert "paired A/B over 60 rounds (table rows: 1.10)" in goal["detail"]
    assert goal["verdict"].startswith("PASS Quantity overhead, functional batch_norm (jit) small 1.01×")


def test_a_sample_averages_enough_calls(monkeypatch):
    ticks = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks) * 1e-3)  # every call: 1 ms
    case = bench.Case("c", "unitnorm", lambda: None, sync=lambda _: None)
    bench.time_cases([case], "small", quick=False)
    assert case.calls == int(bench.MIN_SAMPLE_S / 1e-3)
    assert all(math.isclose(s, 1e-3) for s in case.samples) and len(case.samples) >= 3


def test_bound_and_reduction_costs_are_shown_beside_the_goals():
    """The centred bound and the one-step reduction costs are printed as shown lines, not verdicts."""
    rows = [
        row("bn_train", "unitnorm layer (array)", "unitnorm", 1.1, shape="medium"),
        row("bn_train", "flax.nnx, split/merge + jax.jit", "flax", 1.0, shape="medium"),
        row("bn_train", bench.BN_BOUND, "reference", 1.04, shape="medium"),
        row("reductions", bench.SUM_PLAIN, "reference", 1.0, shape="medium"),
        row("reductions", bench.SUM_SQUARES, "reference", 1.25, shape="medium"),
        row("reductions", bench.SUM_SHIFTED, "reference", 1.4, shape="medium"),
        row("reductions", bench.SUM_SHIFTED_SQUARES, "reference", 1.5, shape="medium"),
    ]
    goals = {g["goal"]: g for g in bench.goals(rows, ["medium"])}
    bound = goals["centred BatchNorm with the fewest steps (jnp) / flax.nnx"]
    assert math.isclose(bound["ratio"], 1.04) and math.isinf(bound["target"]) and bound["verdict"] == ""
    assert math.isclose(goals["sum(x - x[0, 0]) / sum(x)"]["ratio"], 1.4)
    assert math.isclose(goals["sum((x - x[0, 0]) ** 2) / sum(x * x)"]["ratio"], 1.2)
    assert goals["BatchNorm training forward / flax.nnx"]["verdict"].startswith("FAIL")


def test_the_bound_and_the_reductions_compute_what_they_are_named():
    """The reference rows are the math their names say (float64 NumPy), so their timings mean something."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(1.0, 2.0, (3, 7, 4)), jnp.float32)
    x64 = np.asarray(x, np.float64)  # the float64 truth of exactly the float32 input
    # 21 float32 terms per sum: rounding is below 21 * 2**-24 * sum(|terms|) < 1e-4 + 1e-5 * |sum|
    data = bench.Data((3, 7, 4), np.asarray(x), np.zeros((3, 7, 4), np.float32), x, None, None, None)
    first = x64[0, 0]
    expected = {
        bench.SUM_PLAIN: x64.sum((0, 1)),
        bench.SUM_SQUARES: (x64 * x64).sum((0, 1)),
        "sum(x + 1)": (x64 + 1).sum((0, 1)),
        bench.SUM_SHIFTED: (x64 - first).sum((0, 1)),
        bench.SUM_SHIFTED_SQUARES: ((x64 - first) ** 2).sum((0, 1)),
    }
    cases = bench.reference_cases("reductions", data)
    assert [c.name for c in cases] == list(expected)
    for case in cases:
        np.testing.assert_allclose(np.asarray(case.call()), expected[case.name], rtol=1e-5, atol=1e-4)
    ones, zeros = jnp.ones(4), jnp.zeros(4)
    y, rm, rv = bench._bn_bound(x, zeros, ones, ones, zeros)
    mean, var = x64.mean((0, 1)), x64.var((0, 1))
    np.testing.assert_allclose(np.asarray(y), (x64 - mean) / np.sqrt(var + bench.EPS), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(rm), 0.01 * mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rv), 0.99 + 0.01 * var, rtol=1e-5)


def test_the_environment_names_the_allocator_settings(tmp_path):
    """Fresh buffers' cost depends on malloc's settings and the kernel's huge-page mode: both are recorded."""
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n")
    assert bench._thp_mode(str(enabled)) == "madvise"
    enabled.write_text("madvise\n")  # a file without the bracketed choice: its text
    assert bench._thp_mode(str(enabled)) == "madvise"
    enabled.write_text("")
    assert bench._thp_mode(str(enabled)) is None
    assert bench._thp_mode(str(tmp_path / "missing")) is None
    environ = {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "LD_PRELOAD": "libjemalloc.so.2",
        "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
        "HOME": "/root",
    }
    assert bench._allocator_env(environ) == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "LD_PRELOAD": "libjemalloc.so.2",
    }
