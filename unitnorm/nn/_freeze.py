"""freeze()/unfreeze(): keep a layer's statistics (and optionally its affine parameters) fixed."""

from __future__ import annotations

from typing import Any

from jax import lax

__all__ = ["Freezable"]


class Freezable:
    """Mixin of the layers: :meth:`freeze` and :meth:`unfreeze`.

    ``frozen`` and ``frozen_affine`` are static configuration (class defaults
    here, so layers saved before they existed still load): changing them
    retraces a jitted function, as :meth:`train` / :meth:`eval` do.
    """

    frozen: bool = False
    frozen_affine: bool = False

    def freeze(self, affine: bool = False) -> Any:
        """Freeze the layer's statistics (and, with ``affine=True``, its affine parameters); return it.

        A frozen layer evaluates whatever the mode: it normalizes with its
        running statistics (BatchNorm, BatchRenorm) or its stored power
        iterate (SpectralNorm) and never updates them; :meth:`train`, a
        parent that switches its children to training mode,
        ``training=True`` (``update_stats=True``) on a call and brainstate's
        ``fit`` flag do not change that. The affine parameters (``scale`` and
        ``bias``; WeightNorm's ``scale``) stay trainable unless
        ``affine=True``, which stops their gradient. Layers that normalize each
        sample with its own statistics (LayerNorm, RMSNorm, GroupNorm,
        InstanceNorm) have no statistics to freeze: for them only
        ``affine=True`` changes anything.

        Parameters
        ----------
        affine : bool, default False
            Also freeze the affine parameters (their gradient is zero).

        Returns
        -------
        layer
            This layer.

        Raises
        ------
        ValueError
            For a batch norm without running statistics (``track_running_stats=False``).

        See Also
        --------
        unfreeze

        Examples
        --------
        >>> import jax.numpy as jnp, unitnorm as un
        >>> layer = un.BatchNorm0d(2).freeze()
        >>> x = jnp.array([[1., 2.], [3., 4.]])
        >>> y = layer.train()(x, training=True)  # running statistics 0 and 1: y is x
        >>> layer.running_mean.value.tolist(), bool(jnp.allclose(y, x, atol=1e-4))
        ([0.0, 0.0], True)
        """
        self._check_freezable()
        self.frozen, self.frozen_affine = True, bool(affine)
        return self

    def unfreeze(self) -> Any:
        """Undo :meth:`freeze`: the mode decides again, and the affine parameters train; return the layer.

        Examples
        --------
        >>> import jax.numpy as jnp, unitnorm as un
        >>> layer = un.BatchNorm0d(2).freeze().unfreeze()
        >>> _ = layer(jnp.array([[1., 2.], [3., 4.]]))
        >>> [round(v, 3) for v in layer.running_mean.value.tolist()]
        [0.02, 0.03]
        """
        self.frozen, self.frozen_affine = False, False
        return self

    def _check_freezable(self) -> None:
        """Raise ``ValueError`` when freezing would not mean anything (overridden by the layers)."""

    def _is_training(self, training: bool | None) -> bool:
        mode = super()._is_training(training)  # type: ignore[misc]
        return False if self.frozen else mode

    def _frozen_affine(self, *values: Any) -> tuple[Any, ...]:
        """Return ``values`` with their gradient stopped when the affine parameters are frozen."""
        if not self.frozen_affine:
            return values
        return tuple(None if v is None else lax.stop_gradient(v) for v in values)
