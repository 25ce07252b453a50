"""brainstate interop: brainstate's State types, its transforms, its Module, its ``fit`` flag.

Skipped when brainstate is not installed (``pip install -e ".[brainstate]"``).
"""

import subprocess
import sys

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import U32, assert_close_f32, f32_bound, norm64, stats_bounds

import unitnorm as un

brainstate = pytest.importorskip("brainstate")

BS_TYPES = dict(param_type=brainstate.ParamState, mean_type=brainstate.BatchState)


def data(shape, seed=0, loc=-65.0, scale=3.0):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


def mantissa(v):
    return np.asarray(v.mantissa if isinstance(v, u.Quantity) else v)


class Net(brainstate.nn.Module):
    """A brainstate model with a unitnorm layer inside: Linear -> BatchNorm1d (mV)."""

    def __init__(self):
        super().__init__()
        self.linear = brainstate.nn.Linear(3, 3)
        self.norm = un.BatchNorm1d((5, 3), in_unit=u.mV, momentum=0.8, **BS_TYPES)

    def update(self, x):
        return self.norm(self.linear(x.to_decimal(u.mV)) * u.mV)

    def linear_by_hand(self, x, dtype=np.float32):
        w = self.linear.weight.value
        xs = np.asarray(x.to_decimal(u.mV), dtype)
        return xs @ np.asarray(w["weight"], dtype) + np.asarray(w["bias"], dtype)

    def linear_error(self, x):
        """Bound on how far any float32 evaluation of the Linear layer is from its float64 value.

        The worst case of a dot product of ``n`` terms plus a bias, ``(n + 1) u sum|terms|`` (Higham's
        gamma bound), holds whatever the order of the additions.
        """
        w = self.linear.weight.value
        xs = np.abs(np.asarray(x.to_decimal(u.mV), np.float64))
        mag = xs @ np.abs(np.asarray(w["weight"], np.float64)) + np.abs(np.asarray(w["bias"], np.float64))
        return U32 * (xs.shape[-1] + 1) * float(mag.max())


def normalized_bound(net, x, lin64):
    """Bound on a float32 BatchNorm1d output of ``net`` from the float64 one: the Linear's rounding,
    amplified by ``1/sigma`` (centring) and ``|y|/sigma`` (variance), plus the normalization's own."""
    sigma = np.sqrt(lin64.var((0, 1)))
    y = np.abs(norm64(lin64, (0, 1), eps=1e-5))
    d_in = net.linear_error(x)
    return float(np.max((2 + y) * d_in / sigma)) + f32_bound(lin64, (0, 1), eps=1e-5)


@pytest.fixture
def fit_unset():
    """Every test starts and ends with brainstate's fit flag unset."""
    assert brainstate.environ.get("fit", default=None) is None
    yield
    assert brainstate.environ.get("fit", default=None) is None


def test_unitnorm_does_not_import_brainstate():
    code = (
        "import sys, jax.numpy as jnp, unitnorm as un\n"
        "un.BatchNorm0d(2)(jnp.ones((3, 2)))\n"
        "print('brainstate' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"


def test_states_are_brainstate_states_and_brainstate_collects_them():
    net = Net()
    assert isinstance(net.norm.weight, brainstate.ParamState)
    assert isinstance(net.norm.running_mean, brainstate.BatchState)
    params = net.states(brainstate.ParamState)
    stats = net.states(brainstate.BatchState)
    assert ("norm", "weight") in params and ("linear", "weight") in params
    assert set(stats) == {("norm", "running_mean"), ("norm", "running_var")}
    assert stats[("norm", "running_mean")] is net.norm.running_mean
    assert set(brainstate.graph.states(net.norm)) == {("weight",), ("running_mean",), ("running_var",)}


def test_brainstate_jit_equals_eager_unitnorm_layer(fit_unset):
    net = Net()
    reference = un.BatchNorm1d((5, 3), in_unit=u.mV, momentum=0.8)
    traces = []

    @brainstate.transform.jit
    def forward(x):
        traces.append(None)
        return net(x)

    rm, rv, mean_err, var_err = np.zeros(3), np.ones(3), 0.0, 0.0
    for step in range(3):
        x = data((4, 5, 3), seed=step) * u.mV
        y = forward(x)
        lin = net.linear_by_hand(x)
        lin64 = net.linear_by_hand(x, np.float64)
        bound = normalized_bound(net, x, lin64)
        truth = norm64(lin64, (0, 1), eps=1e-5)
        # both float32 paths (brainstate's jit, unitnorm eager) are within the bound of the truth
        assert_close_f32(y, truth, bound)
        assert_close_f32(reference(lin * u.mV), truth, bound)
        # the running statistics' truth; each batch statistic is off by the Linear's rounding (d_in,
        # 2 sigma d_in for the variance) plus its own, and the EMA weights add up to at most 1
        rm, rv = 0.8 * rm + 0.2 * lin64.mean((0, 1)), 0.8 * rv + 0.2 * lin64.var((0, 1))
        d_in, (m_err, v_err) = net.linear_error(x), stats_bounds(lin64, (0, 1))
        mean_err = max(mean_err, d_in + float(m_err.max()))
        var_err = max(var_err, 2 * float(np.sqrt(lin64.var((0, 1))).max()) * d_in + float(v_err.max()))
    assert len(traces) == 1
    assert net.norm.running_mean.value.unit == u.mV and net.norm.running_var.value.unit == u.mV**2
    for layer in (net.norm, reference):  # brainstate's jit and unitnorm eager, each against the truth
        assert_close_f32(mantissa(layer.running_mean.value), rm, mean_err + 4 * U32 * np.abs(rm).max())
        assert_close_f32(mantissa(layer.running_var.value), rv, var_err + 4 * U32 * np.abs(rv).max())


def test_brainstate_grad_trains_the_parameters_and_updates_the_statistics(fit_unset):
    net = Net()
    twin = un.BatchNorm1d((5, 3), in_unit=u.mV, momentum=0.8)  # unitnorm's own State types
    x = data((4, 5, 3), seed=3) * u.mV
    w = data((4, 5, 3), seed=4, loc=0.0, scale=1.0)
    params = net.states(brainstate.ParamState)

    def loss():
        return jnp.sum(jnp.tanh(net(x)) * w)

    grads = brainstate.transform.jit(brainstate.transform.grad(loss, grad_states=params))()
    g_norm = grads[("norm", "weight")]
    assert np.isfinite(np.asarray(g_norm["scale"])).all()

    lin = net.linear_by_hand(x)

    def twin_loss(p):
        return jnp.sum(jnp.tanh(un.load_params(twin, p)(lin * u.mV)) * w)

    g_twin = jax.grad(twin_loss)(un.params(twin))["weight"]
    # float64 truth: d loss / d scale = sum xhat (1 - tanh(xhat)**2) w, d loss / d bias = sum (1 - tanh**2) w.
    # Each float32 gradient is off by the error in xhat (times the derivative of its term, at most
    # |w| (1 + 2|xhat|) for the scale and |w| for the bias) plus the rounding of its sum of 20 terms.
    lin64 = net.linear_by_hand(x, np.float64)
    xhat = norm64(lin64, (0, 1), eps=1e-5)
    w64 = w.astype(np.float64)
    terms = {"scale": xhat * (1 - np.tanh(xhat) ** 2) * w64, "bias": (1 - np.tanh(xhat) ** 2) * w64}
    slope = {"scale": np.abs(w64) * (1 + 2 * np.abs(xhat)), "bias": np.abs(w64)}
    d_xhat = normalized_bound(net, x, lin64)
    for k in ("scale", "bias"):
        truth = terms[k].sum((0, 1))
        bound = d_xhat * float(slope[k].sum((0, 1)).max())
        bound += 8 * U32 * np.sqrt(20) * float(np.abs(terms[k]).sum((0, 1)).max())
        assert_close_f32(g_norm[k], truth, bound)
        assert_close_f32(g_twin[k], truth, bound)
    # the forward pass inside grad updated the running statistics (never differentiated); they saw
    # brainstate's float32 Linear, off by at most linear_error from the float64 one
    mean_err = net.linear_error(x) + float(stats_bounds(lin64, (0, 1))[0].max())
    assert_close_f32(
        mantissa(net.norm.running_mean.value), 0.2 * lin64.mean((0, 1)), 0.2 * mean_err + 2 * U32
    )
    # one SGD step on the parameters only
    for key, g in grads.items():
        params[key].value = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params[key].value, g)
    np.testing.assert_allclose(
        np.asarray(net.norm.weight.value["bias"]), -0.1 * np.asarray(g_norm["bias"]), rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize("types", ["brainstate", "unitnorm"])
def test_fit_flag_precedence(fit_unset, types):
    """Keyword, then brainstate's fit, then the layer's mode; for brainstate and unitnorm State types."""
    layer = un.BatchNorm0d(2, momentum=0.5, **(BS_TYPES if types == "brainstate" else {}))
    x = jnp.asarray(data((6, 2), loc=4.0))
    x_mean = np.asarray(x, np.float64).mean(0)

    def updated(**kw):
        before = np.asarray(layer.running_mean.value).copy()
        layer(x, **kw)
        return not np.array_equal(np.asarray(layer.running_mean.value), before)

    assert updated()  # 3. the layer starts in training mode
    with brainstate.environ.context(fit=False):
        assert not updated()  # 2. fit beats the layer's mode ...
        running_mean = np.asarray(layer.running_mean.value, np.float64)
        running_var = np.asarray(layer.running_var.value, np.float64)
        assert_close_f32(running_mean, 0.5 * x_mean, 0.5 * float(stats_bounds(x, 0)[0].max()))
        # the layer's own float32 statistics: only the output's few roundings (relative) remain
        expected = (np.asarray(x, np.float64) - running_mean) / np.sqrt(running_var + 1e-5)
        np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=16 * U32)  # ... running stats
        assert updated(training=True)  # 1. the keyword beats fit
    layer.eval()
    assert not updated()
    with brainstate.environ.context(fit=True):
        assert updated()
        assert not updated(training=False)
        with brainstate.environ.context(fit=False):  # the innermost context wins
            assert not updated()
    assert not updated()  # the context is gone: the layer's mode again


def test_fit_set_globally_counts_too(fit_unset):
    layer = un.BatchNorm0d(2).eval()
    x = jnp.asarray(data((4, 2)))
    brainstate.environ.set(fit=True)
    try:
        layer(x)
    finally:
        brainstate.environ.pop("fit")
    assert not np.array_equal(np.asarray(layer.running_mean.value), 0.0)


def test_fit_is_read_when_a_function_is_traced(fit_unset):
    """A jitted function keeps the mode it was traced with: jit one function per mode."""
    layer = un.BatchNorm0d(2, momentum=0.5, **BS_TYPES)
    x = jnp.asarray(data((4, 2), loc=1.0))
    train_step = brainstate.transform.jit(lambda x: layer(x))
    eval_step = brainstate.transform.jit(lambda x: layer(x))
    with brainstate.environ.context(fit=True):
        train_step(x)
    after_train = np.asarray(layer.running_mean.value).copy()
    with brainstate.environ.context(fit=False):
        eval_step(x)
        np.testing.assert_array_equal(np.asarray(layer.running_mean.value), after_train)
        train_step(x)  # traced under fit=True: still trains
    assert not np.array_equal(np.asarray(layer.running_mean.value), after_train)


def test_a_fixed_or_adopted_unit_works_under_brainstate_jit():
    """Give in_unit=, or let one call outside jit adopt the unit, before brainstate's jit."""
    x = jnp.asarray(data((4, 2))) * u.mV
    fixed = un.BatchNorm0d(2, in_unit=u.mV, **BS_TYPES)
    brainstate.transform.jit(lambda x: fixed(x))(x)
    warm = un.BatchNorm0d(2, **BS_TYPES)
    warm(x, training=False)  # adopts mV, changes no statistic
    brainstate.transform.jit(lambda x: warm(x))(x)
    assert warm.running_mean.value.unit == u.mV
    np.testing.assert_allclose(mantissa(warm.running_mean.value), mantissa(fixed.running_mean.value))


def test_unit_adoption_under_brainstate_jit_fails_cleanly():
    """Adopting a unit would change brainstate States' structure inside the trace: refused up front."""
    x = jnp.asarray(data((4, 2))) * u.mV
    free = un.BatchNorm0d(2, **BS_TYPES)
    with pytest.raises(ValueError, match=r"in_unit=u\.mV.*outside jit"):
        brainstate.transform.jit(lambda x: free(x))(x)
    assert free.in_unit is None
    assert not isinstance(free.running_mean.value, u.Quantity)  # no State was written
    free(x)  # outside jit it adopts as usual
    assert free.in_unit == u.mV


def test_plain_jax_jit_refuses_brainstate_states():
    """brainstate States are not JAX pytrees: such a layer is driven by brainstate's transforms."""
    layer = un.BatchNorm0d(2, **BS_TYPES)
    with pytest.raises(TypeError, match="ParamState"):
        jax.jit(lambda layer, x: layer(x))(layer, jnp.ones((3, 2)))
