"""Small value holders for the layers' parameters and running statistics.

A :class:`State` holds one ``value`` (an array, a Quantity, a dict of them or
``None``). States are JAX pytrees whose only child is that value, so layers
that own them can be passed through ``jax.jit``, ``jax.grad`` and ``jax.vmap``.
The subclasses only label the role of a value, which lets helpers pick out the
parameters (:class:`ParamState`) or the batch statistics (:class:`BatchState`).
Any class built as ``cls(value)`` with a ``.value`` attribute — brainstate's
``ParamState`` and ``BatchState`` included — can stand in for them.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["BatchState", "NormalizationParamState", "ParamState", "State"]


def _register(cls: type) -> None:
    jax.tree_util.register_pytree_with_keys(
        cls,
        lambda s: (((jax.tree_util.GetAttrKey("value"), s.value),), None),
        lambda _, children: cls(children[0]),
        flatten_func=lambda s: ((s.value,), None),
    )


class State:
    """A mutable holder of one value.

    Parameters
    ----------
    value : Any
        The held value, usually a jax array or a brainunit Quantity.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, unitnorm as un
    >>> s = un.ParamState(jnp.zeros(2))
    >>> s.value = s.value + 1
    >>> s.value.tolist(), jax.tree_util.tree_leaves(s)[0].tolist()
    ([1.0, 1.0], [1.0, 1.0])
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value!r})"

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        _register(cls)


class ParamState(State):
    """A trainable parameter (scale, bias)."""

    __slots__ = ()


class BatchState(State):
    """A statistic updated by the forward pass (running mean and variance)."""

    __slots__ = ()


class NormalizationParamState(ParamState):
    """The affine parameters of a normalization layer: ``{'scale': ..., 'bias': ...}``."""

    __slots__ = ()


_register(State)
