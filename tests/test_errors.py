"""Every bad input of the core issue: error type, a message naming both sides, and no State touched."""

import re

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un


def snapshot(layer):
    leaves = jax.tree_util.tree_leaves(layer)
    return [np.array(leaf) for leaf in leaves], jax.tree_util.tree_structure(layer), layer.in_unit


def trained_mv_layer():
    layer = un.BatchNorm1d((4, 3), in_unit=u.mV, momentum=0.9)
    layer(jnp.asarray(np.random.default_rng(0).normal(-65, 3, (5, 4, 3)), jnp.float32) * u.mV)
    return layer


def unitless_layer():
    layer = un.BatchNorm1d((4, 3))
    layer(jnp.ones((2, 4, 3)))
    return layer


CALL_ERRORS = [
    # (id, layer factory, call, error type, patterns that must all appear)
    (
        "wrong rank",
        trained_mv_layer,
        lambda layer: layer(jnp.ones((2, 2, 4, 3)) * u.mV),
        ValueError,
        [r"expected input of shape \(batch, 4, 3\) or \(4, 3\)", r"got \(2, 2, 4, 3\)"],
    ),
    (
        "wrong shape",
        trained_mv_layer,
        lambda layer: layer(jnp.ones((8, 3)) * u.mV),
        ValueError,
        [r"\(batch, 4, 3\)", r"got \(8, 3\)"],
    ),
    (
        "unit of another dimension",
        trained_mv_layer,
        lambda layer: layer(jnp.ones((2, 4, 3)) * u.nA),
        u.UnitMismatchError,
        [r"BatchNorm1d\(in_unit=mV\)", r"current \(nA\)"],
    ),
    (
        "plain array into a mV layer",
        trained_mv_layer,
        lambda layer: layer(jnp.ones((2, 4, 3))),
        u.UnitMismatchError,
        ["plain array", r"voltage \(mV\)"],
    ),
    (
        "Quantity into a layer fixed as unitless",
        unitless_layer,
        lambda layer: layer(jnp.ones((2, 4, 3)) * u.mV),
        u.UnitMismatchError,
        [r"voltage \(mV\)", "dimensionless"],
    ),
    (
        "mask of the wrong shape",
        trained_mv_layer,
        lambda layer: layer(jnp.ones((2, 4, 3)) * u.mV, mask=jnp.ones((5, 4, 3), bool)),
        ValueError,
        [r"mask of shape \(5, 4, 3\)", r"input shape \(2, 4, 3\)"],
    ),
    (
        "string input",
        trained_mv_layer,
        lambda layer: layer(np.array([["a"]])),
        TypeError,
        ["numeric", "str"],
    ),
    (
        "bool input",
        unitless_layer,
        lambda layer: layer(jnp.ones((2, 4, 3), bool)),
        TypeError,
        ["numeric", "bool"],
    ),
    (
        "Quantity epsilon of the wrong dimension met at call time",
        lambda: un.BatchNorm1d((4, 3), epsilon=1e-5 * u.mV),
        lambda layer: layer(jnp.ones((2, 4, 3)) * u.mV),
        u.UnitMismatchError,
        [r"epsilon", r"mV\^2", r"voltage \(mV\)"],
    ),
]


@pytest.mark.parametrize("case", CALL_ERRORS, ids=[c[0] for c in CALL_ERRORS])
def test_bad_call_raises_and_changes_nothing(case):
    _, make, call, error, patterns = case
    layer = make()
    before = snapshot(layer)
    with pytest.raises(error) as info:
        call(layer)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))
    after = snapshot(layer)
    assert after[1] == before[1] and after[2] == before[2]
    for a, b in zip(after[0], before[0], strict=True):
        np.testing.assert_array_equal(a, b)


CONSTRUCTION_ERRORS = [
    (
        "integer output dtype",  # it would truncate the normalized values to zeros
        dict(dtype=jnp.int32),
        TypeError,
        [r"dtype must be a floating dtype", r"got int32"],
    ),
    (
        "scale and bias units disagree",
        dict(scale_initializer=un.init.Constant(1 * u.mV), bias_initializer=un.init.Constant(1 * u.nA)),
        u.UnitMismatchError,
        [r"scale's unit, voltage \(mV\)", r"current \(nA\)"],
    ),
    (
        "bias with a unit but dimensionless scale",
        dict(bias_initializer=un.init.Constant(-65 * u.mV)),
        u.UnitMismatchError,
        ["dimensionless", r"voltage \(mV\)"],
    ),
    (
        "Quantity epsilon of the wrong dimension",
        dict(in_unit=u.mV, epsilon=1e-5 * u.mV),
        u.UnitMismatchError,
        [r"epsilon", r"mV\^2", r"voltage \(mV\)"],
    ),
    ("negative epsilon", dict(epsilon=-1.0), ValueError, [">= 0", "-1.0"]),
    ("momentum above one", dict(momentum=1.5), ValueError, [r"\[0, 1\]", "1.5"]),
    (
        "in_size of the wrong rank",
        dict(in_size=(3,)),
        ValueError,
        ["2 entries", r"length, channels", r"\(3,\)"],
    ),
    ("in_unit not a unit", dict(in_unit=1 * u.mV), TypeError, ["brainunit Unit", "Quantity"]),
    (
        "initializer of the wrong shape",
        dict(scale_initializer=jnp.ones(5)),
        ValueError,
        [r"\(5,\)", r"\(3,\)", "scale_initializer"],
    ),
]


@pytest.mark.parametrize("case", CONSTRUCTION_ERRORS, ids=[c[0] for c in CONSTRUCTION_ERRORS])
def test_bad_configuration_raises_at_construction(case):
    _, kwargs, error, patterns = case
    kwargs = {"in_size": (4, 3), **kwargs}
    with pytest.raises(error) as info:
        un.BatchNorm1d(**kwargs)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


def test_unit_errors_are_brainunit_errors():
    layer = trained_mv_layer()
    with pytest.raises(u.UnitMismatchError):
        layer(jnp.ones((2, 4, 3)) * u.second)
    assert issubclass(un.UnitError, u.UnitMismatchError)
