"""Fuzzing with bad input: every public layer and function, one defect per example.

Each example takes a working call (a layer built and called with good data, or a
function called with good arguments) and breaks one thing: the rank or shape of
the input, its dtype (str, object, bool, None), its unit, an empty batch, the mask
(wrong shape, a Quantity, strings, all false), NaN/inf values, a batch of one, an
argument of a function, a constructor argument (in_size, epsilon, momentum, axes,
initializers, in_unit, dtype, nan_policy, num_groups), a field of a state dict, or
an initializer specification. The invariants:

* only ``ValueError``, ``TypeError`` and brainunit's ``UnitMismatchError`` escape;
* their message says what was expected (``expected``, ``must``, ...) and names the
  thing that was wrong (``mask``, ``epsilon``, a unit, a shape, ...);
* a call that raises leaves every State of the layer bit-for-bit unchanged, and its
  configuration and reference unit too;
* a call that succeeds on finite input leaves finite States (nothing poisoned).

The layers and functions are looked up in ``unitnorm.__all__`` and
``unitnorm.functional.__all__`` at run time, so new ones are fuzzed as they land;
:func:`test_every_public_layer_and_function_is_covered` fails for one this file
cannot build. Counts by outcome are printed at the end of each test (``-s`` not
needed) and are part of the assertion messages.
"""

import collections
import inspect
import re

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unitnorm as un
from unitnorm import functional as F

ALLOWED = (ValueError, TypeError, u.UnitMismatchError)
# a message says what was expected ...
EXPECTED = re.compile(
    r"expect|must|cannot|does not|not broadcast|out of range|unknown|known names|give |only |"
    r"needs? |should|not (a|an|one of) |accepts? |convert it|pass a |pass plain|fixed as|more than",
    re.IGNORECASE,
)
# ... and names the thing that was wrong (per kind of defect)
TOPIC = {
    "rank": r"shape|dimension|axis|axes|rank|in_size|channel|group",
    "shape": r"shape|in_size|axis|axes|channel|group|feature",
    "dtype": r"numeric|dtype|str|object|bool|NoneType|dict|array",
    "unit": r"unit|dimension|dimensionless|voltage|current|time|\bmV\b|\bnA\b|\bs\b",
    "empty": r"empty|shape|0",
    "mask": r"mask",
    "nonfinite": r"finite|nan",
    "batch1": r"more than 1 value",
    "policy": r"nan_policy",
    "in_size": r"in_size",
    "epsilon": r"epsilon|eps",
    "momentum": r"momentum",
    "axes": r"axis|axes",
    "initializer": r"initializer|init|scale|bias|shape|unit",
    "in_unit": r"in_unit|unit",
    "dtype_arg": r"dtype",
    "num_groups": r"group",
    "state_dict": r"field|state_dict|expected the fields|numeric",
    "resolve": r"initializer|shape|name|unit|numeric",
    "argument": r".",
}
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def check_error(err, topic, where):
    msg = str(err)
    assert isinstance(err, ALLOWED), f"{where}: {type(err).__name__} escaped: {msg}"
    assert EXPECTED.search(msg), f"{where}: the message does not say what was expected: {msg!r}"
    assert re.search(TOPIC[topic], msg, re.IGNORECASE), (
        f"{where}: the message does not name the {topic}: {msg!r}"
    )


def outcome(err):
    if err is None:
        return "ok"
    return "UnitMismatchError" if isinstance(err, u.UnitMismatchError) else type(err).__name__


def run(fn, topic, where, counter):
    """Call fn(); return the exception it raised (checked) or None."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the point is to see which type escapes
        if not isinstance(err, ALLOWED):
            raise AssertionError(f"{where}: unexpected {type(err).__name__}: {err}") from err
        check_error(err, topic, where)
        counter[outcome(err)] += 1
        return err
    counter["ok"] += 1
    return None


def report(name, counter, minimum, capsys):
    total = sum(counter.values())
    line = f"[fuzz] {name}: {total} examples; by outcome: {dict(sorted(counter.items()))}"
    with capsys.disabled():
        print(f"\n{line}")
    assert total >= minimum, line
    return line


# ----------------------------------------------------------------------------
# the public layers, built generically


def public_layers():
    out = []
    for name in un.__all__:
        obj = getattr(un, name)
        if isinstance(obj, type) and issubclass(obj, un.Module) and obj is not un.Module:
            if not getattr(
                obj, "wraps_weight", False
            ):  # SpectralNorm, WeightNorm: tests/test_weight_norms.py
                out.append(obj)
    return out


def params_of(cls):
    return inspect.signature(cls.__init__).parameters


def layer_config(cls):
    """in_size and the extra keyword arguments of a small working layer of class ``cls``."""
    if hasattr(cls, "num_spatial_dims"):
        return (3,) * cls.num_spatial_dims + (4,), {}
    kwargs = {"num_groups": 2} if "num_groups" in params_of(cls) else {}
    return (3, 4), kwargs


VARIANTS = ["mV", "unitless", "fresh", "eval", "raise", "omit"]
_PROTOTYPES: dict = {}


def data(shape, seed=0, loc=-65.0):
    return jnp.asarray(np.random.default_rng(seed).normal(loc, 3.0, shape), jnp.float32)


def prototype(cls, variant):
    """A layer that has seen good data (cached; each example works on a copy)."""
    key = (cls, variant)
    if key not in _PROTOTYPES:
        in_size, kwargs = layer_config(cls)
        has = params_of(cls)
        if variant in ("raise", "omit") and "nan_policy" in has:
            kwargs = {**kwargs, "nan_policy": variant}
        if variant in ("mV", "raise") and "in_unit" in has:
            kwargs = {**kwargs, "in_unit": u.mV}
        layer = cls(in_size, **kwargs)
        if variant != "fresh":
            x = data((2, *in_size))
            layer(x if variant == "unitless" else x * u.mV)
        if variant == "eval":
            layer.eval()
        _PROTOTYPES[key] = layer
    return jax.tree_util.tree_map(lambda v: v, _PROTOTYPES[key])  # new States, same (immutable) arrays


def unit_of(variant):
    return None if variant == "unitless" else u.mV


def snapshot(layer):
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    return [(np.asarray(v).dtype, np.asarray(v).tobytes()) for v in leaves], treedef, layer.in_unit


def states_finite(layer):
    return all(
        np.isfinite(np.asarray(v)).all()
        for v in jax.tree_util.tree_leaves(layer)
        if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact)
    )


LAYER_DEFECTS = [
    "rank",
    "shape",
    "dtype",
    "unit",
    "empty",
    "mask",
    "nonfinite",
    "batch1",
    "policy",
    "state_dict",
]


@st.composite
def layer_calls(draw):
    cls = draw(st.sampled_from(public_layers()))
    variant = draw(st.sampled_from(VARIANTS))
    defect = draw(st.sampled_from(LAYER_DEFECTS))
    seed = draw(st.integers(0, 2**16))
    return cls, variant, defect, seed, draw(st.data())


def bad_layer_call(layer, variant, defect, seed, d):
    """Return (description, a function that makes the bad call, whether the input is finite)."""
    in_size = layer.in_size
    unit = unit_of(variant)

    def q(x):
        return x if unit is None else x * unit

    good = data((2, *in_size), seed)
    if defect == "rank":
        shape = d.draw(st.sampled_from([(2, 2, *in_size), in_size[1:], (), (2, *in_size, 1)]))
        x = q(data(shape, seed))
        return f"input of shape {shape}", lambda: layer(x), True
    if defect == "shape":
        i = d.draw(st.integers(0, len(in_size) - 1))
        shape = list(in_size)
        shape[i] = d.draw(st.sampled_from([1, 5, 7]))
        x = q(data((2, *shape), seed))
        return f"input of shape {(2, *shape)}", lambda: layer(x), True
    if defect == "dtype":
        kind = d.draw(
            st.sampled_from(["str", "object", "bool", "None", "dict", "text", "list-of-str", "bytes"])
        )
        shape = (2, *in_size)
        x = {
            "str": np.full(shape, "1.0"),
            "object": np.full(shape, 1.0, dtype=object),
            "bool": np.ones(shape, bool),
            "None": None,
            "dict": {"x": good},
            "text": "mV",
            "list-of-str": [["a"] * in_size[-1]] * 2,
            "bytes": np.full(shape, b"1"),
        }[kind]
        return f"{kind} input", lambda: layer(x), True
    if defect == "unit":
        other = d.draw(st.sampled_from([u.nA, u.second, None, u.mV, u.volt]))
        x = good if other is None else good * other
        return f"input in {other}", lambda: layer(x), True
    if defect == "empty":
        x = q(jnp.zeros((0, *in_size)))
        return "an empty batch", lambda: layer(x), True
    if defect == "mask":
        kind = d.draw(st.sampled_from(["shape", "quantity", "str", "all-false", "ints", "rank"]))
        shape = (2, *in_size)
        mask = {
            "shape": np.ones((3, *in_size), bool),
            "quantity": np.ones(shape) * u.mV,
            "str": np.full(shape, "yes"),
            "all-false": np.zeros(shape, bool),
            "ints": np.ones(shape, np.int32),
            "rank": np.ones((2, 2, *in_size), bool),
        }[kind]
        x = q(good)
        return f"mask {kind}", lambda: layer(x, mask=mask), True
    if defect == "nonfinite":
        bad = np.asarray(good).copy()
        n = d.draw(st.integers(1, bad.size))
        idx = np.random.default_rng(seed).choice(bad.size, n, replace=False)
        bad.flat[idx] = d.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        x = q(jnp.asarray(bad))
        # under 'omit' the States must stay finite whatever arrives
        return f"{n} non-finite values", lambda: layer(x), getattr(layer, "nan_policy", None) == "omit"
    if defect == "batch1":
        x = q(data((1, *in_size), seed))
        return "a batch of one", lambda: layer(x), True
    if defect == "policy":
        if "nan_policy" not in inspect.signature(layer.__call__).parameters:
            return "a good call (the layer has no nan_policy)", lambda: layer(q(good)), True
        pol = d.draw(st.sampled_from(["ignore", None, 0, "OMIT", "raise "]))
        return f"nan_policy={pol!r}", lambda: layer(q(good), nan_policy=pol), True
    if defect == "state_dict":
        sd = layer.state_dict()
        key = d.draw(st.sampled_from(sorted(sd)))
        kind = d.draw(st.sampled_from(["shape", "unit", "str", "None", "missing", "extra", "float-for-int"]))
        value = sd[key]
        m = u.get_mantissa(value)
        changed = dict(sd)
        if kind == "shape":
            changed[key] = jnp.ones((*np.shape(m), 2))
        elif kind == "unit":
            changed[key] = jnp.asarray(m) * u.nA
        elif kind == "str":
            changed[key] = np.full(np.shape(m), "x")
        elif kind == "None":
            changed[key] = None
        elif kind == "missing":
            del changed[key]
        elif kind == "extra":
            changed["bogus"] = m
        else:
            changed[key] = jnp.asarray(m, jnp.float32) + 0.5
        return f"state dict {kind} at {key}", lambda: layer.load_state_dict(changed), True
    raise AssertionError(defect)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(case=layer_calls())
def _fuzz_layer_calls(case):
    cls, variant, defect, seed, d = case
    layer = prototype(cls, variant)
    where = f"{cls.__name__}[{variant}]"
    desc, call, finite = bad_layer_call(layer, variant, defect, seed, d)
    before = snapshot(layer)
    topic = "unit" if defect == "unit" else defect
    if defect == "state_dict":
        topic = "state_dict"
    err = run(call, topic if topic in TOPIC else "argument", f"{where} {desc}", COUNTS["layer calls"])
    if err is not None:
        assert snapshot(layer) == before, f"{where} {desc}: a failed call changed the layer"
        COUNTS["layer calls: States compared after an error"]["unchanged"] += 1
    elif finite:
        assert states_finite(layer), f"{where} {desc}: a call on finite input left non-finite States"


def test_fuzz_layer_calls(capsys):
    COUNTS["layer calls"].clear()
    COUNTS["layer calls: States compared after an error"].clear()
    _fuzz_layer_calls()
    line = report("layer calls", COUNTS["layer calls"], 300, capsys)
    compared = COUNTS["layer calls: States compared after an error"]["unchanged"]
    errors = sum(v for k, v in COUNTS["layer calls"].items() if k != "ok")
    assert compared == errors, line
    with capsys.disabled():
        print(f"[fuzz] layer calls: States compared bit for bit after {compared} errors: 0 changed")


# ----------------------------------------------------------------------------
# construction


CONFIG_DEFECTS = {
    "in_size": [0, -3, "abc", 2.5, None, True, (3, "a"), (3, 0, 4), (), ((3, 4),)],
    "epsilon": [
        -1.0,
        float("nan"),
        float("inf"),
        "1e-5",
        [1e-5],
        np.ones(2),
        True,
        1e-5 * u.mV,
        1e-5 * u.nA**2,
    ],
    "momentum": [-0.1, 1.5, float("nan"), "0.9", True, [0.9], float("inf")],
    "axes": [7, -9, "a", 1.5, (0, 0), None],
    "initializer": [
        "ones-ish",
        object(),
        np.ones(7),
        np.ones((4, 4)),
        lambda shape, dtype=None: jnp.ones((9,)),
        lambda shape, dtype=None: np.full(shape, "a"),
        np.full(4, "a"),
        jnp.ones(4) * u.nA,
    ],
    "in_unit": ["mV", 1 * u.mV, 3, object()],
    "dtype_arg": ["not-a-dtype", object, "U", 3.5],
    "policy": ["x", None, 1, "Omit"],
    "num_groups": [3, 0, -1, "2", 2.5, 5],
}
AXIS_PARAMS = ("feature_axis", "feature_axes", "reduction_axes")
INIT_PARAMS = ("scale_initializer", "bias_initializer", "scale_init", "bias_init")


@st.composite
def bad_configs(draw):
    cls = draw(st.sampled_from(public_layers()))
    has = params_of(cls)
    options = []
    for topic in CONFIG_DEFECTS:
        names = {
            "in_size": ["in_size"],
            "epsilon": ["epsilon"],
            "momentum": ["momentum"],
            "axes": [p for p in AXIS_PARAMS if p in has],
            "initializer": [p for p in INIT_PARAMS if p in has],
            "in_unit": ["in_unit"],
            "dtype_arg": ["dtype"],
            "policy": ["nan_policy"],
            "num_groups": ["num_groups"],
        }[topic]
        options += [(topic, n) for n in names if n in has]
    topic, param = draw(st.sampled_from(options))
    value = draw(st.sampled_from(CONFIG_DEFECTS[topic]))
    return cls, topic, param, value


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(case=bad_configs())
def _fuzz_construction(case):
    cls, topic, param, value = case
    in_size, kwargs = layer_config(cls)
    kwargs = {**kwargs, param: value}
    if param == "in_size":
        in_size = kwargs.pop("in_size")
    if topic == "initializer" and param.startswith("bias") and not isinstance(value, str):
        kwargs[param.replace("bias", "scale")] = un.init.Constant(1.0 * u.mV)  # units disagree, or shape
    where = f"{cls.__name__}({param}={value!r:.40})"
    err = run(lambda: cls(in_size, **kwargs), topic, where, COUNTS["construction"])
    if err is None and topic not in ("in_unit",):
        # a configuration that was accepted must work on good data
        layer = cls(in_size, **kwargs)
        assert isinstance(layer, un.Module)


def test_fuzz_construction(capsys):
    COUNTS["construction"].clear()
    _fuzz_construction()
    report("construction", COUNTS["construction"], 150, capsys)


# ----------------------------------------------------------------------------
# the functional API


def good_calls():
    """name -> (function, args, kwargs) of a working call on x of shape (2, 3, 4) in mV."""
    x = data((2, 3, 4)) * u.mV
    rm, rv = jnp.zeros(4) * u.mV, jnp.ones(4) * u.mV**2
    mean, var = F.compute_stats(x, (0, 1))
    known = {
        "compute_stats": (F.compute_stats, (x, (0, 1)), {}),
        "normalize": (F.normalize, (x, mean, var), {"reduction_axes": (0, 1)}),
        "batch_norm": (F.batch_norm, (x, rm, rv), {"training": True}),
        "layer_norm": (F.layer_norm, (x,), {}),
        "rms_norm": (F.rms_norm, (x,), {}),
        "instance_norm": (F.instance_norm, (x,), {}),
        "group_norm": (F.group_norm, (x,), {"num_groups": 2}),
        "weight_standardization": (F.weight_standardization, (data((3, 4)) * u.mV,), {}),
    }
    out = {}
    for name in F.__all__:
        fn = getattr(F, name)
        if name in known:
            out[name] = known[name]
        else:  # a new function: call it on x alone if nothing else is required
            required = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(required) == 1:
                out[name] = (fn, (x,), {})
    return out


GOOD_CALLS = good_calls()
FUNCTION_DEFECTS = ["rank", "dtype", "unit", "empty", "mask", "nonfinite", "argument", "policy"]
BAD_ARGUMENTS = {
    # keyword -> values that are wrong for it
    "axes": [7, -9, "a", 1.5, (0, 0)],
    "reduction_axes": [7, -9, "a", 1.5, (0, 0)],
    "feature_axes": [7, -9, "a", (1, 1)],
    "feature_axis": [7, -9, "a", 1.5],
    "epsilon": [1e-5 * u.mV, 1e-5 * u.nA**2, "1e-5", [1.0, 2.0], None],
    "eps": [1e-5 * u.nA**2, "1e-5", None],
    "momentum": ["0.9", None, [0.5]],
    "num_groups": [3, 0, -1, "2", 5],
    "dtype": ["not-a-dtype", object],
    "scale": [jnp.ones(7), np.full(4, "a"), jnp.ones((4, 4))],
    "bias": [jnp.ones(7) * u.mV, jnp.ones(4) * u.nA, np.full(4, "a")],
    "gain": [jnp.ones(7), np.full(4, "a")],
    "out_axis": [7, "a"],
    "running_mean": [jnp.zeros(7) * u.mV, jnp.zeros(4) * u.nA, None, np.full(4, "a")],
    "running_var": [jnp.ones(7) * u.mV**2, jnp.ones(4) * u.mV, None],
    "mean": [jnp.zeros(7) * u.mV, jnp.zeros(4) * u.nA],
    "var": [jnp.ones(4) * u.mV, jnp.ones(7) * u.mV**2],
}


def applicable(name):
    sig = inspect.signature(GOOD_CALLS[name][0]).parameters
    needs = {
        "mask": "mask" in sig,
        "policy": "nan_policy" in sig,
        "argument": any(p in sig for p in BAD_ARGUMENTS),
    }
    return [d for d in FUNCTION_DEFECTS if needs.get(d, True)]


@st.composite
def function_calls(draw):
    name = draw(st.sampled_from(sorted(GOOD_CALLS)))
    defect = draw(st.sampled_from(applicable(name)))
    return name, defect, draw(st.integers(0, 2**16)), draw(st.data())


def bad_function_call(name, defect, seed, d):
    fn, args, kwargs = GOOD_CALLS[name]
    sig = inspect.signature(fn).parameters
    x = args[0]
    shape = x.shape
    args, kwargs = list(args), dict(kwargs)
    topic, finite = defect, True
    if defect == "rank":
        args[0] = data(d.draw(st.sampled_from([(), (4,), (2, 3, 4, 5, 1)])), seed) * u.mV
        topic = "rank"
    elif defect == "dtype":
        args[0] = d.draw(
            st.sampled_from(
                [np.full(shape, "a"), np.full(shape, 1.0, object), np.ones(shape, bool), None, "x"]
            )
        )
    elif defect == "unit":
        other = d.draw(st.sampled_from([u.nA, u.second, None]))
        args[0] = x.mantissa if other is None else x.mantissa * other
    elif defect == "empty":
        args[0] = jnp.zeros((0, *shape[1:])) * u.mV
    elif defect == "mask":
        kwargs["mask"] = d.draw(
            st.sampled_from(
                [np.ones((5, 5), bool), np.ones(shape) * u.mV, np.full(shape, "y"), np.zeros(shape, bool)]
            )
        )
    elif defect == "nonfinite":
        bad = np.asarray(x.mantissa).copy()
        bad.flat[np.random.default_rng(seed).integers(0, bad.size)] = d.draw(
            st.sampled_from([np.nan, np.inf])
        )
        args[0] = jnp.asarray(bad) * u.mV
        finite = False
        if "nan_policy" in sig:
            kwargs["nan_policy"] = d.draw(st.sampled_from(["propagate", "omit", "raise"]))
    elif defect == "policy":
        kwargs["nan_policy"] = d.draw(st.sampled_from(["ignore", None, 1]))
    elif defect == "argument":
        names = [p for p in BAD_ARGUMENTS if p in sig]
        p = d.draw(st.sampled_from(names))
        value = d.draw(st.sampled_from(BAD_ARGUMENTS[p]))
        position = list(sig).index(p)
        if position < len(args):
            args[position] = value
        else:
            kwargs[p] = value
        topic = "argument"
    return fn, args, kwargs, topic, finite


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(case=function_calls())
def _fuzz_functions(case):
    name, defect, seed, d = case
    fn, args, kwargs, topic, _ = bad_function_call(name, defect, seed, d)
    frozen = [np.array(a, copy=True) for a in args if isinstance(a, np.ndarray)]
    where = f"{name} with a bad {defect}"
    run(lambda: fn(*args, **kwargs), topic, where, COUNTS["functions"])
    for a, b in zip([a for a in args if isinstance(a, np.ndarray)], frozen, strict=True):
        assert a.tobytes() == b.tobytes(), f"{where}: an input array was changed"


def test_fuzz_functions(capsys):
    COUNTS["functions"].clear()
    _fuzz_functions()
    report("functions", COUNTS["functions"], 250, capsys)


# ----------------------------------------------------------------------------
# the initializer registry


BAD_SPECS = [
    "no-such-initializer",
    object(),
    np.ones(7),
    jnp.ones((3, 3)) * u.mV,
    np.full(4, "a"),
    lambda shape, dtype=None: jnp.ones(9),
    lambda shape, dtype=None: "zeros",
    un.init.Constant(np.ones(5)),
    un.init.Normal(0.0 * u.mV, 1.0 * u.nA),
]
BAD_SHAPES = [-1, "a", (2.5,), None, (4, -2)]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    spec=st.sampled_from(BAD_SPECS + ["ones"]),
    shape=st.sampled_from(BAD_SHAPES + [(4,)]),
    unit=st.sampled_from([None, u.nA]),
)
def _fuzz_resolve(spec, shape, unit):
    run(
        lambda: un.init.resolve(spec, shape, unit=unit),
        "resolve",
        f"resolve({spec!r:.30}, {shape!r})",
        COUNTS["resolve"],
    )


def test_fuzz_init_resolve(capsys):
    COUNTS["resolve"].clear()
    _fuzz_resolve()
    report("init.resolve", COUNTS["resolve"], 60, capsys)


# ----------------------------------------------------------------------------


def test_every_public_layer_and_function_is_covered():
    layers = public_layers()
    names = {c.__name__ for c in layers}
    assert {"BatchNorm0d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"} <= names
    for cls in layers:  # each builds, trains and adopts a unit in every variant
        for variant in VARIANTS:
            assert isinstance(prototype(cls, variant), cls)
    missing = sorted(set(F.__all__) - set(GOOD_CALLS))
    assert not missing, f"add a working call for {missing} to good_calls() in tests/test_fuzz.py"
    for fn, args, kwargs in GOOD_CALLS.values():
        fn(*args, **kwargs)  # the baselines really are good calls
