"""Checkpoints through orbax-checkpoint with each leaf's unit recorded beside the values.

A unitnorm layer, a Quantity, a brainstate Module holding them, or a train state is
a JAX pytree whose units are static pytree data: orbax stores the numbers and not the
units, and restoring into a target whose unit differs reinterprets the numbers.
The functions here save two orbax items: ``state`` (the mantissas, with orbax's
``StandardSave``) and ``units`` (a JSON record of each leaf's unit, keyed by its
pytree path), and check and convert every leaf on restore.
"""

from __future__ import annotations

import os
from typing import Any

import brainunit as u
import jax
import numpy as np

from unitnorm import _units
from unitnorm._checkpoint import _decode_unit, _encode_unit

__all__ = ["orbax_restore_args", "orbax_save_args", "restore_orbax", "save_orbax", "with_units"]

FORMAT = "unitnorm-orbax-units"
FORMAT_VERSION = 1


def _ocp() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:  # pragma: no cover - orbax is in the test extra
        raise ImportError(
            'unitnorm\'s orbax functions need orbax-checkpoint: pip install -e ".[orbax]"'
        ) from err
    return ocp


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_units.is_quantity)[0]
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def _mantissas(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.mantissa if _units.is_quantity(x) else x, tree, is_leaf=_units.is_quantity
    )


def _units_record(tree: Any) -> dict[str, Any]:
    units = {}
    for where, leaf in _leaves(tree):
        units[where] = _encode_unit(leaf.unit) if _units.is_quantity(leaf) else None
    return {"format": FORMAT, "version": FORMAT_VERSION, "units": units}


def orbax_save_args(tree: Any) -> Any:
    """Build orbax save arguments that record every leaf's unit beside its values.

    Parameters
    ----------
    tree : pytree
        Layers, Quantities, arrays, States, brainstate Modules, dataclasses, optax
        or flax train states: anything ``jax.tree_util`` flattens.

    Returns
    -------
    orbax.checkpoint.args.Composite
        Two items: ``state`` (``StandardSave`` of the tree with each Quantity
        replaced by its mantissa) and ``units`` (``JsonSave`` of each leaf's unit,
        keyed by its pytree path). Pass it to a checkpointer built on
        ``CompositeCheckpointHandler`` (``ocp.Checkpointer`` or
        ``ocp.AsyncCheckpointer``) or to ``CheckpointManager.save(step, args=...)``.

    Raises
    ------
    ImportError
        When orbax-checkpoint is not installed.

    See Also
    --------
    orbax_restore_args, with_units, save_orbax

    Notes
    -----
    A unit is stored as its name plus its SI exponents, scale and factor (as in
    :func:`unitnorm.save`), so a unit whose name does not parse is still exact.

    Examples
    --------
    >>> import tempfile, brainunit as u, jax.numpy as jnp, orbax.checkpoint as ocp
    >>> import unitnorm as un
    >>> tree = {"w": jnp.array([1.0, 2.0]) * u.mV, "step": jnp.array(3)}
    >>> folder = tempfile.mkdtemp()
    >>> with ocp.CheckpointManager(folder) as mngr:
    ...     _ = mngr.save(0, args=un.orbax_save_args(tree))
    ...     mngr.wait_until_finished()
    ...     target = {"w": jnp.zeros(2) * u.volt, "step": jnp.array(0)}
    ...     back = un.with_units(mngr.restore(0, args=un.orbax_restore_args(target)), target)
    >>> print(back["w"], back["step"])
    [0.001 0.002] V 3
    """
    ocp = _ocp()
    return ocp.args.Composite(
        state=ocp.args.StandardSave(_mantissas(tree)), units=ocp.args.JsonSave(_units_record(tree))
    )


def orbax_restore_args(target: Any) -> Any:
    """Build orbax restore arguments for a checkpoint written with :func:`orbax_save_args`.

    Parameters
    ----------
    target : pytree
        The tree to restore into (its structure, shapes and dtypes; its units are
        the units the values are converted to by :func:`with_units`).

    Returns
    -------
    orbax.checkpoint.args.Composite
        ``state`` as ``StandardRestore`` of the target's mantissas, ``units`` as
        ``JsonRestore``. What the checkpointer returns goes to :func:`with_units`.

    See Also
    --------
    orbax_save_args, with_units, restore_orbax

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> sorted(un.orbax_restore_args({"w": jnp.zeros(2) * u.mV}).keys())
    ['state', 'units']
    """
    ocp = _ocp()
    return ocp.args.Composite(
        state=ocp.args.StandardRestore(_mantissas(target)), units=ocp.args.JsonRestore()
    )


def with_units(restored: Any, target: Any) -> Any:
    """Put the recorded units back on restored values, converted to the target's units.

    Parameters
    ----------
    restored : orbax.checkpoint.args.Composite or mapping
        What a checkpointer returned for :func:`orbax_restore_args`: items
        ``state`` (mantissas) and ``units`` (the recorded units).
    target : pytree
        The tree given to :func:`orbax_restore_args`.

    Returns
    -------
    pytree
        The target's structure with the restored values: a leaf in the same unit
        as the target's is the stored value bit for bit; a leaf in a compatible
        unit (mV stored, V in the target) is converted to the target's unit.

    Raises
    ------
    brainunit.UnitMismatchError
        When a stored leaf's unit has another dimension than the target's (the
        message names the leaf path and both units), or a Quantity meets a
        plain array; nothing is returned.
    TypeError
        When an integer leaf would need a fractional conversion factor.
    ValueError
        When ``restored`` has no ``units`` item (a checkpoint saved by plain
        orbax: its units were never recorded), or the record is from another
        format version, or the leaves differ from the target's.

    See Also
    --------
    orbax_restore_args, restore_orbax

    Notes
    -----
    Conversion multiplies the mantissa by the ratio of the two units' sizes
    (exact for powers of ten: mV to µV is 1000.0), in the leaf's own dtype; an
    integer leaf is converted only by a whole factor.

    Examples
    --------
    >>> import os, tempfile, brainunit as u, jax.numpy as jnp, orbax.checkpoint as ocp
    >>> import unitnorm as un
    >>> path = os.path.join(tempfile.mkdtemp(), "w")
    >>> with ocp.AsyncCheckpointer(ocp.CompositeCheckpointHandler()) as ckpt:
    ...     ckpt.save(path, args=un.orbax_save_args({"w": jnp.array([1.0, 2.0]) * u.mV}))
    ...     ckpt.wait_until_finished()
    ...     target = {"w": jnp.zeros(2) * u.uvolt}
    ...     restored = ckpt.restore(path, args=un.orbax_restore_args(target))
    >>> print(un.with_units(restored, target)["w"])
    [1000. 2000.] uV
    """
    state, record = _items(restored)
    stored = _stored_units(record)
    target_leaves = _leaves(target)
    restored_leaves = [leaf for _, leaf in _leaves(state)]
    if len(restored_leaves) != len(target_leaves) or set(stored) != {w for w, _ in target_leaves}:
        missing = sorted({w for w, _ in target_leaves} - set(stored))
        extra = sorted(set(stored) - {w for w, _ in target_leaves})
        raise ValueError(
            f"with_units: the checkpoint's leaves differ from the target's; "
            f"missing in the checkpoint {missing[:5]}, not in the target {extra[:5]}"
        )
    out = []
    for (where, leaf), value in zip(target_leaves, restored_leaves, strict=True):
        out.append(_convert(where, value, stored[where], leaf))
    treedef = jax.tree_util.tree_structure(target, is_leaf=_units.is_quantity)
    return jax.tree_util.tree_unflatten(treedef, out)


def _items(restored: Any) -> tuple[Any, Any]:
    try:
        state, record = restored["state"], restored["units"]
    except (KeyError, TypeError):
        state = record = None
    if record is None:
        raise ValueError(
            "with_units: expected the items 'state' and 'units' that orbax_save_args writes; "
            f"got {type(restored).__name__} without 'units' (a checkpoint saved by plain orbax records "
            "no units: restore it with orbax and attach the units yourself)"
        )
    return state, record


def _stored_units(record: Any) -> dict[str, u.Unit | None]:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"with_units: item 'units': field 'format' must be {FORMAT!r}")
    if record.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"with_units: item 'units': field 'version' is {record.get('version')!r}; "
            f"this unitnorm reads version {FORMAT_VERSION}"
        )
    units = record.get("units")
    if not isinstance(units, dict):
        raise ValueError("with_units: item 'units': missing field 'units'")
    return {k: None if v is None else _decode_unit(v, f"units[{k!r}]") for k, v in units.items()}


def _convert(where: str, value: Any, stored: u.Unit | None, target_leaf: Any) -> Any:
    target_unit = target_leaf.unit if _units.is_quantity(target_leaf) else None
    if stored is None and target_unit is None:
        return value
    s = u.UNITLESS if stored is None else stored
    t = u.UNITLESS if target_unit is None else target_unit
    if not _units.same_dim(s, t):
        raise _units.UnitError(
            f"restore: leaf {where} was saved in {_units.describe(s)} but the target holds "
            f"{_units.describe(t)}; restore into a target of that dimension"
        )
    if s == t and s.scale == t.scale and s.factor == t.factor:
        mantissa = value
    else:
        from unitnorm.io._recording import factor  # exact for powers of ten (mV -> uV is 1000.0)

        ratio = factor(s, t)
        dtype = np.asarray(value).dtype if not isinstance(value, jax.Array) else value.dtype
        if not np.issubdtype(dtype, np.inexact) and not float(ratio).is_integer():
            raise TypeError(
                f"restore: leaf {where} holds integers ({dtype}) in {s}; converting them to {t} "
                f"(x {ratio:g}) needs floats; restore into a target in {s}"
            )
        mantissa = (value * np.asarray(ratio, dtype=dtype)).astype(dtype)
    return mantissa if target_unit is None else u.Quantity(mantissa, unit=target_unit)


def save_orbax(
    path: str | os.PathLike[str], tree: Any, *, asynchronous: bool = False, force: bool = False
) -> None:
    """Save a pytree with orbax-checkpoint, each leaf's unit recorded beside its values.

    Parameters
    ----------
    path : str or path-like
        The checkpoint folder orbax creates (absolute or relative; made absolute).
    tree : pytree
        See :func:`orbax_save_args`.
    asynchronous : bool, default False
        Write with ``ocp.AsyncCheckpointer`` and wait for it to finish before
        returning (the array copies are taken on the calling thread either way).
    force : bool, default False
        Replace an existing checkpoint at ``path`` (orbax's ``force``).

    Raises
    ------
    ValueError
        When ``path`` exists and ``force`` is False (orbax's error).

    See Also
    --------
    restore_orbax, orbax_save_args

    Notes
    -----
    orbax writes into a temporary folder and renames it when complete, so a
    crash leaves no half-written checkpoint at ``path``.

    Examples
    --------
    >>> import os, tempfile, brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(2, in_unit=u.mV, momentum=0.0)
    >>> _ = layer(jnp.array([[1.0, 2.0], [3.0, 6.0]]) * u.mV)
    >>> path = os.path.join(tempfile.mkdtemp(), "bn")
    >>> un.save_orbax(path, layer)
    >>> back = un.restore_orbax(path, un.BatchNorm0d(2, in_unit=u.volt))
    >>> print(back.running_mean.value)
    [0.002 0.004] V
    """
    ocp = _ocp()
    path = os.path.abspath(os.fspath(path))
    handler = ocp.CompositeCheckpointHandler()
    if asynchronous:
        with ocp.AsyncCheckpointer(handler) as ckpt:
            ckpt.save(path, args=orbax_save_args(tree), force=force)
            ckpt.wait_until_finished()
    else:
        with ocp.Checkpointer(handler) as ckpt:
            ckpt.save(path, args=orbax_save_args(tree), force=force)


def restore_orbax(path: str | os.PathLike[str], target: Any) -> Any:
    """Restore what :func:`save_orbax` wrote into the structure and units of ``target``.

    Parameters
    ----------
    path : str or path-like
        The checkpoint folder.
    target : pytree
        A tree of the saved structure; its units are the units the result has.

    Returns
    -------
    pytree
        A new tree (``target`` is not changed): same unit → the saved values bit
        for bit; compatible unit → converted; see :func:`with_units`.

    Raises
    ------
    brainunit.UnitMismatchError
        For a leaf saved in another dimension than the target's, naming the leaf
        and both units.
    ValueError
        For a folder that is not such a checkpoint.

    See Also
    --------
    save_orbax, with_units

    Examples
    --------
    >>> import os, tempfile, brainunit as u, jax.numpy as jnp, unitnorm as un
    >>> path = os.path.join(tempfile.mkdtemp(), "w")
    >>> un.save_orbax(path, {"w": jnp.array([1.0]) * u.mV})
    >>> un.restore_orbax(path, {"w": jnp.zeros(1) * u.nA})
    Traceback (most recent call last):
        ...
    unitnorm._units.UnitError: restore: leaf ['w'] was saved in voltage (mV) but the target ...
    """
    ocp = _ocp()
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(os.path.join(path, "units")):
        raise ValueError(
            f"restore_orbax: {path} has no 'units' item; expected a checkpoint written by "
            "unitnorm.save_orbax (a plain orbax checkpoint records no units)"
        )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
        restored = ckpt.restore(path, args=orbax_restore_args(target))
    return with_units(restored, target)
