"""Checkpoints with units: :func:`save` and :func:`load` to a portable ``.npz`` file.

A checkpoint is an ordinary NumPy ``.npz`` archive that any NumPy can open
without unitnorm: one array per value (the bare mantissa, in its own dtype)
plus a JSON header, stored as a string array, that records the format
version, the structure (dicts, lists, tuples, States, layers), and for each
array its dtype, shape and unit. Nothing is pickled, so loading a file cannot
run code, and units are read back with brainunit's string parser, never
``eval``.

The layout is described in the Notes of :func:`save`.

Dtypes NumPy cannot name in a file (``bfloat16``, the ``float8`` types) are
stored as their raw bits in an unsigned integer array of the same width, and
viewed back on load. A unit whose name does not parse back to the same unit
is rebuilt from its SI exponents, scale and factor.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import tempfile
import zipfile
import zlib
from typing import Any

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

from unitnorm import _units
from unitnorm.state import BatchState, NormalizationParamState, ParamState, State

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT = "unitnorm-checkpoint"
FORMAT_VERSION = 1
HEADER = "__unitnorm__"

_SI = ("m", "kg", "s", "A", "K", "mol", "cd")
_STANDARD_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64".split()
    + "float16 float32 float64 complex64 complex128".split()
)
_UNITNORM_STATES = {c.__name__: c for c in (State, ParamState, BatchState, NormalizationParamState)}
_BRAINSTATE_STATES = ("State", "ParamState", "BatchState", "ShortTermState", "LongTermState", "HiddenState")


class _Error(ValueError):
    """A checkpoint file that cannot be read; the message names the field."""


# ----------------------------------------------------------------------------
# units and dtypes


def _encode_unit(unit: u.Unit) -> dict[str, Any]:
    dim = u.get_dim(unit)
    rec: dict[str, Any] = {"name": str(unit)}
    rec.update((k, _number(dim.get_dimension(k))) for k in _SI)
    rec["scale"] = _number(unit.scale)
    rec["factor"] = float(unit.factor)
    return rec


def _number(v: Any) -> int | float:
    v = float(v)
    return int(v) if v.is_integer() else v


def _decode_unit(rec: Any, where: str) -> u.Unit:
    if not isinstance(rec, dict):
        raise _Error(f"{where}: field 'unit' must be a record, got {type(rec).__name__}")
    fields = {}
    for k in (*_SI, "scale", "factor"):
        v = _field(rec, k, f"{where}.unit")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Error(f"{where}.unit: field '{k}' must be a finite number, got {v!r:.40}")
        fields[k] = v
    if fields["factor"] <= 0:
        raise _Error(f"{where}.unit: field 'factor' must be positive, got {fields['factor']}")
    dim = u.get_or_create_dimension(**{k: fields[k] for k in _SI})
    built = u.Unit(dim=dim, scale=fields["scale"], factor=fields["factor"])
    name = _field(rec, "name", f"{where}.unit")
    if isinstance(name, str) and len(name) <= 200:
        try:
            parsed = u.parse_unit(name)
        except Exception:  # brainunit's parser: any failure means "use the numbers"
            parsed = None
        if isinstance(parsed, u.Unit) and parsed == built:
            return parsed
    return built


def _dtype_name(dtype: np.dtype, where: str) -> str:
    name = dtype.name
    if name in _STANDARD_DTYPES or _ml_dtype(name) is not None:
        return name
    raise TypeError(f"save: {where} has dtype {dtype}; expected a numeric dtype (bool, int, float, complex)")


def _ml_dtype(name: str) -> np.dtype | None:
    """Return the extra float type jax uses (bfloat16, float8_*) of this name, from ml_dtypes only."""
    import ml_dtypes

    if not re.fullmatch(r"(bfloat16|float[0-9]+_[a-z0-9]+)", name):
        return None
    typ = getattr(ml_dtypes, name, None)
    return None if typ is None else np.dtype(typ)


def _storage(arr: np.ndarray) -> np.ndarray:
    """Return the array as NumPy can write it: raw bits for ml_dtypes floats."""
    if arr.dtype.name in _STANDARD_DTYPES:
        return arr
    return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))


# ----------------------------------------------------------------------------
# encoding


class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: Any, where: str) -> dict[str, Any]:
        unit = None
        if _units.is_quantity(value):
            unit, value = _encode_unit(value.unit), value.mantissa
        if isinstance(value, (np.ndarray, np.generic)):
            kind = "numpy" if isinstance(value, np.ndarray) else "numpy-scalar"
        elif isinstance(value, jax.Array):
            kind = "jax"
        elif isinstance(value, (bool, int, float, complex)):
            kind = next(t.__name__ for t in (bool, int, float, complex) if isinstance(value, t))
        else:
            raise TypeError(
                f"save: {where} is a {type(value).__name__}; expected an array, a Quantity, a number, "
                "a str, None, a State, a layer, or a dict/list/tuple of them"
            )
        arr = np.asarray(value)
        dtype = _dtype_name(arr.dtype, where)
        key = f"a{len(self.arrays)}"
        self.arrays[key] = _storage(arr)
        return {
            "kind": "array",
            "key": key,
            "dtype": dtype,
            "shape": list(arr.shape),
            "unit": unit,
            "type": kind,
        }

    def node(self, obj: Any, where: str) -> dict[str, Any]:
        from unitnorm.nn._base import Module

        if obj is None:
            return {"kind": "none"}
        if isinstance(obj, str):
            return {"kind": "str", "value": obj}
        if isinstance(obj, Module):
            return self.layer(obj, where)
        scaler = _scaler_class(type(obj))
        if scaler is not None:
            config, arrays = obj._export()
            return {
                "kind": "scaler",
                "class": scaler,
                "config": _encode_config(config),
                "state": self.node(arrays, f"{where}.state"),
            }
        if isinstance(obj, State) or _brainstate_class(type(obj)) is not None:
            return {
                "kind": "state",
                "class": _state_class_name(obj, where),
                "value": self.node(obj.value, where),
            }
        if isinstance(obj, dict):
            for k in obj:
                if not isinstance(k, str):
                    raise TypeError(
                        f"save: {where} has a key {k!r} of type {type(k).__name__}; expected str keys"
                    )
            return {"kind": "dict", "items": [[k, self.node(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
        if type(obj) in (list, tuple):
            kind = type(obj).__name__
            return {"kind": kind, "items": [self.node(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        return self.array(obj, where)

    def layer(self, layer: Any, where: str) -> dict[str, Any]:
        name = type(layer).__name__
        if _layer_classes().get(name) is not type(layer):
            raise TypeError(f"save: {where} is a {name}, which is not a layer unitnorm exports")
        config = {}
        for key, value in vars(layer).items():
            if key in layer._state_names or key in ("_state_names", "_aux"):
                continue
            try:
                config[key] = _encode_config(value)
            except TypeError:
                if key.startswith("_"):  # a private cache: rebuilt on use
                    continue
                raise TypeError(
                    f"save: {where} ({name}) has attribute '{key}' of type {type(value).__name__}, "
                    "which a checkpoint cannot hold"
                ) from None
        states = [[n, self.node(getattr(layer, n), f"{where}.{n}")] for n in layer._state_names]
        return {"kind": "layer", "class": name, "config": config, "states": states}


def _encode_config(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(v, u.Unit):
        return {"__unit__": _encode_unit(v)}
    if isinstance(v, np.dtype):
        return {"__dtype__": _dtype_name(v, "a dtype")}
    if isinstance(v, np.generic) and v.dtype.name in _STANDARD_DTYPES:
        return {"__scalar__": _encode_config(v.item()), "dtype": v.dtype.name}
    if type(v) in (tuple, list):
        return {f"__{type(v).__name__}__": [_encode_config(x) for x in v]}
    if type(v) is dict and all(isinstance(k, str) for k in v):
        return {"__dict__": [[k, _encode_config(x)] for k, x in v.items()]}
    raise TypeError(type(v).__name__)


def _decode_config(v: Any, where: str) -> Any:
    if v is None or isinstance(v, (bool, str, int, float)):
        return v
    if isinstance(v, dict) and len(v) in (1, 2):
        tag = next(iter(v))
        if tag == "__float__" and v[tag] in ("inf", "-inf", "nan"):
            return float(v[tag])
        if tag == "__unit__":
            return _decode_unit(v[tag], where)
        if tag == "__dtype__":
            return _load_dtype(v[tag], where)
        if tag == "__scalar__" and v.get("dtype") in _STANDARD_DTYPES:
            return np.dtype(v["dtype"]).type(_decode_config(v[tag], where))
        if tag in ("__tuple__", "__list__") and isinstance(v[tag], list):
            items = [_decode_config(x, where) for x in v[tag]]
            return tuple(items) if tag == "__tuple__" else items
        if tag == "__dict__" and isinstance(v[tag], list):
            return {_str(k, where): _decode_config(x, where) for k, x in _pairs(v[tag], where)}
    raise _Error(f"{where}: unreadable value {json.dumps(v)[:60]}")


# ----------------------------------------------------------------------------
# decoding


def _field(rec: dict[str, Any], name: str, where: str) -> Any:
    if name not in rec:
        raise _Error(f"{where}: missing field '{name}'")
    return rec[name]


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _Error(f"{where}: expected a name (str), got {type(v).__name__}")
    return v


def _pairs(items: Any, where: str) -> list[tuple[Any, Any]]:
    if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 for p in items):
        raise _Error(f"{where}: field 'items' must be a list of [name, value] pairs")
    return [(p[0], p[1]) for p in items]


def _load_dtype(name: Any, where: str) -> np.dtype:
    if isinstance(name, str):
        if name in _STANDARD_DTYPES:
            return np.dtype(name)
        extra = _ml_dtype(name)
        if extra is not None:
            return extra
    raise _Error(f"{where}: field 'dtype' must name a numeric dtype, got {name!r:.40}")


class _Reader:
    def __init__(self, archive: Any) -> None:
        self.archive = archive

    def array(self, rec: dict[str, Any], where: str) -> Any:
        key = _str(_field(rec, "key", where), where)
        dtype = _load_dtype(_field(rec, "dtype", where), where)
        shape = _field(rec, "shape", where)
        kind = _field(rec, "type", where)
        unit_rec = _field(rec, "unit", where)
        if key not in self.archive.files:
            raise _Error(f"{where}: missing array '{key}'")
        arr = self.archive[key]
        stored = dtype if dtype.name in _STANDARD_DTYPES else np.dtype(f"u{dtype.itemsize}")
        if arr.dtype != stored:
            raise _Error(f"{where}: array '{key}' expected dtype {stored}, got {arr.dtype}")
        if not isinstance(shape, list) or list(arr.shape) != shape:
            raise _Error(f"{where}: array '{key}' expected shape {shape}, got {list(arr.shape)}")
        arr = arr.view(dtype)
        if kind in ("jax", "numpy"):
            value = arr if kind == "numpy" or _too_wide_for_jax(dtype) else jnp.asarray(arr)
        elif kind in ("float", "int", "bool", "complex") and arr.ndim == 0:
            value = arr.item()
        elif kind == "numpy-scalar" and arr.ndim == 0:
            value = arr[()]
        else:
            raise _Error(
                f"{where}: field 'type' must be jax, numpy, numpy-scalar or a number type, got {kind!r}"
            )
        if unit_rec is None:
            return value
        return u.Quantity(value, unit=_decode_unit(unit_rec, where))

    def node(self, rec: Any, where: str) -> Any:
        if not isinstance(rec, dict):
            raise _Error(f"{where}: expected a record, got {type(rec).__name__}")
        kind = _field(rec, "kind", where)
        if kind == "none":
            return None
        if kind == "str":
            return _str(_field(rec, "value", where), where)
        if kind == "array":
            return self.array(rec, where)
        if kind == "dict":
            return {
                _str(k, where): self.node(v, f"{where}[{k!r}]")
                for k, v in _pairs(_field(rec, "items", where), where)
            }
        if kind in ("list", "tuple"):
            items = _field(rec, "items", where)
            if not isinstance(items, list):
                raise _Error(f"{where}: field 'items' must be a list")
            out = [self.node(v, f"{where}[{i}]") for i, v in enumerate(items)]
            return out if kind == "list" else tuple(out)
        if kind == "state":
            cls = _state_class(_field(rec, "class", where), where)
            return cls(self.node(_field(rec, "value", where), f"{where}.value"))
        if kind == "layer":
            return self.layer(rec, where)
        if kind == "scaler":
            return self.scaler(rec, where)
        raise _Error(f"{where}: field 'kind' {kind!r} is not one this version reads")

    def layer(self, rec: dict[str, Any], where: str) -> Any:
        name = _str(_field(rec, "class", where), where)
        cls = _layer_classes().get(name)
        if cls is None:
            raise _Error(f"{where}: field 'class' names {name!r}, which is not a unitnorm layer")
        config = _field(rec, "config", where)
        if not isinstance(config, dict):
            raise _Error(f"{where}: field 'config' must be a record")
        static = tuple(
            sorted((_str(k, where), _decode_config(v, f"{where}.config.{k}")) for k, v in config.items())
        )
        pairs = _pairs(_field(rec, "states", where), f"{where}.states")
        names = tuple(_str(n, where) for n, _ in pairs)
        states = tuple(self.node(v, f"{where}.{n}") for n, v in pairs)
        for n, s in zip(names, states, strict=True):
            if not hasattr(s, "value"):
                raise _Error(f"{where}.{n}: expected a State")
        return cls._unflatten((names, static), states)

    def scaler(self, rec: dict[str, Any], where: str) -> Any:
        from unitnorm.preprocessing._scalers import SCALERS

        name = _str(_field(rec, "class", where), where)
        cls = SCALERS.get(name)
        if cls is None:
            raise _Error(
                f"{where}: field 'class' names {name!r}, which is not a unitnorm scaler "
                f"(expected one of {', '.join(sorted(SCALERS))})"
            )
        config = _decode_config(_field(rec, "config", where), f"{where}.config")
        if not isinstance(config, dict) or "params" not in config or "fitted" not in config:
            raise _Error(f"{where}: field 'config' must hold 'params' and 'fitted'")
        state = self.node(_field(rec, "state", where), f"{where}.state")
        try:
            return cls._import(config, state, where)
        except (KeyError, TypeError, IndexError) as err:
            raise _Error(f"{where}: malformed scaler field {err}") from None


def _scaler_class(cls: type) -> str | None:
    """Return the class name of a unitnorm scaler (exactly one of the exported classes), else None."""
    module = getattr(cls, "__module__", "") or ""
    if not module.startswith("unitnorm.preprocessing"):
        return None
    from unitnorm.preprocessing._scalers import SCALERS

    return cls.__name__ if SCALERS.get(cls.__name__) is cls else None


def _too_wide_for_jax(dtype: np.dtype) -> bool:
    """Return True when jax (without x64) would narrow the dtype; such arrays stay NumPy."""
    return jax.dtypes.canonicalize_dtype(dtype) != dtype


def _layer_classes() -> dict[str, type]:
    import unitnorm
    from unitnorm.nn._base import Module

    out = {}
    for n in unitnorm.__all__:
        obj = getattr(unitnorm, n, None) if n != "preprocessing" else None
        if isinstance(obj, type) and issubclass(obj, Module) and obj is not Module:
            out[obj.__name__] = obj
    if "unitnorm.preprocessing" in sys.modules:  # a scaler's layer (ScalerLayer) once preprocessing is in use
        from unitnorm.preprocessing import ScalerLayer

        out[ScalerLayer.__name__] = ScalerLayer
    return out


def _brainstate_class(cls: type) -> str | None:
    mod = getattr(cls, "__module__", "") or ""
    if mod.split(".")[0] == "brainstate" and cls.__name__ in _BRAINSTATE_STATES:
        return f"brainstate.{cls.__name__}"
    return None


def _state_class_name(state: Any, where: str) -> str:
    cls = type(state)
    if _UNITNORM_STATES.get(cls.__name__) is cls:
        return f"unitnorm.{cls.__name__}"
    name = _brainstate_class(cls)
    if name is None:
        raise TypeError(
            f"save: {where} is a {cls.__name__}; expected a unitnorm State (State, ParamState, BatchState, "
            "NormalizationParamState) or one of brainstate's"
        )
    return name


def _state_class(name: Any, where: str) -> type:
    name = _str(name, where)
    lib, _, cls = name.partition(".")
    if lib == "unitnorm" and cls in _UNITNORM_STATES:
        return _UNITNORM_STATES[cls]
    if lib == "brainstate" and cls in _BRAINSTATE_STATES:
        import brainstate

        return getattr(brainstate, cls)
    raise _Error(f"{where}: field 'class' names {name!r}, which is not a State class this version reads")


# ----------------------------------------------------------------------------
# files


def _write_npz(file: Any, arrays: dict[str, np.ndarray]) -> None:
    np.savez(file, **arrays)


def _atomic_write(path: str, arrays: dict[str, np.ndarray]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save(path: str | os.PathLike[str], obj: Any) -> None:
    """Save a layer, or a tree of arrays, Quantities, States and layers, to a ``.npz`` file.

    The file is written atomically: into a temporary file in the same folder,
    which then replaces ``path`` (``os.replace``), so a crash mid-save leaves
    any previous file at ``path`` intact and no partial file behind.

    Parameters
    ----------
    path : str or path-like
        Where to write; used as given (no suffix is added).
    obj : Module, scaler or pytree
        A unitnorm layer (its class, configuration and States are saved), a
        scaler of :mod:`unitnorm.preprocessing` (fitted or not: its class,
        keywords, fitted statistics with units, and value tables), or
        a nest of dicts with str keys, lists and tuples whose leaves are
        arrays, Quantities, Python numbers, str, ``None``, States or layers.

    Raises
    ------
    TypeError
        For a value a checkpoint cannot hold (a non-numeric array, another
        pytree class, a dict with non-str keys); nothing is written.

    See Also
    --------
    load, unitnorm.Module.state_dict

    Notes
    -----
    Each value is stored as its mantissa in its own dtype (``bfloat16`` and the
    ``float8`` types as raw bits in an unsigned integer array of the same
    width) plus its unit, so the round trip is bit-exact. No pickle is used:
    the file is a plain ``.npz`` archive any NumPy opens with
    ``allow_pickle=False``. A layer is stored as its class name, its
    configuration (the layer's static attributes, as JSON) and its States.

    The file layout (format version 1) is::

        __unitnorm__   0-d str array: JSON {"format": "unitnorm-checkpoint",
                       "version": 1, "unitnorm": "<package version>", "root": NODE}
        a0, a1, ...    the mantissas, one array per value

        NODE = {"kind": "array", "key": "a0", "dtype": "float32", "shape": [3],
                "unit": UNIT or null, "type": "jax" | "numpy" | "float" | "int" | ...}
             | {"kind": "dict", "items": [["name", NODE], ...]}
             | {"kind": "list" | "tuple", "items": [NODE, ...]}
             | {"kind": "none"} | {"kind": "str", "value": "..."}
             | {"kind": "state", "class": "unitnorm.BatchState", "value": NODE}
             | {"kind": "layer", "class": "BatchNorm1d", "config": {...}, "states": [["weight", NODE], ...]}
             | {"kind": "scaler", "class": "StandardScaler", "config": {"params": ..., "fitted": ...},
                "state": NODE}
        UNIT = {"name": "mV", "m": 2, "kg": 1, "s": -3, "A": -1, "K": 0, "mol": 0, "cd": 0,
                "scale": -3, "factor": 1.0}

    A reader of another format version refuses the file, naming the field.

    Examples
    --------
    >>> import os, tempfile
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(2, in_unit=u.mV, momentum=0.0)
    >>> _ = layer(jnp.array([[1., 2.], [3., 6.]]) * u.mV)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "bn.npz")
    ...     un.save(path, layer)
    ...     back = un.load(path)
    >>> print(type(back).__name__, back.running_mean.value)
    BatchNorm0d [2. 4.] mV
    >>> bool((back.running_var.value == layer.running_var.value).all())
    True
    """
    path = os.fspath(path)
    writer = _Writer()
    root = writer.node(obj, "the saved object")
    header = {"format": FORMAT, "version": FORMAT_VERSION, "unitnorm": _package_version(), "root": root}
    arrays = {HEADER: np.array(json.dumps(header))}
    arrays.update(writer.arrays)
    _atomic_write(path, arrays)


def _package_version() -> str:
    import unitnorm

    return str(getattr(unitnorm, "__version__", "unknown"))


def load(path: str | os.PathLike[str], *, into: Any = None) -> Any:
    """Load what :func:`save` wrote.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    into : Module, optional
        Load a saved layer's States into this existing layer instead of
        building a new one. It must be of the same class and structure (the
        configuration fields that fix shapes and axes must agree); the values
        go through :meth:`unitnorm.Module.load_state_dict`, so a compatible
        unit converts (a checkpoint in V into a layer in mV) and the layer's
        dtypes are kept.

    Returns
    -------
    Module or pytree
        A new layer of the saved class, configuration and values (or ``into``),
        or the saved tree with jax arrays, NumPy arrays, Quantities and Python
        numbers as they were saved (float64 jax arrays stay NumPy arrays when
        jax runs without x64).

    Raises
    ------
    ValueError
        For a file that is not a unitnorm checkpoint, comes from another
        format version, or lacks a field (the message names it); for ``into``
        of another class or structure, or a value of another shape.
    brainunit.UnitMismatchError
        With ``into``, for a value whose unit has another dimension.
    OSError
        When the file cannot be read.

    See Also
    --------
    save, unitnorm.Module.load_state_dict

    Notes
    -----
    The file is opened with ``numpy.load(..., allow_pickle=False)`` and units
    are parsed by ``brainunit.parse_unit`` (checked against the stored SI
    exponents, scale and factor), so a hostile file cannot run code.

    Examples
    --------
    >>> import os, tempfile
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> volts = un.BatchNorm0d(2, in_unit=u.volt, momentum=0.0)
    >>> _ = volts(jnp.array([[1., 2.], [3., 6.]]) * u.volt)
    >>> tree = {"step": 3, "stats": [jnp.array([0.5, 1.5]) * u.volt]}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     un.save(os.path.join(folder, "tree.npz"), tree)
    ...     un.save(os.path.join(folder, "bn.npz"), volts)
    ...     back = un.load(os.path.join(folder, "tree.npz"))
    ...     mv = un.load(os.path.join(folder, "bn.npz"), into=un.BatchNorm0d(2, in_unit=u.mV))
    >>> print(back["step"], back["stats"][0])
    3 [0.5 1.5] V
    >>> print(mv.running_mean.value)
    [2000. 4000.] mV
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        root = _read_file(file, path)
    if into is None:
        return root
    return _load_into(into, root, path)


def _read_file(file: Any, path: str) -> Any:
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"load: {path} is not a unitnorm checkpoint (.npz): {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"load: {path} is not a unitnorm checkpoint: expected an .npz archive, got a .npy array"
        )
    with archive:
        try:
            return _read(archive, path)
        except _Error as err:
            raise ValueError(f"load: {path}: {err}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise ValueError(f"load: {path} is a corrupt checkpoint: {err}") from None
        except RecursionError:
            raise ValueError(f"load: {path}: the structure is nested too deeply to be a checkpoint") from None


def _read(archive: Any, path: str) -> Any:
    if HEADER not in archive.files:
        raise _Error(f"missing field '{HEADER}' (not a unitnorm checkpoint)")
    try:
        raw = archive[HEADER]
    except ValueError as err:  # e.g. an object array, refused without pickle
        raise _Error(f"field '{HEADER}' is unreadable: {err}") from None
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise _Error(f"field '{HEADER}' must be a str, got a {raw.dtype} array of shape {raw.shape}")
    try:
        header = json.loads(str(raw))
    except ValueError as err:
        raise _Error(f"field '{HEADER}' is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise _Error(f"field '{HEADER}' must be a record")
    fmt = _field(header, "format", "header")
    if fmt != FORMAT:
        raise _Error(f"header: field 'format' is {fmt!r}, expected {FORMAT!r}")
    version = _field(header, "version", "header")
    if version != FORMAT_VERSION:
        raise _Error(
            f"header: field 'version' is {version!r}; this unitnorm reads format version {FORMAT_VERSION}"
        )
    return _Reader(archive).node(_field(header, "root", "header"), "root")


# configuration fields that may differ between a checkpoint and the layer it loads into
_RUNTIME_FIELDS = frozenset(
    {
        "training",
        "name",
        "in_unit",
        "momentum",
        "epsilon",
        "epsilon_unit",
        "nan_policy",
        "use_fast_variance",
        "axis_name",
        "axis_index_groups",
        "dtype",
    }
)


def _load_into(into: Any, saved: Any, path: str) -> Any:
    from unitnorm.nn._base import Module

    if not isinstance(into, Module):
        raise TypeError(f"load: into must be a unitnorm layer, got {type(into).__name__}")
    if not isinstance(saved, Module):
        raise ValueError(
            f"load: {path} holds a {type(saved).__name__}, not a layer; call load(path) without into"
        )
    if type(saved) is not type(into):
        raise ValueError(
            f"load: field 'class': {path} holds a {type(saved).__name__}, expected {type(into).__name__}"
        )
    mine, theirs = dict(into._static()), dict(saved._static())
    for key in sorted(set(mine) & set(theirs)):
        if key.startswith("_") or key in _RUNTIME_FIELDS:
            continue
        if mine[key] != theirs[key]:
            raise ValueError(
                f"load: config field '{key}': {path} holds {theirs[key]!r}, "
                f"the {type(into).__name__} has {mine[key]!r}"
            )
    return into.load_state_dict(saved.state_dict())
