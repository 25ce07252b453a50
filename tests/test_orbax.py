"""Units through orbax-checkpoint: save_orbax / restore_orbax and the orbax argument helpers.

Every test writes real orbax checkpoints (no mocks) into pytest's tmp_path; expected values
are the saved mantissas themselves (same unit) or a float64 NumPy conversion of them.
"""

from __future__ import annotations

import dataclasses
import os

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un

ocp = pytest.importorskip("orbax.checkpoint")
optax = pytest.importorskip("optax")


def _trained(in_unit=u.mV, dtype=jnp.float32):
    layer = un.BatchNorm1d((10, 3), in_unit=in_unit)
    x = (jax.random.normal(jax.random.PRNGKey(0), (8, 10, 3)) * 2.0 - 65.0).astype(dtype) * in_unit
    layer(x)
    return layer


def _fresh(in_unit):
    return un.BatchNorm1d((10, 3), in_unit=in_unit)


def _m(q):
    return np.asarray(q.mantissa if isinstance(q, u.Quantity) else q)


def test_same_unit_is_bit_equal(tmp_path):
    layer = _trained()
    un.save_orbax(tmp_path / "ck", layer)
    back = un.restore_orbax(tmp_path / "ck", _fresh(u.mV))
    for name in ("running_mean", "running_var"):
        got, want = getattr(back, name).value, getattr(layer, name).value
        assert got.unit == want.unit
        np.testing.assert_array_equal(_m(got), _m(want))
        assert _m(got).dtype == _m(want).dtype
    for k in ("scale", "bias"):
        np.testing.assert_array_equal(_m(back.weight.value[k]), _m(layer.weight.value[k]))
    assert back.in_unit == u.mV


def test_compatible_unit_is_converted(tmp_path):
    """The issue's example: mV statistics restored into a layer built for V."""
    layer = _trained()
    un.save_orbax(tmp_path / "ck", layer)
    target = _fresh(u.volt)
    target(jnp.ones((2, 10, 3)) * u.volt)
    back = un.restore_orbax(tmp_path / "ck", target)
    mean_mv = _m(layer.running_mean.value).astype(np.float64)
    var_mv2 = _m(layer.running_var.value).astype(np.float64)
    assert back.running_mean.value.unit == u.volt and back.running_var.value.unit == u.volt**2
    # float32 values multiplied by 1e-3 (1e-6): one rounding of the product
    np.testing.assert_allclose(_m(back.running_mean.value), mean_mv * 1e-3, rtol=2**-23, atol=0)
    np.testing.assert_allclose(_m(back.running_var.value), var_mv2 * 1e-6, rtol=2**-23, atol=0)
    # physically equal, not 1000x off
    np.testing.assert_allclose(
        back.running_mean.value.to_decimal(u.mV), layer.running_mean.value.to_decimal(u.mV), rtol=1e-6
    )


def test_other_dimension_names_leaf_and_units(tmp_path):
    layer = _trained()
    un.save_orbax(tmp_path / "ck", layer)
    target = _fresh(u.namp)
    before = _m(target.running_mean.value).copy()
    with pytest.raises(
        u.UnitMismatchError, match=r"leaf \.running_mean\.value was saved in voltage \(mV\)"
    ) as e:
        un.restore_orbax(tmp_path / "ck", target)
    assert "current (nA)" in str(e.value)
    # nothing half-restored: the target is as it was
    np.testing.assert_array_equal(_m(target.running_mean.value), before)
    assert target.running_mean.value.unit == u.namp


def test_plain_orbax_restore_of_a_unitnorm_checkpoint_is_an_error(tmp_path):
    """What a user gets who restores our checkpoint with orbax alone: an error, not numbers."""
    layer = _trained()
    un.save_orbax(tmp_path / "ck", layer)
    with pytest.raises(ValueError, match="pytree structure"):
        ocp.StandardCheckpointer().restore(os.fspath(tmp_path / "ck"), _fresh(u.volt))


def test_plain_orbax_checkpoint_is_refused_by_restore_orbax(tmp_path):
    """A checkpoint orbax wrote alone has no units: restore_orbax refuses it, it does not guess."""
    layer = _trained()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.fspath(tmp_path / "plain"), layer)
    with pytest.raises(ValueError, match="has no 'units' item.*plain orbax checkpoint records no units"):
        un.restore_orbax(tmp_path / "plain", _fresh(u.volt))


def test_async_checkpointer_and_manager(tmp_path):
    layer = _trained()
    un.save_orbax(tmp_path / "async", layer, asynchronous=True)
    back = un.restore_orbax(tmp_path / "async", _fresh(u.mV))
    np.testing.assert_array_equal(_m(back.running_mean.value), _m(layer.running_mean.value))
    tree = {"layer": layer, "w": jnp.arange(3.0) * u.uvolt}
    with ocp.CheckpointManager(os.fspath(tmp_path / "mngr")) as mngr:
        for step in range(2):
            mngr.save(step, args=un.orbax_save_args(tree))
        mngr.wait_until_finished()
        assert mngr.all_steps() == [0, 1]
        target = {"layer": _fresh(u.volt), "w": jnp.zeros(3) * u.nvolt}
        back = un.with_units(mngr.restore(1, args=un.orbax_restore_args(target)), target)
    np.testing.assert_allclose(_m(back["w"]), np.arange(3.0) * 1e3, rtol=2**-23)
    assert back["w"].unit == u.nvolt
    np.testing.assert_allclose(
        _m(back["layer"].running_mean.value),
        _m(layer.running_mean.value).astype(np.float64) * 1e-3,
        rtol=2**-23,
    )


def test_existing_path_is_not_overwritten_without_force(tmp_path):
    un.save_orbax(tmp_path / "ck", {"w": jnp.ones(2) * u.mV})
    with pytest.raises(ValueError, match="already exists"):
        un.save_orbax(tmp_path / "ck", {"w": jnp.zeros(2) * u.mV})
    un.save_orbax(tmp_path / "ck", {"w": jnp.zeros(2) * u.mV}, force=True)
    np.testing.assert_array_equal(_m(un.restore_orbax(tmp_path / "ck", {"w": jnp.ones(2) * u.mV})["w"]), 0.0)


@dataclasses.dataclass
class _Model:
    bn: un.BatchNorm0d
    gain: u.Quantity
    layers: list


jax.tree_util.register_dataclass(_Model, data_fields=["bn", "gain", "layers"], meta_fields=[])


def test_dataclass_list_and_bfloat16(tmp_path):
    bn = un.BatchNorm0d(2, in_unit=u.mV, momentum=0.0)
    bn(jnp.array([[1.0, 2.0], [3.0, 6.0]], dtype=jnp.bfloat16) * u.mV)
    model = _Model(bn, jnp.array([0.5], dtype=jnp.bfloat16) * u.siemens, [jnp.arange(2), un.RMSNorm(2)])
    un.save_orbax(tmp_path / "ck", model)
    same = un.restore_orbax(tmp_path / "ck", model)
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(model), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    target = _Model(
        un.BatchNorm0d(2, in_unit=u.volt), jnp.zeros(1, dtype=jnp.bfloat16) * u.msiemens, model.layers
    )
    back = un.restore_orbax(tmp_path / "ck", target)
    assert back.gain.unit == u.msiemens and back.gain.mantissa.dtype == jnp.bfloat16
    assert float(back.gain.mantissa[0]) == 500.0
    np.testing.assert_allclose(_m(back.bn.running_mean.value).astype(np.float64), [2e-3, 4e-3], rtol=2**-7)


def test_plain_array_against_quantity_is_an_error(tmp_path):
    un.save_orbax(tmp_path / "ck", {"w": jnp.ones(2)})
    with pytest.raises(u.UnitMismatchError, match=r"leaf \['w'\] was saved in dimensionless.*voltage \(mV\)"):
        un.restore_orbax(tmp_path / "ck", {"w": jnp.ones(2) * u.mV})
    # another structure: orbax's own error, before any value is read
    with pytest.raises(ValueError, match="tree structures do not match"):
        un.restore_orbax(tmp_path / "ck", {"v": jnp.ones(2)})


def test_optax_train_state(tmp_path):
    """A flax TrainState with an optax optimizer; its Quantity parameters and moments keep units."""
    train_state = pytest.importorskip("flax.training.train_state")
    params = {"bn": _trained(), "w": jnp.linspace(-1.0, 1.0, 4) * u.mV}
    tx = optax.adam(1e-3)

    def loss(p):
        return jnp.sum(p["w"].mantissa ** 2)

    state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
    grads = jax.grad(loss)(state.params)
    state = state.apply_gradients(grads=grads)
    un.save_orbax(tmp_path / "ts", state, asynchronous=True)

    same = un.restore_orbax(tmp_path / "ts", state)
    assert int(same.step) == 1
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    target_params = {"bn": _fresh(u.volt), "w": jnp.zeros(4) * u.volt}
    target = train_state.TrainState.create(apply_fn=None, params=target_params, tx=tx)
    back = un.restore_orbax(tmp_path / "ts", target)
    np.testing.assert_allclose(
        _m(back.params["w"]), _m(state.params["w"]).astype(np.float64) * 1e-3, rtol=2**-23
    )
    mu = back.opt_state[0].mu["w"]
    assert mu.unit == u.volt
    np.testing.assert_allclose(_m(mu), _m(state.opt_state[0].mu["w"]).astype(np.float64) * 1e-3, rtol=2**-23)
    np.testing.assert_allclose(
        _m(back.params["bn"].running_var.value),
        _m(state.params["bn"].running_var.value).astype(np.float64) * 1e-6,
        rtol=2**-23,
    )


def test_flax_nnx_module(tmp_path):
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, in_unit):
            self.norm = nnx.data(un.BatchNorm0d(3, in_unit=in_unit))
            self.linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

    net = Net(u.mV)
    net.norm(jnp.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]]) * u.mV)
    un.save_orbax(tmp_path / "nnx", net)
    back = un.restore_orbax(tmp_path / "nnx", Net(u.volt))
    assert isinstance(back, Net)
    np.testing.assert_allclose(
        _m(back.norm.running_mean.value),
        _m(net.norm.running_mean.value).astype(np.float64) * 1e-3,
        rtol=2**-23,
    )
    np.testing.assert_array_equal(np.asarray(back.linear.kernel[...]), np.asarray(net.linear.kernel[...]))
    # nnx.update cannot write into a Quantity (nnx sees it as an immutable node): the restored
    # module is the one to use, or its layer put back with nnx.data
    live = Net(u.volt)
    live.norm = nnx.data(back.norm)
    np.testing.assert_array_equal(_m(live.norm.running_mean.value), _m(back.norm.running_mean.value))
    assert live.norm.running_mean.value.unit == u.volt


def test_brainstate_module(tmp_path):
    brainstate = pytest.importorskip("brainstate")

    class Net(brainstate.nn.Module):
        def __init__(self, in_unit):
            super().__init__()
            self.norm = un.BatchNorm0d(
                3, in_unit=in_unit, param_type=brainstate.ParamState, mean_type=brainstate.BatchState
            )
            self.gain = brainstate.ParamState(jnp.ones(3) * in_unit)

    net = Net(u.mV)
    net.norm(jnp.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]]) * u.mV)

    def flat(model):  # brainstate's own path to each State: "norm/running_mean", ...
        return {"/".join(map(str, k)): s for k, s in brainstate.graph.states(model).items()}

    un.save_orbax(tmp_path / "bs", {k: s.value for k, s in flat(net).items()})
    live = Net(u.volt)
    states = flat(live)
    back = un.restore_orbax(tmp_path / "bs", {k: s.value for k, s in states.items()})
    for k, s in states.items():
        s.value = back[k]
    assert live.norm.running_mean.value.unit == u.volt
    np.testing.assert_allclose(
        _m(live.norm.running_mean.value),
        _m(net.norm.running_mean.value).astype(np.float64) * 1e-3,
        rtol=2**-23,
    )
    np.testing.assert_allclose(_m(live.gain.value), 1e-3, rtol=2**-23)


def test_corrupt_units_item_is_named(tmp_path):
    un.save_orbax(tmp_path / "ck", {"w": jnp.ones(2) * u.mV})
    target = {"w": jnp.ones(2) * u.mV}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
        restored = ckpt.restore(os.fspath(tmp_path / "ck"), args=un.orbax_restore_args(target))
    bad = {"state": restored["state"], "units": dict(restored["units"], version=99)}
    with pytest.raises(ValueError, match="field 'version' is 99"):
        un.with_units(bad, target)
    with pytest.raises(ValueError, match="expected the items 'state' and 'units'"):
        un.with_units({"state": restored["state"]}, target)


def test_integer_leaf_is_not_truncated(tmp_path):
    un.save_orbax(tmp_path / "ck", {"n": jnp.array([3, 7]) * u.mV})
    back = un.restore_orbax(tmp_path / "ck", {"n": jnp.zeros(2, dtype=jnp.int32) * u.uvolt})
    np.testing.assert_array_equal(_m(back["n"]), [3000, 7000])  # integer factor: exact
    with pytest.raises(TypeError, match=r"leaf \['n'\] holds integers .* needs floats"):
        un.restore_orbax(tmp_path / "ck", {"n": jnp.zeros(2, dtype=jnp.int32) * u.volt})


def test_flax_nnx_registered_layer_needs_no_nnx_data(tmp_path):
    """The checkpoint page's alternative to nnx.data: register the layer class with nnx once."""
    nnx = pytest.importorskip("flax.nnx")
    nnx.register_data_type(un.RMSNorm)

    class Net(nnx.Module):
        def __init__(self):
            self.norm = un.RMSNorm(3, scale_init=un.init.Constant(2.0 * u.mV))

    net = Net()
    un.save_orbax(tmp_path / "nnx", net)
    target = Net()
    target.norm = un.RMSNorm(3, scale_init=un.init.Constant(1.0 * u.volt))
    back = un.restore_orbax(tmp_path / "nnx", target)
    leaves = [x for x in jax.tree_util.tree_leaves(back.norm, is_leaf=lambda q: isinstance(q, u.Quantity))]
    scale = next(x for x in leaves if isinstance(x, u.Quantity))
    assert scale.unit == u.volt
    np.testing.assert_allclose(_m(scale), 2e-3, rtol=2**-23)
