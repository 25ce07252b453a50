"""Checkpoints with units: state_dict/load_state_dict, unitnorm.save/load, atomic writes, hostile files."""

import json
import os
import re
import zipfile

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unitnorm as un
from unitnorm import _checkpoint


def rng_data(shape, seed=0, loc=-65.0, scale=4.0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, scale, shape), dtype)


def assert_bitwise_equal(a, b):
    """Same pytree structure (config, units, dtypes of States) and bit-identical leaves."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def snapshot(layer):
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    return [np.asarray(leaf).tobytes() for leaf in leaves], treedef, getattr(layer, "in_unit", None)


def trained(layer, shape, unit=u.mV, steps=3):
    for step in range(steps):
        layer(rng_data(shape, seed=step) * unit)
    return layer


LAYERS = {
    "BatchNorm0d": lambda: trained(un.BatchNorm0d(3, momentum=0.9), (6, 3)),
    "BatchNorm1d-cumulative": lambda: trained(un.BatchNorm1d((5, 3), momentum=None, in_unit=u.mV), (4, 5, 3)),
    "BatchNorm2d-mV-affine": lambda: trained(
        un.BatchNorm2d(
            (3, 3, 2),
            scale_initializer=un.init.Constant(2.0 * u.mV),
            bias_initializer=un.init.Constant(-65.0 * u.mV),
        ),
        (2, 3, 3, 2),
        unit=u.volt,
    ),
    "BatchNorm3d-bf16": lambda: trained(un.BatchNorm3d((2, 2, 2, 2), dtype=jnp.bfloat16), (2, 2, 2, 2, 2)),
    "BatchNorm1d-no-running": lambda: trained(un.BatchNorm1d((4, 3), track_running_stats=False), (2, 4, 3)),
    "BatchNorm1d-no-affine-eval": lambda: trained(un.BatchNorm1d((4, 3), affine=False), (2, 4, 3)).eval(),
    "LayerNorm": lambda: trained(un.LayerNorm((4, 3)), (2, 4, 3)),
    "RMSNorm": lambda: trained(un.RMSNorm((4, 3), in_unit=u.mV), (2, 4, 3)),
    "GroupNorm": lambda: trained(un.GroupNorm((4, 4), num_groups=2), (2, 4, 4)),
    "InstanceNorm": lambda: trained(un.InstanceNorm((4, 3)), (2, 4, 3)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_round_trip_is_bit_exact(tmp_path, name):
    layer = LAYERS[name]()
    path = tmp_path / "layer.npz"
    un.save(path, layer)
    back = un.load(path)
    assert type(back) is type(layer)
    assert_bitwise_equal(back, layer)  # States, units, dtypes and the whole static configuration
    assert back.training == layer.training and back.in_unit == layer.in_unit
    # and it behaves identically afterwards, in both modes
    shape = (2, *layer.in_size)
    x = rng_data(shape, seed=42) * u.mV
    modes = (
        [{"training": True}, {"training": False}] if isinstance(layer, un.BatchNorm0d.__mro__[1]) else [{}]
    )
    for mode in modes:
        np.testing.assert_array_equal(
            np.asarray(u.get_mantissa(back(x, **mode))), np.asarray(u.get_mantissa(layer(x, **mode)))
        )
    assert_bitwise_equal(back, layer)


def test_state_dict_names_and_values():
    layer = trained(un.BatchNorm1d((4, 3), momentum=None, in_unit=u.mV), (2, 4, 3))
    d = layer.state_dict()
    assert list(d) == ["weight.scale", "weight.bias", "running_mean", "running_var", "num_batches_tracked"]
    assert d["running_mean"].unit == u.mV and d["running_var"].unit == u.mV**2
    assert np.asarray(d["num_batches_tracked"]).tolist() == [3.0] * 3  # per feature
    d["running_mean"] = d["running_mean"] * 0  # the dict is a copy: the layer is untouched
    assert float(jnp.abs(layer.running_mean.value.mantissa).min()) > 1


def test_load_state_dict_converts_a_compatible_unit():
    source = trained(un.BatchNorm0d(3, in_unit=u.volt, momentum=0.5), (8, 3), unit=u.volt)
    target = un.BatchNorm0d(3, in_unit=u.mV)
    target.load_state_dict(source.state_dict())
    assert target.running_mean.value.unit == u.mV and target.running_var.value.unit == u.mV**2
    np.testing.assert_allclose(
        np.asarray(target.running_mean.value.mantissa),
        np.asarray(source.running_mean.value.mantissa) * 1e3,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(target.running_var.value.mantissa),
        np.asarray(source.running_var.value.mantissa) * 1e6,
        rtol=1e-6,
    )
    # same output in eval for the same physical input
    x = rng_data((4, 3), seed=7) * u.mV
    np.testing.assert_allclose(
        np.asarray(target(x, training=False)),
        np.asarray(source(x.in_unit(u.volt), training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_layer_without_reference_unit_adopts_the_loaded_one():
    source = trained(un.BatchNorm0d(3), (8, 3))  # adopted mV from its first call
    target = un.BatchNorm0d(3)
    assert target.in_unit is None
    target.load_state_dict(source.state_dict())
    assert target.in_unit == u.mV
    assert_bitwise_equal(target.running_var, source.running_var)
    with pytest.raises(u.UnitMismatchError, match=r"current \(nA\)"):
        target(jnp.ones((2, 3)) * u.nA)


def good_state(layer):
    return dict(layer.state_dict())


STATE_DICT_ERRORS = [
    # (id, change to the state dict, error type, patterns naming the field)
    (
        "shape",
        lambda d: {**d, "running_var": jnp.ones(4) * u.mV**2},
        ValueError,
        [r"field 'running_var'", r"expected shape \(3,\)", r"got \(4,\)"],
    ),
    (
        "unit dimension",
        lambda d: {**d, "running_mean": jnp.zeros(3) * u.nA},
        u.UnitMismatchError,
        [r"field 'running_mean'", r"voltage \(mV\)", r"current \(nA\)"],
    ),
    (
        "variance in the mean's unit",
        lambda d: {**d, "running_var": jnp.ones(3) * u.mV},
        u.UnitMismatchError,
        [r"field 'running_var'", r"mV\^2"],
    ),
    (
        "plain array where a unit is expected",
        lambda d: {**d, "running_mean": jnp.zeros(3)},
        u.UnitMismatchError,
        [r"field 'running_mean'", "dimensionless"],
    ),
    (
        "unit on the dimensionless scale",
        lambda d: {**d, "weight.scale": jnp.ones(3) * u.mV},
        u.UnitMismatchError,
        [r"field 'weight.scale'", "dimensionless", r"voltage \(mV\)"],
    ),
    (
        "missing field",
        lambda d: {k: v for k, v in d.items() if k != "running_var"},
        ValueError,
        [r"missing \['running_var'\]"],
    ),
    (
        "another layer type (LayerNorm's fields)",
        lambda d: un.LayerNorm(3).state_dict(),
        ValueError,
        [r"missing \['running_mean', 'running_var'\]", r"expected the fields"],
    ),
    (
        "unexpected field",
        lambda d: {**d, "num_batches_tracked": jnp.asarray(3)},
        ValueError,
        [r"unexpected \['num_batches_tracked'\]"],
    ),
    (
        "strings",
        lambda d: {**d, "running_mean": np.array(["a", "b", "c"])},
        TypeError,
        [r"numeric", "str"],
    ),
    ("not a dict", lambda d: list(d.values()), TypeError, [r"expected a dict", "list"]),
]


@pytest.mark.parametrize("case", STATE_DICT_ERRORS, ids=[c[0] for c in STATE_DICT_ERRORS])
def test_bad_state_dict_names_the_field_and_changes_nothing(case):
    _, change, error, patterns = case
    layer = trained(un.BatchNorm0d(3, in_unit=u.mV), (8, 3))
    before = snapshot(layer)
    with pytest.raises(error) as info:
        layer.load_state_dict(change(good_state(layer)))
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))
    assert snapshot(layer) == before


def test_failed_load_leaves_an_unfixed_layer_unfixed():
    layer = un.BatchNorm0d(3)
    d = trained(un.BatchNorm0d(3), (8, 3)).state_dict()
    d["running_var"] = jnp.ones(3) * u.nA**2  # mean in mV, variance in nA^2
    with pytest.raises(u.UnitMismatchError, match="field 'running_var'"):
        layer.load_state_dict(d)
    assert layer.in_unit is None
    assert snapshot(layer) == snapshot(un.BatchNorm0d(3))


def test_load_into_checks_class_and_structure(tmp_path):
    path = tmp_path / "bn.npz"
    un.save(path, trained(un.BatchNorm1d((5, 3), in_unit=u.mV), (2, 5, 3)))
    for target, pattern in [
        (un.BatchNorm0d(3), r"field 'class'.*BatchNorm1d, expected BatchNorm0d"),
        (un.BatchNorm1d((4, 3)), r"config field 'in_size'.*\(5, 3\).*\(4, 3\)"),
        (un.BatchNorm1d((5, 3), affine=False), r"config field 'affine'"),
    ]:
        before = snapshot(target)
        with pytest.raises(ValueError, match=pattern):
            un.load(path, into=target)
        assert snapshot(target) == before
    # hyperparameters may differ; units convert
    target = un.BatchNorm1d((5, 3), in_unit=u.uvolt, momentum=0.5, epsilon=1e-3)
    assert un.load(path, into=target) is target
    saved = un.load(path)
    np.testing.assert_allclose(
        np.asarray(target.running_mean.value.mantissa),
        np.asarray(saved.running_mean.value.mantissa) * 1e3,
        rtol=1e-6,
    )
    assert target.momentum == 0.5 and target.epsilon == 1e-3
    un.save(path, {"a": jnp.ones(2)})
    with pytest.raises(ValueError, match="holds a dict, not a layer"):
        un.load(path, into=target)


def test_tree_round_trip_keeps_types_dtypes_and_units(tmp_path):
    tree = {
        "step": 7,
        "lr": 1e-3,
        "flag": True,
        "note": "gap at 12 s",
        "nothing": None,
        "f32": rng_data((3, 2)),
        "bf16_mV": jnp.asarray([1.5, -2.25, 3e-3], jnp.bfloat16) * u.mV,
        "f16": jnp.asarray([65504.0, -1e-4], jnp.float16),
        "int": jnp.arange(4, dtype=jnp.int32),
        "np64": np.linspace(0, 1, 5),
        "np_scalar": np.float32(2.5),
        "c64": jnp.asarray([1 + 2j], jnp.complex64),
        "compound": jnp.ones(2) * (u.nA / u.cm**2),
        "psd": jnp.ones(2) * (u.uvolt**2 / u.hertz),
        "hours": jnp.ones(1) * u.hour,
        "nested": [(jnp.zeros(1), {"deep": jnp.ones(1) * u.ftesla})],
        "state": un.BatchState(jnp.ones(2) * u.mV**2),
        "layer": trained(un.BatchNorm0d(2), (4, 2)),
    }
    path = tmp_path / "tree.npz"
    un.save(path, tree)
    back = un.load(path)
    assert list(back) == list(tree)
    assert back["step"] == 7 and type(back["step"]) is int
    assert back["lr"] == 1e-3 and back["flag"] is True and back["note"] == "gap at 12 s"
    assert back["nothing"] is None
    assert isinstance(back["np64"], np.ndarray) and back["np64"].dtype == np.float64
    assert type(back["np_scalar"]) is np.float32
    assert isinstance(back["f32"], jax.Array)
    assert isinstance(back["nested"], list) and isinstance(back["nested"][0], tuple)
    assert type(back["state"]) is un.BatchState and type(back["layer"]) is un.BatchNorm0d
    for key in ("bf16_mV", "compound", "psd", "hours"):
        assert back[key].unit == tree[key].unit and str(back[key].unit) == str(tree[key].unit)
    assert back["bf16_mV"].mantissa.dtype == jnp.bfloat16
    assert_bitwise_equal(back, tree)


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "bn.npz"
    un.save(path, trained(un.BatchNorm0d(2), (4, 2)))
    with np.load(path, allow_pickle=False) as z:  # any NumPy reads it
        header = json.loads(str(z["__unitnorm__"]))
        arrays = {k: z[k] for k in z.files}
    assert header["format"] == "unitnorm-checkpoint" and header["version"] == _checkpoint.FORMAT_VERSION
    assert header["root"]["class"] == "BatchNorm0d"
    assert all(a.dtype.kind != "O" for a in arrays.values())
    units = [s[1]["value"]["unit"] for s in header["root"]["states"] if s[0] == "running_var"]
    assert units[0]["name"] == "mV^2" and units[0]["m"] == 4 and units[0]["scale"] == -6


def rewrite(path, change_header=None, drop=(), extra=None):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    if change_header is not None:
        header = json.loads(str(arrays["__unitnorm__"]))
        change_header(header)
        arrays["__unitnorm__"] = np.array(json.dumps(header))
    arrays.update(extra or {})
    np.savez(path, **arrays)


def saved_layer(tmp_path):
    path = tmp_path / "bn.npz"
    un.save(path, trained(un.BatchNorm0d(2), (4, 2)))
    return path


def _running_var(header):
    return next(s[1]["value"] for s in header["root"]["states"] if s[0] == "running_var")


BAD_FILES = [
    ("newer version", dict(change_header=lambda h: h.update(version=2)), r"field 'version' is 2"),
    ("no version", dict(change_header=lambda h: h.pop("version")), r"missing field 'version'"),
    ("no root", dict(change_header=lambda h: h.pop("root")), r"missing field 'root'"),
    ("another format", dict(change_header=lambda h: h.update(format="x")), r"field 'format'"),
    ("missing array", dict(drop=("a1",)), r"missing array 'a1'"),
    ("no header", dict(drop=("__unitnorm__",)), r"missing field '__unitnorm__'"),
    (
        "unit without its scale",
        dict(change_header=lambda h: _running_var(h)["unit"].pop("scale")),
        r"unit: missing field 'scale'",
    ),
    (
        "dtype that is not numeric",
        dict(change_header=lambda h: _running_var(h).update(dtype="object")),
        r"field 'dtype' must name a numeric dtype, got 'object'",
    ),
    (
        "shape that disagrees",
        dict(change_header=lambda h: _running_var(h).update(shape=[3])),
        r"expected shape \[3\], got \[2\]",
    ),
    (
        "unknown layer class",
        dict(change_header=lambda h: h["root"].update({"class": "Evil"})),
        r"field 'class' names 'Evil'",
    ),
    (
        "unknown state class",
        dict(change_header=lambda h: h["root"]["states"][0][1].update({"class": "os.system"})),
        r"field 'class' names 'os.system'",
    ),
    (
        "header as an object array (pickle)",
        dict(extra={"__unitnorm__": np.array([{"a": 1}], dtype=object)}),
        r"__unitnorm__",
    ),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_is_a_value_error_naming_the_field(tmp_path, case):
    _, change, pattern = case
    path = saved_layer(tmp_path)
    rewrite(path, **change)
    with pytest.raises(ValueError, match=pattern):
        un.load(path)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (os.environ["UNITNORM_EXPLOIT_MARKER"],))


def test_a_pickle_payload_is_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("UNITNORM_EXPLOIT_MARKER", str(marker))
    path = saved_layer(tmp_path)
    rewrite(path, extra={"a0": np.array([_Exploit()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        un.load(path)
    assert not marker.exists()


def test_unit_names_are_parsed_not_evaluated(tmp_path):
    path = saved_layer(tmp_path)
    payload = "__import__('os').mkdir('pwned')"

    def change(header):
        _running_var(header)["unit"]["name"] = payload

    rewrite(path, change_header=change)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        back = un.load(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()
    # an unparsable name falls back to the stored SI exponents, scale and factor
    assert back.running_var.value.unit == u.mV**2


def test_not_a_checkpoint(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="not a unitnorm checkpoint"):
        un.load(garbage)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match=r"expected an \.npz archive"):
        un.load(npy)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    with pytest.raises(ValueError, match="missing field '__unitnorm__'"):
        un.load(other)
    with pytest.raises(FileNotFoundError):
        un.load(tmp_path / "absent.npz")
    good = saved_layer(tmp_path)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a unitnorm checkpoint"):
        un.load(truncated)
    # flip one byte inside the last stored array: the archive's CRC check catches it
    with np.load(good) as z:
        last = z[z.files[-1]]
    at = data.rindex(last.tobytes())
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        un.load(flipped)


def test_unsupported_values_raise_type_error_and_write_nothing(tmp_path):
    path = tmp_path / "x.npz"
    for bad, pattern in [
        ({"a": np.array(["x", "y"])}, r"\['a'\] has dtype <U1; expected a numeric dtype"),
        ({"a": object()}, r"\['a'\] is a object; expected an array"),
        ({1: jnp.ones(2)}, r"key 1 of type int; expected str keys"),
        ({"a": {1, 2}}, r"is a set"),
    ]:
        with pytest.raises(TypeError, match=pattern):
            un.save(path, bad)
    assert os.listdir(tmp_path) == []


def test_crash_mid_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "bn.npz"
    first = trained(un.BatchNorm0d(3), (8, 3), steps=1)
    un.save(path, first)
    before = path.read_bytes()

    def crash_after_part(file, arrays):
        file.write(b"PK\x03\x04partial archive")  # some bytes reach the disk...
        raise OSError("No space left on device")  # ...then the writer dies

    monkeypatch.setattr(_checkpoint, "_write_npz", crash_after_part)
    second = trained(un.BatchNorm0d(3), (8, 3), steps=3)
    with pytest.raises(OSError, match="No space left"):
        un.save(path, second)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["bn.npz"]
    assert_bitwise_equal(un.load(path), first)
    # and a crash with no previous file leaves nothing at all
    with pytest.raises(OSError):
        un.save(tmp_path / "new.npz", second)
    assert os.listdir(tmp_path) == ["bn.npz"]


def test_interrupt_mid_save_also_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "bn.npz"

    def interrupted(file, arrays):
        np.savez(file, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(_checkpoint, "_write_npz", interrupted)
    with pytest.raises(KeyboardInterrupt):
        un.save(path, {"a": jnp.ones(2)})
    assert os.listdir(tmp_path) == []


def test_save_replaces_an_existing_file_and_is_readable_by_zipfile(tmp_path):
    path = tmp_path / "bn.npz"
    un.save(path, {"a": jnp.ones(2)})
    un.save(str(path), {"a": jnp.zeros(2)})
    assert os.listdir(tmp_path) == ["bn.npz"]
    assert zipfile.is_zipfile(path)
    np.testing.assert_array_equal(np.asarray(un.load(path)["a"]), np.zeros(2))


def test_brainstate_states_round_trip(tmp_path):
    brainstate = pytest.importorskip("brainstate")
    layer = un.BatchNorm0d(3, param_type=brainstate.ParamState, mean_type=brainstate.BatchState, in_unit=u.mV)
    layer(rng_data((4, 3)) * u.mV)
    path = tmp_path / "bs.npz"
    un.save(path, layer)
    back = un.load(path)
    assert type(back.weight) is brainstate.ParamState and type(back.running_mean) is brainstate.BatchState
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(
            np.asarray(u.get_mantissa(back.state_dict()[key])), u.get_mantissa(value)
        )
