"""nan_policy on a real recording with gaps, and batches too small for batch statistics.

The recording is the test-signal EDF file shipped inside pyedflib's wheel (11 channels in uV,
200 Hz), read with pyedflib itself; a dropout is simulated by overwriting a stretch with NaN.
References are float64 NumPy formulas on the recording with the gap cut out.
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _oracle import assert_close_f32, stats_bounds
from jax.experimental import checkify

import unitnorm as un
from unitnorm import functional as F

pyedflib = pytest.importorskip("pyedflib")
edf_data = pytest.importorskip("pyedflib.data")

GAP = slice(1000, 1400)  # 2 s of dropout on every channel
PARTIAL_GAP = (slice(2500, 2620), 3)  # a shorter one on channel 3 only
EDF_UNITS = {"uV": u.uvolt}


@pytest.fixture(scope="module")
def recording():
    """(samples, channels) float64 in the file's unit, read with pyedflib."""
    with pyedflib.EdfReader(edf_data.get_generator_filename()) as f:
        units = {f.getPhysicalDimension(i) for i in range(f.signals_in_file)}
        assert units == {"uV"}
        data = np.stack([f.readSignal(i, 0, 4000) for i in range(f.signals_in_file)], axis=1)
    assert data.shape == (4000, 11) and np.isfinite(data).all()
    data.setflags(write=False)
    return data, EDF_UNITS["uV"]


@pytest.fixture(scope="module")
def gapped(recording):
    data, unit = recording
    x = data.copy()
    x[GAP] = np.nan
    x[PARTIAL_GAP] = np.nan
    x[3000, 5] = np.inf  # a saturated sample
    x[3001, 5] = -np.inf
    x.setflags(write=False)
    return x, unit


def as_quantity(x, unit):
    return jnp.asarray(x, jnp.float32) * unit


def nan_stats(x, axis=0):
    """float64 mean and biased variance of the finite values (the recording without its gaps)."""
    x = np.where(np.isfinite(x), x, np.nan)
    return np.nanmean(x, axis=axis), np.nanvar(x, axis=axis)


@pytest.mark.parametrize("fast", [True, False])
def test_omit_equals_the_recording_without_the_gap(recording, gapped, fast):
    data, unit = recording
    x, _ = gapped
    mean, var = F.compute_stats(as_quantity(x, unit), 0, nan_policy="omit", use_fast_variance=fast)
    assert mean.unit == unit and var.unit == unit**2
    # the same recording with the full-width gap cut out (channels 3 and 5 lose more)
    cut = np.delete(data, np.arange(GAP.start, GAP.stop), axis=0)
    ref_mean, ref_var = F.compute_stats(as_quantity(cut, unit), 0, use_fast_variance=fast)
    # both are float32 sums of ~3600 squares in two programs (the masked path shifts by the mean of
    # the counted values, the unmasked one by the first value): 0.32 of a shared rtol=5e-5 was used
    # between them. Each is compared with the float64 statistics of what it saw, within their bound.
    cut32 = np.asarray(cut, np.float32).astype(np.float64)
    mean_err, var_err = stats_bounds(cut32, 0)
    full = np.array([0, 1, 2, 4, 6, 7, 8, 9, 10])
    for got_mean, got_var in ((mean, var), (ref_mean, ref_var)):
        for c in full:  # per channel: their variances span 200 to 1e4 uV^2
            assert_close_f32(np.asarray(got_mean.mantissa)[c], cut32[:, c].mean(), float(mean_err[0, c]))
            assert_close_f32(np.asarray(got_var.mantissa)[c], cut32[:, c].var(), float(var_err[0, c]))
    # and every channel (the partial gap and the infinities included) against float64 NumPy
    m64, v64 = nan_stats(x)
    np.testing.assert_allclose(np.asarray(mean.mantissa), m64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(var.mantissa), v64, rtol=5e-5)  # float32 sums of 3500 squares


def test_propagate_is_the_default(gapped):
    x, unit = gapped
    mean, var = F.compute_stats(as_quantity(x, unit), 0)
    assert np.isnan(np.asarray(mean.mantissa)).all()  # every channel has the full-width gap
    mean_p, _ = F.compute_stats(as_quantity(x[2000:], unit), 0, nan_policy="propagate")
    bad = ~np.isfinite(np.asarray(mean_p.mantissa))
    assert bad.tolist() == [c in (3, 5) for c in range(11)]
    assert un.BatchNorm0d(3).nan_policy == "propagate"


def test_raise_names_the_count_and_first_position(gapped):
    x, unit = gapped
    with pytest.raises(ValueError, match=r"compute_stats: nan_policy='raise' expected finite input") as info:
        F.compute_stats(as_quantity(x, unit), 0, nan_policy="raise")
    n_bad = int((~np.isfinite(x)).sum())
    assert f"got {n_bad} non-finite value(s)" in str(info.value)
    assert "(1000, 0)" in str(info.value)
    # masked-out gaps are not counted, so nothing is raised
    mask = np.isfinite(x)
    mean, _ = F.compute_stats(as_quantity(x, unit), 0, nan_policy="raise", mask=mask)
    np.testing.assert_allclose(np.asarray(mean.mantissa), nan_stats(x)[0], rtol=1e-5, atol=1e-4)


def test_bad_policy_name():
    with pytest.raises(ValueError, match=r"nan_policy must be 'propagate', 'omit' or 'raise', got 'ignore'"):
        F.compute_stats(jnp.ones(3), 0, nan_policy="ignore")
    with pytest.raises(ValueError, match=r"BatchNorm0d: nan_policy must be .* got None"):
        un.BatchNorm0d(3, nan_policy=None)
    layer = un.BatchNorm0d(3)
    with pytest.raises(ValueError, match=r"BatchNorm0d: nan_policy must be .* got 'skip'"):
        layer(jnp.ones((2, 3)), nan_policy="skip")


def epochs(x, length=500):
    """Cut (samples, channels) into a batch of epochs (batch, length, channels)."""
    n = x.shape[0] // length
    return x[: n * length].reshape(n, length, x.shape[1])


def test_layer_omit_matches_numpy_over_a_recording(gapped):
    x, unit = gapped
    batches = epochs(x)  # (8, 500, 11): the gap lies in epochs 2 and 3
    layer = un.BatchNorm1d((500, 11), momentum=0.9, nan_policy="omit", in_unit=u.mV)
    rm, rv = np.zeros(11), np.ones(11)
    for step in range(0, 8, 2):
        b = batches[step : step + 2]
        y = layer(as_quantity(b, unit))
        b_mv = b * 1e-3  # the layer's reference unit
        mean, var = nan_stats(b_mv.reshape(-1, 11))
        rm, rv = 0.9 * rm + 0.1 * mean, 0.9 * rv + 0.1 * var
        y = np.asarray(y)
        finite = np.isfinite(b)
        assert np.array_equal(np.isfinite(y), finite)  # non-finite samples stay non-finite
        ref = (b_mv - mean) / np.sqrt(var + 1e-5)
        np.testing.assert_allclose(y[finite], ref[finite], rtol=1e-4, atol=1e-4)
        assert np.isnan(y[np.isnan(b)]).all()
    np.testing.assert_allclose(np.asarray(layer.running_mean.value.mantissa), rm, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(layer.running_var.value.mantissa), rv, rtol=1e-5)
    # in evaluation the running statistics normalize; the gap still comes out as NaN
    y = np.asarray(layer(as_quantity(batches[2:4], unit), training=False))
    assert np.array_equal(np.isfinite(y), np.isfinite(batches[2:4]))


def test_omit_keeps_the_running_stats_of_a_channel_that_is_all_gap(gapped):
    x, unit = gapped
    batch = epochs(x[1000:1400].copy(), length=200)  # (2, 200, 11): all NaN
    batch[:, :, 0] = 1.0 + np.arange(200)  # except channel 0
    layer = un.BatchNorm1d((200, 11), momentum=0.5, nan_policy="omit")
    layer(as_quantity(batch, unit))
    rm = np.asarray(layer.running_mean.value.mantissa)
    rv = np.asarray(layer.running_var.value.mantissa)
    assert rm[1:].tolist() == [0.0] * 10 and rv[1:].tolist() == [1.0] * 10
    np.testing.assert_allclose(rm[0], 0.5 * 100.5, rtol=1e-6)
    assert np.isfinite(rm).all() and np.isfinite(rv).all()


def test_functional_batch_norm_omit(gapped):
    x, unit = gapped
    b = x[900:1500]
    y, mean, var = F.batch_norm(
        as_quantity(b, unit),
        jnp.zeros(11) * u.uvolt,
        jnp.ones(11) * u.uvolt**2,
        training=True,
        momentum=0.0,
        nan_policy="omit",
    )
    m64, v64 = nan_stats(b)
    np.testing.assert_allclose(np.asarray(mean.mantissa), m64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(var.mantissa), v64, rtol=1e-5)
    assert np.array_equal(np.isfinite(np.asarray(y)), np.isfinite(b))


def snapshot(layer):
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    return [np.asarray(leaf).tobytes() for leaf in leaves], treedef, layer.in_unit


@pytest.mark.parametrize("training", [True, False])
def test_raise_before_any_state_is_written(recording, gapped, training):
    data, unit = recording
    x, _ = gapped
    layer = un.BatchNorm1d((500, 11), nan_policy="raise", momentum=None)
    layer(as_quantity(epochs(data)[:2], unit))  # a clean batch: adopts uV, counts one batch
    before = snapshot(layer)
    with pytest.raises(
        ValueError,
        match=r"BatchNorm1d: nan_policy='raise' expected finite input, "
        r"got 4400 non-finite value\(s\) \(the first at index \(0, 0, 0\)\)",
    ):
        layer(as_quantity(epochs(x)[2:3], unit), training=training)
    assert snapshot(layer) == before
    # a fresh layer does not adopt the unit of a refused batch
    fresh = un.BatchNorm1d((500, 11), nan_policy="raise")
    with pytest.raises(ValueError, match="non-finite"):
        fresh(as_quantity(epochs(x)[2:4], u.mV))
    assert fresh.in_unit is None
    # the call keyword overrides the layer's policy
    layer(as_quantity(epochs(x)[2:4], unit), nan_policy="omit")
    assert set(np.asarray(layer.num_batches_tracked.value).ravel().tolist()) == {2.0}  # per feature


def test_raise_under_jit_keeps_the_running_stats_and_reports_through_checkify(recording, gapped):
    data, unit = recording
    x, _ = gapped
    clean, dirty = as_quantity(epochs(data)[:2], unit), as_quantity(epochs(x)[4:6], unit)  # channel 3 gap
    layer = un.BatchNorm1d((500, 11), nan_policy="raise", in_unit=u.uvolt)

    def step(layer, x):
        return layer(x), layer

    _, layer = jax.jit(step)(layer, clean)
    before = np.asarray(layer.running_mean.value.mantissa)
    _, after = jax.jit(step)(layer, dirty)  # cannot raise under tracing...
    after_mean = np.asarray(after.running_mean.value.mantissa)
    assert np.isfinite(after_mean).all()  # ...but the gap does not poison the statistics:
    assert after_mean[3] == before[3]  # the channel holding it keeps its running mean
    others = [c for c in range(11) if c != 3]
    assert not np.array_equal(after_mean[others], before[others])  # the others learn
    err, _ = checkify.checkify(jax.jit(step), errors=checkify.user_checks)(layer, dirty)
    with pytest.raises(checkify.JaxRuntimeError, match="nan_policy='raise' expected finite input"):
        err.throw()
    err, _ = checkify.checkify(jax.jit(step), errors=checkify.user_checks)(layer, clean)
    assert err.get() is None


def test_propagate_matches_flax_and_poisons_the_statistics(gapped):
    nnx = pytest.importorskip("flax.nnx")
    x, _ = gapped
    b = jnp.asarray(x[900:1100], jnp.float32)
    ours = un.BatchNorm0d(11)
    theirs = nnx.BatchNorm(11, momentum=0.99, epsilon=1e-5, rngs=nnx.Rngs(0))
    y_ours, y_theirs = ours(b), theirs(b, use_running_average=False)
    assert np.array_equal(np.isnan(np.asarray(y_ours)), np.isnan(np.asarray(y_theirs)))
    assert (
        np.isnan(np.asarray(ours.running_mean.value)).all() and np.isnan(np.asarray(theirs.mean[...])).all()
    )


# ----------------------------------------------------------------------------
# a batch of one: PyTorch's ValueError, not brainstate's and flax's silent zeros


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: un.BatchNorm0d(4), (1, 4)),
        (lambda: un.BatchNorm0d(4), (4,)),  # unbatched
        (lambda: un.BatchNorm2d((1, 1, 4)), (1, 1, 1, 4)),
        # batch statistics in evaluation too when there are no running ones
        (lambda: un.BatchNorm1d((1, 4), track_running_stats=False).eval(), (1, 1, 4)),
    ],
)
def test_batch_of_one_is_a_value_error(make, shape):
    layer = make()
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"expected more than 1 value per feature") as info:
        layer(jnp.ones(shape) * u.mV)
    assert f"got input of shape {shape}" in str(info.value)
    assert snapshot(layer) == before


def test_batch_of_one_is_fine_when_the_statistics_span_other_axes():
    layer = un.BatchNorm1d((50, 2))
    y = layer(jnp.asarray(np.random.default_rng(0).normal(size=(1, 50, 2)), jnp.float32))
    np.testing.assert_allclose(np.asarray(y).mean((0, 1)), 0.0, atol=1e-5)
    # and in evaluation with running statistics a single sample is normal use
    out = un.BatchNorm0d(4).eval()(jnp.ones((1, 4)))
    np.testing.assert_allclose(np.asarray(out), 1 / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_functional_batch_of_one():
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per feature"):
        F.batch_norm(jnp.ones((1, 3)), jnp.zeros(3), jnp.ones(3), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per feature"):
        F.batch_norm(jnp.ones((1, 3)), None, None, training=False)
    y, _, _ = F.batch_norm(jnp.ones((1, 3)), jnp.zeros(3), jnp.ones(3), training=False)
    assert y.shape == (1, 3)


def test_omit_under_jit_equals_eager(gapped):
    x, unit = gapped
    batch = as_quantity(epochs(x)[2:4], unit)
    eager = un.BatchNorm1d((500, 11), nan_policy="omit", in_unit=u.uvolt)
    jitted = un.BatchNorm1d((500, 11), nan_policy="omit", in_unit=u.uvolt)
    y_eager = eager(batch)
    y_jit, jitted = jax.jit(lambda layer, x: (layer(x), layer))(jitted, batch)
    np.testing.assert_allclose(np.asarray(y_jit), np.asarray(y_eager), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(jitted.running_var.value.mantissa), np.asarray(eager.running_var.value.mantissa), rtol=1e-6
    )
    mean, var = jax.jit(lambda m: F.compute_stats(m, 0, nan_policy="omit"))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(mean), nan_stats(x)[0], rtol=1e-5, atol=1e-4)
