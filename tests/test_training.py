"""A full optax training loop under one plain ``jax.jit``.

The problem is shaped like a small EEG/LFP set: trials of 128 samples on 4 channels in µV,
each channel with its own offset and amplitude; a BatchNorm1d feeds a linear readout in mV
that must reproduce a calibrated reference signal. Gradients flow to the parameters only
(:func:`unitnorm.params` / :func:`unitnorm.load_params`); the running statistics follow the
forward pass and are checked against a float64 NumPy re-computation.
"""

import doctest
import re
from pathlib import Path

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import unitnorm as un

T, C, B = 128, 4, 16
OFFSET_UV = np.array([-20.0, 5.0, 40.0, -60.0])
AMPLITUDE_UV = np.array([5.0, 10.0, 20.0, 2.0])
W_TRUE_MV = np.array([1.0, -2.0, 0.5, 3.0])
B_TRUE_MV = -65.0


def make_batches(n_steps, seed=0):
    """Trials (n_steps, B, T, C) in µV: a 10 Hz rhythm of random phase plus noise, per-channel offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 256.0
    phase = rng.uniform(0, 2 * np.pi, size=(n_steps, B, 1, C))
    rhythm = np.sin(2 * np.pi * 10 * t[None, None, :, None] + phase)
    noise = rng.normal(size=(n_steps, B, T, C))
    x = OFFSET_UV + AMPLITUDE_UV * (rhythm + 0.5 * noise)
    true_sd = AMPLITUDE_UV * np.sqrt(0.5 + 0.25)
    target = ((x - OFFSET_UV) / true_sd) @ W_TRUE_MV + B_TRUE_MV  # (n_steps, B, T) in mV
    return x.astype(np.float32), target.astype(np.float32), x


def make_model():
    return {
        "norm": un.BatchNorm1d((T, C), in_unit=u.uvolt, momentum=0.9),
        "readout": un.ParamState({"w": jnp.zeros(C) * u.mV, "b": jnp.zeros(()) * u.mV}),
    }


def predict(model, x):
    z = model["norm"](x)  # dimensionless, (B, T, C)
    r = model["readout"].value
    return (z * r["w"]).sum(axis=-1) + r["b"]  # mV


def loss_fn(params, model, x, target):
    model = un.load_params(model, params)
    err = predict(model, x) - target
    return jnp.mean((err**2).to_decimal(u.mV**2)), model


def run_training(n_steps=150):
    x, target, x64 = make_batches(n_steps)
    model = make_model()
    opt = optax.adam(0.3)
    opt_state = opt.init(un.params(model))
    traces = []

    @jax.jit
    def step(model, opt_state, x, target):
        traces.append(None)
        params = un.params(model)
        (loss, model), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, model, x, target)
        updates, opt_state = opt.update(grads, opt_state, params)
        model = un.load_params(model, optax.apply_updates(params, updates))
        return model, opt_state, loss

    losses = []
    for i in range(n_steps):
        model, opt_state, loss = step(model, opt_state, x[i] * u.uvolt, target[i] * u.mV)
        losses.append(float(loss))
    return model, np.array(losses), len(traces), x64


@pytest.fixture(scope="module")
def trained():
    return run_training()


def test_loss_goes_down(trained):
    _, losses, _, _ = trained
    assert np.all(np.isfinite(losses))
    assert losses[0] > 1000.0  # the readout starts at zero, the target sits near -65 mV
    assert losses[-10:].mean() < 1e-3 * losses[0], (losses[0], losses[-10:])


def test_one_trace_for_the_whole_loop(trained):
    _, _, n_traces, _ = trained
    assert n_traces == 1


def test_parameters_moved_and_kept_their_units(trained):
    model, _, _, _ = trained
    w = model["readout"].value["w"]
    assert w.unit == u.mV and model["readout"].value["b"].unit == u.mV
    # the readout learns the calibration up to the BatchNorm's own scale and bias
    scale = np.asarray(model["norm"].weight.value["scale"])
    bias = np.asarray(model["norm"].weight.value["bias"])
    assert not np.allclose(scale, 1.0) and not np.allclose(bias, 0.0)
    effective_w = scale * np.asarray(w.mantissa)
    effective_b = float(model["readout"].value["b"].mantissa) + float(np.sum(bias * np.asarray(w.mantissa)))
    np.testing.assert_allclose(effective_w, W_TRUE_MV, rtol=0.05)
    assert abs(effective_b - B_TRUE_MV) < 0.5


def test_running_stats_equal_numpy_recomputation(trained):
    model, losses, _, x64 = trained
    x32 = x64.astype(np.float32).astype(np.float64)  # what the layer actually saw
    mean, var = np.zeros(C), np.ones(C)
    for batch in x32[: len(losses)]:
        mean = 0.9 * mean + 0.1 * batch.mean(axis=(0, 1))
        var = 0.9 * var + 0.1 * batch.var(axis=(0, 1))
    rm, rv = model["norm"].running_mean.value, model["norm"].running_var.value
    assert rm.unit == u.uvolt and rv.unit == u.uvolt**2
    np.testing.assert_allclose(np.asarray(rm.mantissa), mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(rv.mantissa), var, rtol=1e-5)


def test_params_grads_leave_running_stats_out():
    model = make_model()
    x, target, _ = make_batches(1)
    params = un.params(model)
    assert sorted(params) == ["norm.weight", "readout"]
    grads, new_model = jax.grad(loss_fn, has_aux=True)(params, model, x[0] * u.uvolt, target[0] * u.mV)
    assert sorted(grads) == ["norm.weight", "readout"]
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    # the model passed in is untouched; the returned one carries the forward pass's statistics
    assert np.all(np.asarray(model["norm"].running_mean.value.mantissa) == 0)
    np.testing.assert_allclose(
        np.asarray(new_model["norm"].running_mean.value.mantissa),
        0.1 * x[0].astype(np.float64).mean(axis=(0, 1)),
        rtol=1e-5,
    )


def test_eval_after_training_uses_running_stats(trained):
    model, _, _, _ = trained
    x, _, _ = make_batches(1, seed=1)
    norm = model["norm"]
    # eval mode through the keyword: running stats, and no state written
    before = np.asarray(norm.running_mean.value.mantissa).copy()
    z = norm(x[0] * u.uvolt, training=False)
    assert np.array_equal(np.asarray(norm.running_mean.value.mantissa), before)
    ref = (x[0] - before) / np.sqrt(np.asarray(norm.running_var.value.mantissa) + 1e-5)
    ref = ref * np.asarray(norm.weight.value["scale"]) + np.asarray(norm.weight.value["bias"])
    np.testing.assert_allclose(np.asarray(z), ref, rtol=1e-4, atol=1e-4)


# --- the docs page's examples ------------------------------------------------------------------------

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def run_doc_page(path=DOCS_PAGE):
    """Run the ```{doctest} blocks of a MyST page in one namespace, as Sphinx's doctest builder does."""
    blocks = re.findall(r"^```\{doctest\}\n(.*?)^```$", path.read_text(), flags=re.S | re.M)
    assert blocks, f"no doctest blocks in {path}"
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, path.name, str(path), 0)
    flags = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1
    runner = doctest.DocTestRunner(optionflags=flags)
    out = []
    runner.run(test, out=out.append)
    return runner.summarize(verbose=False), "".join(out)


def test_training_page_examples_pass():
    result, report = run_doc_page()
    assert result.failed == 0, report
    assert result.attempted > 30
