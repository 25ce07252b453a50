"""Pick the trainable values out of a model, and put them back.

A model here is any pytree that holds unitnorm :class:`~unitnorm.State`
objects: one layer, a list or dict of layers, your own pytree class. Gradients
should be taken with respect to the parameters only (``ParamState``), never the
running statistics (``BatchState``), which the forward pass updates. Two
equivalent ways are offered:

* :func:`params` / :func:`load_params`: a flat ``{path: value}`` dict of the
  parameter values, which ``jax.grad`` and ``optax`` take as they are;
* :func:`partition` / :func:`merge`: split the model into a part holding the
  States of the given types and a part holding the rest (``None`` stands in for
  what went to the other part), and join them again.

Both are pure: they build new States and new layers and never change the
ones they were given, so they are safe inside ``jax.jit`` and ``jax.grad``.
States of other libraries (brainstate's ``ParamState``) are not JAX pytrees;
use brainstate's own tools for those (``module.states(brainstate.ParamState)``
and ``brainstate.transform.grad``).
"""

from __future__ import annotations

from typing import Any

import jax

from unitnorm.state import ParamState, State

__all__ = ["load_params", "merge", "params", "partition"]


def _is_state(x: Any) -> bool:
    return isinstance(x, State)


def _check_types(types: tuple[Any, ...], who: str) -> tuple[type, ...]:
    if not types:
        raise TypeError(f"{who}: give at least one State class, e.g. un.ParamState")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, State)):
            raise TypeError(f"{who}: expected unitnorm State classes such as un.ParamState, got {t!r}")
    return tuple(types)


def _path(keys: tuple[Any, ...]) -> str:
    """Join a pytree key path into ``'bn1.weight'`` / ``'0.weight'`` (``''`` for the root)."""
    parts = []
    for k in keys:
        if isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return ".".join(parts)


def _states_with_paths(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_state)
    return [(_path(p), leaf) for p, leaf in leaves], treedef


def params(tree: Any, *types: type) -> dict[str, Any]:
    """Return the values of a model's parameter States as a flat dict.

    Parameters
    ----------
    tree : pytree
        A layer, or any pytree of layers and States.
    *types : type
        State classes to collect; default :class:`~unitnorm.ParamState` (which
        includes :class:`~unitnorm.NormalizationParamState`).

    Returns
    -------
    dict of str to value
        ``{path: state.value}``, the path made of attribute names, dict keys
        and list indices joined by dots (``'weight'``, ``'bn1.weight'``,
        ``'0.weight'``). Values are kept as they are (a BatchNorm ``weight``
        is ``{'scale': ..., 'bias': ...}``, Quantities keep their unit), so the
        dict is a pytree that ``jax.grad`` and ``optax`` accept.

    Raises
    ------
    TypeError
        When an entry of ``types`` is not a unitnorm State class.

    See Also
    --------
    load_params : put such a dict back into a model.
    partition, merge : the same split, keeping the model's structure.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(2)
    >>> p = un.params(layer)
    >>> list(p), sorted(p["weight"])
    (['weight'], ['bias', 'scale'])
    >>> def loss(p, layer, x):
    ...     y = un.load_params(layer, p)(x)
    ...     return ((y - 1.0) ** 2).mean()
    >>> grads = jax.grad(loss)(p, layer, jnp.array([[0., 1.], [2., 5.]]))
    >>> [round(v, 3) for v in grads["weight"]["bias"].tolist()]
    [-1.0, -1.0]
    """
    types = _check_types(types or (ParamState,), "params")
    found, _ = _states_with_paths(tree)
    out: dict[str, Any] = {}
    for path, leaf in found:
        if isinstance(leaf, types):
            out[path] = leaf.value
    return out


def load_params(tree: Any, values: dict[str, Any]) -> Any:
    """Return a copy of ``tree`` whose States at the given paths hold the given values.

    Parameters
    ----------
    tree : pytree
        A layer, or any pytree of layers and States. It is not changed.
    values : dict of str to value
        As returned by :func:`params` (possibly updated by an optimizer, or a
        subset of it).

    Returns
    -------
    pytree
        A new model: the States named in ``values`` are new States of the same
        class holding the new values; every other State is copied.

    Raises
    ------
    KeyError
        When a path in ``values`` names no State of ``tree``.
    ValueError
        When a new value's pytree structure differs from the old value's
        (a missing ``'bias'``, a Quantity where a plain array was).

    Examples
    --------
    >>> import jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(2)
    >>> new = un.load_params(layer, {"weight": {"scale": jnp.full(2, 3.0), "bias": jnp.zeros(2)}})
    >>> new.weight.value["scale"].tolist(), layer.weight.value["scale"].tolist()
    ([3.0, 3.0], [1.0, 1.0])
    """
    if not isinstance(values, dict):
        raise TypeError(f"load_params: values must be a dict from params(), got {type(values).__name__}")
    found, treedef = _states_with_paths(tree)
    by_path = {path: leaf for path, leaf in found if _is_state(leaf)}
    unknown = sorted(set(values) - set(by_path))
    if unknown:
        raise KeyError(f"load_params: no State at {unknown}; the model has States at {sorted(by_path)}")
    new_leaves = []
    for path, leaf in found:
        if not _is_state(leaf):
            new_leaves.append(leaf)
            continue
        if path in values:
            old_def = jax.tree_util.tree_structure(leaf.value)
            new_def = jax.tree_util.tree_structure(values[path])
            if old_def != new_def:
                raise ValueError(
                    f"load_params: the value for {path!r} has structure {new_def}, the State holds {old_def}"
                )
            new_leaves.append(type(leaf)(values[path]))
        else:
            new_leaves.append(type(leaf)(leaf.value))
    return jax.tree_util.tree_unflatten(treedef, new_leaves)


def partition(tree: Any, *types: type) -> tuple[Any, Any]:
    """Split a model into the States of ``types`` and everything else.

    Parameters
    ----------
    tree : pytree
        A layer, or any pytree of layers and States.
    *types : type
        State classes that go to the first part; default
        :class:`~unitnorm.ParamState`.

    Returns
    -------
    selected, rest : pytree
        Two models shaped like ``tree``. ``selected`` holds the matching States
        and ``None`` elsewhere; ``rest`` holds the other States and leaves and
        ``None`` where a matching State was. Only :func:`merge` should call
        them; they are pytrees, so ``jax.grad`` and ``optax`` take ``selected``.

    Raises
    ------
    TypeError
        When an entry of ``types`` is not a unitnorm State class.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(2)
    >>> trainable, rest = un.partition(layer)
    >>> def loss(trainable, rest, x):
    ...     return (un.merge(trainable, rest)(x) ** 2).sum()
    >>> g = jax.grad(loss)(trainable, rest, jnp.array([[0., 1.], [2., 5.]]))
    >>> type(g.weight).__name__, g.running_mean
    ('NormalizationParamState', None)
    """
    types = _check_types(types or (ParamState,), "partition")
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_state)
    # fresh States, so the parts share no mutable holder with `tree`
    fresh = [type(x)(x.value) if _is_state(x) else x for x in leaves]
    chosen = [isinstance(x, types) for x in fresh]
    selected = [x if c else None for x, c in zip(fresh, chosen, strict=True)]
    rest = [None if c else x for x, c in zip(fresh, chosen, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, selected), jax.tree_util.tree_unflatten(treedef, rest)


def merge(*parts: Any) -> Any:
    """Join the parts made by :func:`partition` back into one model.

    Parameters
    ----------
    *parts : pytree
        Models of one structure; at each State position exactly one of them
        holds something other than ``None``.

    Returns
    -------
    pytree
        The joined model (new States; the parts are not changed).

    Raises
    ------
    ValueError
        When the parts do not have one structure, or two parts both fill a position.

    Examples
    --------
    >>> import jax.numpy as jnp, unitnorm as un
    >>> layer = un.BatchNorm0d(2)
    >>> stats, rest = un.partition(layer, un.BatchState)
    >>> un.merge(stats, rest)(jnp.ones((3, 2))).tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    """
    if not parts:
        raise ValueError("merge: give at least one part")

    def pick(*xs: Any) -> Any:
        filled = [x for x in xs if x is not None]
        if len(filled) > 1:
            raise ValueError("merge: two parts both hold a value at one position; merge what partition made")
        if not filled:
            return None
        x = filled[0]
        return type(x)(x.value) if _is_state(x) else x

    try:
        return jax.tree_util.tree_map(pick, *parts, is_leaf=lambda x: x is None or _is_state(x))
    except ValueError as err:
        if str(err).startswith("merge:"):
            raise
        raise ValueError(f"merge: the parts do not have one structure ({err})") from None
