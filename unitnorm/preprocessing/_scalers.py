"""Scalers with the scikit-learn protocol whose statistics are Quantities.

:class:`StandardScaler`, :class:`RobustScaler` and :class:`QuantileScaler` share
one base: the input is read as float64 mantissas per channel (any unit of the
fitted dimension is converted), statistics are accumulated per *slot* (a channel,
or a pool of channels with ``per='dimension'``), and ``transform`` computes
``(x - center) / scale + offset`` per channel.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterator
from typing import Any

import brainunit as u
import numpy as np

from unitnorm import _moments, _units
from unitnorm.io._recording import Recording, attach
from unitnorm.preprocessing import _exact
from unitnorm.preprocessing._input import Layout, Source, layout_for, read_input

__all__ = ["NotFittedError", "QuantileScaler", "RobustScaler", "StandardScaler"]

#: SpikeInterface's MAD → standard deviation constant (the normal distribution's 0.75 quantile).
MAD_NORMAL = 0.6744897501960817
_EPS = float(np.finfo(np.float64).eps)


class NotFittedError(ValueError, AttributeError):
    """A scaler was used before ``fit`` (a ValueError and an AttributeError, like scikit-learn's)."""


_SHARED_PARAMS = """per : {'channel', 'dimension'} or sequence of sequences of int, default 'channel'
        ``'channel'``: one statistic per channel. ``'dimension'``: one per physical
        dimension, pooling every channel that shares it (all V channels together,
        all T channels together; never across dimensions). A list of pools of
        channel indices pools those channels; a pool that mixes dimensions is a
        unit error.
    flat : {'unit', 'raise', 'nan'}, default 'unit'
        A channel whose spread is zero (or within float64 rounding of zero,
        ``scale <= 64 eps |center|``): ``'unit'`` divides it by 1 (as
        scikit-learn), ``'raise'`` raises ``ValueError`` naming the channels (in
        ``fit``, and in ``transform`` after ``partial_fit``), ``'nan'`` gives NaN.
        Never a division by ~0.
    nan_policy : {'propagate', 'omit', 'raise'}, default 'propagate'
        As in the layers: ``'propagate'`` lets a NaN make its channel's
        statistics NaN; ``'omit'`` leaves out non-finite values (NaN, +-inf) when
        fitting; ``'raise'`` raises ``ValueError`` when fitting data with a
        non-finite value (nothing is changed)."""


def _check_choice(value: Any, choices: tuple[str, ...], name: str, who: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{who}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_per(per: Any, who: str) -> Any:
    if isinstance(per, str):
        return _check_choice(per, ("channel", "dimension"), "per", who)
    try:
        pools = tuple(tuple(int(i) for i in pool) for pool in per)
    except (TypeError, ValueError):
        raise ValueError(
            f"{who}: per must be 'channel', 'dimension' or a list of pools of channel indices, "
            f"got {per!r:.60}"
        ) from None
    if not pools or any(not p for p in pools):
        raise ValueError(f"{who}: per must list non-empty pools of channel indices, got {per!r:.60}")
    return pools


class _Scaler:
    """Shared protocol: fit / partial_fit / transform / inverse_transform / fit_transform."""

    _param_names: tuple[str, ...] = ()
    _offset = 0.0

    def __init__(self, *, per: Any = "channel", flat: str = "unit", nan_policy: str = "propagate"):
        who = type(self).__name__
        self.per = _check_per(per, who)
        self.flat = _check_choice(flat, ("unit", "raise", "nan"), "flat", who)
        self.nan_policy = _check_choice(nan_policy, ("propagate", "omit", "raise"), "nan_policy", who)

    # ------------------------------------------------------------------ sklearn-style helpers

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor keywords and their values (as scikit-learn's ``get_params``)."""
        return {k: getattr(self, k) for k in (*self._param_names, "per", "flat", "nan_policy")}

    def __repr__(self) -> str:
        from unitnorm import _display

        return _display.scaler_repr(
            self._who, _display.changed_params(self, list(self.get_params().items())), self._display_fitted()
        )

    def _repr_html_(self) -> str:
        from unitnorm import _display

        return _display.scaler_html(self._who, list(self.get_params().items()), self._display_fitted())

    def _display_fitted(self) -> list[tuple[str, str]] | None:
        """Per fitted statistic its per-feature range with units, or ``None`` before fitting."""
        from unitnorm import _display

        if self.__dict__.get("_stats") is None:
            return None
        names = [f"{k}_" for k in self._stats if not k.startswith("_")]
        fields = [("n_features_in_", str(self.n_features_in_))]
        return fields + _display.fitted_fields([(k, getattr(self, k, None)) for k in names])

    @property
    def _who(self) -> str:
        return type(self).__name__

    def _check_fitted(self, what: str) -> Layout:
        layout = self.__dict__.get("_layout")
        if layout is None:
            raise NotFittedError(f"This {self._who} is not fitted yet; call fit or partial_fit before {what}")
        return layout

    # ------------------------------------------------------------------ fitting

    def fit(self, data: Any, *, chunk_samples: int | None = None, progress: bool | None = False) -> Any:
        """Fit the statistics to ``data``, forgetting anything seen before; returns ``self``.

        Parameters
        ----------
        data : array_like, Quantity, Recording or iterable of chunks
            ``(time, channels)``. A Recording is read chunk by chunk (never whole).
        chunk_samples : int, optional
            Samples per chunk when reading a Recording (default about 2**20 values).
        progress : bool, optional
            A tqdm bar per pass over a Recording: ``False`` (default) never, ``None``
            when stderr is a terminal, ``True`` always.

        Returns
        -------
        self
        """
        src = read_input(data, f"{self._who}.fit")
        layout = layout_for(self.per, src.units, src.names, self._who)
        acc = self._fit_recording(src, layout, chunk_samples, progress) if src.kind == "recording" else None
        if acc is None:
            acc = self._new_acc(layout.n_slots)
            self._accumulate(acc, src, layout, chunk_samples, f"{self._who}.fit", progress)
        stats = self._finalize(acc, layout)
        self._check_flat_on_fit(stats, layout)
        self._commit(layout, acc, stats)
        return self

    def partial_fit(self, data: Any, *, chunk_samples: int | None = None) -> Any:
        """Add ``data`` to what was seen so far (exact: equal to ``fit`` on everything); returns ``self``.

        Parameters
        ----------
        data : array_like, Quantity, Recording or iterable of chunks
            ``(time, channels)``, in any unit of the dimension first fitted.
        chunk_samples : int, optional
            Samples per chunk when reading a Recording.

        Returns
        -------
        self
        """
        who = f"{self._who}.partial_fit"
        src = read_input(data, who)
        layout = self.__dict__.get("_layout")
        if layout is None:
            layout = layout_for(self.per, src.units, src.names, self._who)
            acc = self._new_acc(layout.n_slots)
        else:
            if self._acc is None:
                raise ValueError(
                    f"{who}: this {self._who} was fitted on a Recording with the bounded-memory two-pass "
                    "method (or loaded from a checkpoint without value tables) and keeps no value tables "
                    "to add to; call partial_fit from the start on every chunk, or fit again"
                )
            self._check_names(layout, src, who)
            acc = self._copy_acc(self._acc)
        self._accumulate(acc, src, layout, chunk_samples, who)
        self._commit(layout, acc, self._finalize(acc, layout))
        return self

    def _accumulate(
        self,
        acc: Any,
        src: Source,
        layout: Layout,
        chunk_samples: int | None,
        who: str,
        progress: Any = False,
    ) -> None:
        factors = layout.factors(src.units, who)
        for block in src.blocks(who, chunk_samples, progress):
            block = self._prepare(block, factors, layout, who)
            self._update(acc, layout.split(block))

    def _prepare(self, block: np.ndarray, factors: np.ndarray, layout: Layout, who: str) -> np.ndarray:
        if np.any(factors != 1.0):
            block = block * factors
        if self.nan_policy != "propagate":
            bad = ~np.isfinite(block)
            if bad.any():
                if self.nan_policy == "raise":
                    cols = np.flatnonzero(bad.any(axis=0))
                    raise ValueError(
                        f"{who}: non-finite values in {self._channels(cols, layout)} (nan_policy='raise')"
                    )
                block = np.where(bad, np.nan, block)
        return block

    @staticmethod
    def _channels(cols: Any, layout: Layout) -> str:
        cols = [int(c) for c in cols]
        if layout.names:
            return (
                "channel" + ("s " if len(cols) > 1 else " ") + ", ".join(repr(layout.names[c]) for c in cols)
            )
        return "channel" + ("s " if len(cols) > 1 else " ") + ", ".join(map(str, cols))

    def _fit_recording(self, src: Source, layout: Layout, chunk_samples: int | None, progress: Any) -> Any:
        return None  # the default: stream the chunks into the accumulator

    # ------------------------------------------------------------------ fitted state

    def _commit(self, layout: Layout, acc: Any, stats: dict[str, tuple[np.ndarray, int]]) -> None:
        self._layout = layout
        self._acc = acc
        self._stats = stats
        self.groups_ = tuple(g.copy() for g in layout.groups)
        self.n_features_in_ = layout.n_channels
        if layout.names is not None:
            self.channel_names_ = layout.names
        elif "channel_names_" in self.__dict__:
            del self.channel_names_
        for name, (values, power) in stats.items():
            if not name.startswith("_"):
                setattr(self, f"{name}_", self._attribute(values, power, layout))

    @staticmethod
    def _attribute(values: np.ndarray | None, power: int, layout: Layout) -> Any:
        if values is None:
            return None
        if power == 0:
            return values if len(values) > 1 or not layout.pooled else values[0]
        parts = []
        for g, idx in enumerate(layout.groups):
            v = values[g] if layout.pooled else values[idx]
            parts.append(attach(np.asarray(v, dtype=np.float64), layout.units[g] ** power))
        return parts[0] if len(parts) == 1 else tuple(parts)

    def _flat_slots(self, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.isfinite(spread) & (spread <= 64 * _EPS * np.abs(np.nan_to_num(center)))

    def _apply_flat(self, center: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = self._flat_slots(center, spread)
        scale = spread.copy()
        if self.flat == "unit":
            scale[flat] = 1.0
        elif self.flat == "nan":
            scale[flat] = np.nan
        return scale, flat

    def _flat_channels(self, layout: Layout) -> np.ndarray:
        flat = self._stats.get("_flat", (None, 0))[0]
        if flat is None or not flat.any():
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(layout.per_channel(flat))

    def _check_flat_on_fit(self, stats: dict[str, Any], layout: Layout) -> None:
        flat = stats.get("_flat", (None, 0))[0]
        if self.flat == "raise" and flat is not None and flat.any():
            cols = np.flatnonzero(layout.per_channel(flat))
            raise ValueError(
                f"{self._who}: {self._channels(cols, layout)} {'is' if len(cols) == 1 else 'are'} flat "
                "(zero spread); drop them, or use flat='unit' or flat='nan'"
            )

    def _center_scale(self, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
        center = self._stats["_center"][0]
        scale = self._stats["_scale"][0]
        return layout.per_channel(center), layout.per_channel(scale)

    # ------------------------------------------------------------------ transforming

    def _check_names(self, layout: Layout, src: Source, who: str) -> None:
        if layout.names is not None and src.names is not None and tuple(src.names) != layout.names:
            missing = [n for n in layout.names if n not in src.names]
            if missing:
                raise ValueError(
                    f"{who}: the data lack the fitted channel{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(map(repr, missing))}"
                )

    def _ready(self, data: Any, who: str) -> tuple[Source, Layout, np.ndarray, np.ndarray, np.ndarray]:
        layout = self._check_fitted(who.split(".")[-1])
        if self.flat == "raise":
            cols = self._flat_channels(layout)
            if cols.size:
                raise ValueError(
                    f"{who}: {self._channels(cols, layout)} {'is' if len(cols) == 1 else 'are'} "
                    "flat (zero spread) "
                    "and flat='raise'"
                )
        src = read_input(data, who)
        if src.kind == "recording" and layout.names is not None and src.names != layout.names:
            self._check_names(layout, src, who)
            picked = read_input(src.value.pick(list(layout.names)), who)
            picked.mne = src.mne  # an MNE input comes back as MNE, with the fitted channels
            src = picked
        if src.n_channels != layout.n_channels:
            raise ValueError(f"{who} expected {layout.n_channels} channels (as fitted), got {src.n_channels}")
        factors = layout.factors(src.units, who)
        center, scale = self._center_scale(layout)
        return src, layout, factors, center, scale

    def transform(self, data: Any) -> Any:
        """Normalize ``data`` with the fitted statistics: ``(x - center) / scale`` per channel.

        Parameters
        ----------
        data : array_like, Quantity, Recording, mne.io.BaseRaw, mne.BaseEpochs or iterable of chunks
            ``(time, channels)`` in any unit of the fitted dimension (converted first).
            An MNE Raw or Epochs is read in the SI units of its channel info (the
            rows of Epochs are epochs x time).

        Returns
        -------
        array, Recording, Raw, Epochs or iterator of arrays
            Dimensionless, the same kind as given: an array (of the input's float
            dtype, float64 for integers) for an array or a Quantity; a lazily
            normalized Recording (read, and normalized, chunk by chunk when used)
            for a Recording; a copy of an MNE Raw or Epochs (info, events and
            annotations kept) holding the normalized values; an iterator of arrays
            for an iterable of chunks.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            For another number of channels, a Recording lacking a fitted channel name,
            or flat channels with ``flat='raise'``.
        brainunit.UnitMismatchError
            For data whose unit has another dimension than the fitted one.
        """
        who = f"{self._who}.transform"
        src, layout, factors, center, scale = self._ready(data, who)
        offset = self._offset
        a = factors / scale
        b = offset - center / scale
        if src.kind == "recording":  # an MNE Raw or Epochs comes back as one
            return src.output(_scaled_recording(src.value, a, b, center, scale, factors, offset))
        if src.kind == "chunks":
            return _scaled_chunks(src, a, b, center, scale, factors, offset, who)
        return _scaled_array(src.value, center, scale, factors, offset)

    def fit_transform(self, data: Any, *, chunk_samples: int | None = None) -> Any:
        """``fit(data)`` then ``transform(data)`` (a one-shot iterator of chunks is kept in memory first)."""
        if (
            not isinstance(data, Recording)
            and not hasattr(data, "__array__")
            and not isinstance(data, (list, tuple))
        ):
            src = read_input(data, f"{self._who}.fit_transform")
            if src.kind == "chunks":
                data = list(src.value)
        return self.fit(data, chunk_samples=chunk_samples).transform(data)

    def inverse_transform(self, y: Any) -> Any:
        """Undo :meth:`transform`: ``y * scale + center``, as Quantities in the fitted unit.

        Parameters
        ----------
        y : array_like
            Dimensionless ``(time, channels)``.

        Returns
        -------
        Quantity or tuple of Quantity
            In the fitted unit (a plain array when the fitted data were dimensionless);
            with channels of several dimensions, one Quantity per group of ``groups_``
            holding that group's columns.
        """
        who = f"{self._who}.inverse_transform"
        layout = self._check_fitted("inverse_transform")
        m, unit = (y.mantissa, y.unit) if isinstance(y, u.Quantity) else (y, _units.UNITLESS)
        if not u.get_dim(unit).is_dimensionless:
            raise _units.UnitError(f"{who} expected dimensionless values, got {_units.describe(unit)}")
        src = read_input(m if unit.is_unitless else np.asarray(y.to_decimal()), who)
        if src.kind != "array":
            raise TypeError(f"{who} expected an array of shape (time, channels), got {type(y).__name__}")
        if src.n_channels != layout.n_channels:
            raise ValueError(f"{who} expected {layout.n_channels} channels (as fitted), got {src.n_channels}")
        center, scale = self._center_scale(layout)
        arr = np.asarray(src.value)
        out = (arr.astype(np.float64) - self._offset) * scale + center
        dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
        out = out.astype(dtype)
        parts = []
        for g, idx in enumerate(layout.groups):
            cols = out if len(layout.groups) == 1 else out[:, idx]
            parts.append(attach(_like(cols, src.value), layout.units[g]))
        return parts[0] if len(parts) == 1 else tuple(parts)

    # ------------------------------------------------------------------ layer

    def as_layer(self) -> Any:
        """Return an evaluation-only unitnorm layer whose output equals :meth:`transform`.

        The layer (a :class:`ScalerLayer`, a jit-able pytree) holds the fitted
        center and scale per channel as States in the fitted unit; its ``inverse(y)``
        gives Quantities back (denormalizing a model's outputs).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            When the channels have several dimensions (one array cannot hold them)
            or flat channels were found with ``flat='raise'``.
        """
        from unitnorm.preprocessing._layer import ScalerLayer

        layout = self._check_fitted("as_layer")
        if len({u.get_dim(unit) for unit in layout.units}) > 1 or (
            len(layout.units) > 1 and len({str(unit) for unit in layout.units}) > 1
        ):
            raise ValueError(
                f"{self._who}.as_layer: the channels have {len(layout.units)} units "
                f"({', '.join(str(x) for x in layout.units)}); a layer takes one array, "
                "fit a scaler per dimension"
            )
        if self.flat == "raise" and self._flat_channels(layout).size:
            raise ValueError(f"{self._who}.as_layer: flat channels and flat='raise'")
        center, scale = self._center_scale(layout)
        return ScalerLayer(center, scale, unit=layout.units[0], offset=self._offset)

    # ------------------------------------------------------------------ checkpoints

    def _export(self) -> tuple[dict[str, Any], Any]:
        """Return (JSON-able config with Units, tree of arrays) for the checkpoint format."""
        params = {k: v for k, v in self.get_params().items()}
        layout = self.__dict__.get("_layout")
        if layout is None:
            return {"params": params, "fitted": None}, None
        fitted = {
            "groups": [[int(i) for i in g] for g in layout.groups],
            "units": list(layout.units),
            "pooled": layout.pooled,
            "names": None if layout.names is None else list(layout.names),
            "powers": {k: p for k, (v, p) in self._stats.items()},
        }
        arrays = {
            "stats": {k: np.asarray(v) for k, (v, p) in self._stats.items() if v is not None},
            "acc": self._export_acc(),
        }
        return {"params": params, "fitted": fitted}, arrays

    @classmethod
    def _import(cls, config: dict[str, Any], arrays: Any, where: str) -> Any:
        params = dict(config["params"])
        if isinstance(params.get("per"), tuple):
            params["per"] = tuple(tuple(p) for p in params["per"])
        try:
            obj = cls(**params)
        except TypeError as err:
            raise ValueError(f"{where}: field 'params' does not fit {cls.__name__}: {err}") from None
        fitted = config["fitted"]
        if fitted is None:
            return obj
        groups = tuple(np.array(g, dtype=np.int64) for g in fitted["groups"])
        n = sum(len(g) for g in groups)
        if n == 0 or sorted(int(i) for g in groups for i in g) != list(range(n)):
            raise ValueError(f"{where}: field 'groups' must list every channel index once")
        names = fitted["names"]
        layout = Layout(
            groups, tuple(fitted["units"]), bool(fitted["pooled"]), n, None if names is None else tuple(names)
        )
        stats: dict[str, tuple[Any, int]] = {}
        for k, p in fitted["powers"].items():
            if k not in arrays["stats"]:  # a statistic the configuration does not compute (None)
                stats[k] = (None, int(p))
                continue
            stats[k] = (np.asarray(arrays["stats"][k], dtype=bool if k == "_flat" else np.float64), int(p))
        for k, (v, _) in stats.items():
            if v is not None and v.shape != (layout.n_slots,):
                raise ValueError(
                    f"{where}: field 'stats.{k}' expected shape ({layout.n_slots},), got {v.shape}"
                )
        obj._commit(layout, obj._import_acc(arrays.get("acc"), layout.n_slots, where, stats), stats)
        return obj

    # subclass hooks
    def _new_acc(self, n_slots: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _copy_acc(self, acc: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, acc: Any, slots: list[np.ndarray]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finalize(self, acc: Any, layout: Layout) -> dict[str, tuple[np.ndarray, int]]:  # pragma: no cover
        raise NotImplementedError

    def _export_acc(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _import_acc(
        self, tree: Any, n_slots: int, where: str, stats: dict[str, Any]
    ) -> Any:  # pragma: no cover
        raise NotImplementedError


# ---------------------------------------------------------------------------- applying


def _like(values: np.ndarray, template: Any) -> Any:
    """Return NumPy values as the template's array type (jax arrays stay jax)."""
    if type(template).__module__.startswith(("jax", "jaxlib")):
        import jax.numpy as jnp

        return jnp.asarray(values)
    return values


def _scaled_array(m: Any, center: np.ndarray, scale: np.ndarray, factors: np.ndarray, offset: float) -> Any:
    arr = np.asarray(m)
    x = arr.astype(np.float64)
    if np.any(factors != 1.0):
        x = x * factors
    y = (x - center) / scale + offset
    dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
    return _like(y.astype(dtype), m)


def _scaled_chunks(src: Source, a, b, center, scale, factors, offset, who) -> Iterator[Any]:
    for i, chunk in enumerate(src.value):
        m = chunk.mantissa if isinstance(chunk, u.Quantity) else chunk
        unit = chunk.unit if isinstance(chunk, u.Quantity) else _units.UNITLESS
        if not _units.same_dim(unit, src.units[0]):
            raise _units.UnitError(
                f"{who} (chunk {i}): expected {_units.describe(src.units[0])}, got {_units.describe(unit)}"
            )
        from unitnorm.io._recording import factor

        f = factors * factor(unit, src.units[0])
        yield _scaled_array(m, center, scale, f, offset)


class _ScaledSource:
    """A Recording's samples, normalized as they are read (the writers stream it)."""

    def __init__(self, rec: Recording, a: np.ndarray, b: np.ndarray):
        self.rec, self.a, self.b = rec, a, b
        self.n_samples = rec.n_samples

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        with self.rec._reader() as read:

            def scaled(start: int, stop: int, columns: Any) -> np.ndarray:
                block = read(start, stop)
                block *= self.a
                block += self.b
                cols = list(columns)
                return block if cols == list(range(block.shape[1])) else block[:, cols]

            yield scaled


def _scaled_recording(rec: Recording, a, b, center, scale, factors, offset) -> Recording:
    # (x f - c) / s + o  ==  x (f / s) + (o - c / s): one multiply-add per sample when streamed
    return Recording._from_source(
        _ScaledSource(rec, a, b),
        rec.channel_names,
        [_units.UNITLESS] * rec.n_channels,
        float(rec.sampling_rate.mantissa),
        "normalized recording",
    )


# ---------------------------------------------------------------------------- moments


def _block_moments(v: np.ndarray, omit: bool) -> tuple[int, float, float]:
    """Return count, mean and M2 of one slot's values (two passes); ``omit`` leaves NaNs out."""
    if omit and np.isnan(v).any():
        valid = ~np.isnan(v)
        n = int(valid.sum())
        if n == 0:
            return 0, 0.0, 0.0
        w = v[valid]
    else:
        n, w = v.size, v
    mean = float(w.mean()) if n else 0.0
    d = w - mean
    # NumPy's pairwise sum, not a BLAS dot: a multi-threaded BLAS splits the sum by its thread
    # count, and a Dask worker (one BLAS thread) would then differ in the last bits from this process
    return n, mean, float(np.square(d, out=d).sum())


class StandardScaler(_Scaler):
    __doc__ = f"""Standardize each channel: ``(x - mean) / std``, statistics as Quantities.

    The scikit-learn protocol (``fit``, ``partial_fit``, ``transform``,
    ``inverse_transform``, ``fit_transform``), with units: the fitted ``mean_``
    is in the data's unit and ``var_`` in its square, and data in V or µV give
    the same normalized output. ``partial_fit`` merges each chunk's count, mean
    and M2 exactly in float64 (Chan et al., :func:`unitnorm._moments.merge`), so any
    chunking gives ``fit``'s result up to rounding.

    Parameters
    ----------
    with_mean : bool, default True
        Subtract the mean.
    with_std : bool, default True
        Divide by the standard deviation.
    ddof : int, default 0
        ``var = M2 / (n - ddof)`` (scikit-learn uses 0).
    {_SHARED_PARAMS}

    Attributes
    ----------
    mean_ : Quantity or tuple of Quantity
        Per channel (per pool with ``per='dimension'``), in the data's unit; ``None``
        when ``with_mean`` and ``with_std`` are both False. A tuple with one Quantity
        per group of ``groups_`` when the channels have several dimensions.
    var_ : Quantity or tuple of Quantity
        In unit**2 (``None`` when ``with_std=False``).
    scale_ : Quantity or tuple of Quantity
        ``sqrt(var_)``, flat channels replaced as ``flat`` says (``None`` when ``with_std=False``).
    n_samples_seen_ : int or ndarray
        Values counted per channel (an array when ``nan_policy='omit'`` made them differ).
    groups_ : tuple of ndarray
        The channel indices of each unit group (or pool).
    n_features_in_ : int
    channel_names_ : tuple of str
        Only when fitted on a Recording; ``transform`` of a Recording picks these channels by name.

    See Also
    --------
    RobustScaler, QuantileScaler, unitnorm.functional.compute_stats

    Notes
    -----
    Units: ``mean`` has unit(x), ``var`` unit(x)**2, ``scale`` unit(x), and
    ``(x - mean) / scale`` is dimensionless. There is no epsilon (flat channels are
    handled by ``flat``), so the result does not depend on the unit the data come in.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.preprocessing import StandardScaler
    >>> x = np.array([[1., 10.], [2., 20.], [3., 30.]]) * u.mV
    >>> scaler = StandardScaler().fit(x)
    >>> print(scaler.mean_, scaler.var_)
    [ 2. 20.] mV [ 0.66666667 66.66666667] mV^2
    >>> y = scaler.transform(x.in_unit(u.volt))
    >>> print(np.round(y, 4).tolist())
    [[-1.2247, -1.2247], [0.0, 0.0], [1.2247, 1.2247]]
    >>> print(scaler.inverse_transform(y)[:, 1])
    [10. 20. 30.] mV
    """

    _param_names = ("with_mean", "with_std", "ddof")

    def __init__(
        self,
        *,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        per: Any = "channel",
        flat: str = "unit",
        nan_policy: str = "propagate",
    ):
        super().__init__(per=per, flat=flat, nan_policy=nan_policy)
        for name, v in (("with_mean", with_mean), ("with_std", with_std)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"StandardScaler: {name} must be True or False, got {v!r}")
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise ValueError(f"StandardScaler: ddof must be an int >= 0, got {ddof!r}")
        self.with_mean, self.with_std, self.ddof = bool(with_mean), bool(with_std), int(ddof)

    def _new_acc(self, n_slots: int) -> dict[str, np.ndarray]:
        return {
            "count": np.zeros(n_slots, dtype=np.int64),
            "mean": np.zeros(n_slots),
            "m2": np.zeros(n_slots),
        }

    def _copy_acc(self, acc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in acc.items()}

    def _update(self, acc: dict[str, np.ndarray], slots: list[np.ndarray]) -> None:
        omit = self.nan_policy == "omit"
        parts = [_block_moments(v, omit) for v in slots]
        n_b = np.array([p[0] for p in parts], dtype=np.int64)
        mean_b = np.array([p[1] for p in parts])
        m2_b = np.array([p[2] for p in parts])
        acc["count"], acc["mean"], acc["m2"] = _moments.merge(
            acc["count"], acc["mean"], acc["m2"], n_b, mean_b, m2_b
        )

    def _finalize(self, acc: dict[str, np.ndarray], layout: Layout) -> dict[str, tuple[Any, int]]:
        count, mean = acc["count"], acc["mean"].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(count - self.ddof > 0, acc["m2"] / np.maximum(count - self.ddof, 1), np.nan)
        mean[count == 0] = np.nan
        if self.with_std:
            scale, flat = self._apply_flat(mean, np.sqrt(var))
        else:
            scale, flat = np.ones_like(mean), np.zeros(mean.shape, dtype=bool)
        center = mean if self.with_mean else np.zeros_like(mean)
        stats: dict[str, tuple[Any, int]] = {
            "mean": (mean if (self.with_mean or self.with_std) else None, 1),
            "var": (var if self.with_std else None, 2),
            "scale": (scale if self.with_std else None, 1),
            "_center": (center, 1),
            "_scale": (scale, 1),
            "_flat": (flat, 0),
            "_count": (count.astype(np.float64), 0),
            "_mean": (np.nan_to_num(acc["mean"], nan=np.nan), 1),
            "_m2": (acc["m2"], 2),
        }
        return stats

    def _commit(self, layout: Layout, acc: Any, stats: dict[str, Any]) -> None:
        super()._commit(layout, acc, stats)
        count = layout.per_channel(stats["_count"][0]).astype(np.int64)
        self.n_samples_seen_ = int(count[0]) if np.all(count == count[0]) else count

    def _export_acc(self) -> Any:
        return None  # count, mean and M2 are in the stats

    def _import_acc(self, tree: Any, n_slots: int, where: str, stats: dict[str, Any]) -> Any:
        return {
            "count": stats["_count"][0].astype(np.int64),
            "mean": stats["_mean"][0].copy(),
            "m2": stats["_m2"][0].copy(),
        }


# ---------------------------------------------------------------------------- quantile scalers


class _QuantileBase(_Scaler):
    """Exact order statistics: value→count tables, or the multi-pass selection for ``fit(Recording)``."""

    def _levels(self) -> list[float]:  # quantile levels in [0, 1] of the values
        raise NotImplementedError

    _mad = False  # a second stage: the median of |x - median|

    def _new_acc(self, n_slots: int) -> _exact.CountTable:
        return _exact.CountTable(n_slots)

    def _copy_acc(self, acc: _exact.CountTable) -> _exact.CountTable:
        return acc.copy()

    def _update(self, acc: _exact.CountTable, slots: list[np.ndarray]) -> None:
        acc.add(slots)

    def _from_table(self, table: _exact.CountTable) -> tuple[np.ndarray, np.ndarray | None]:
        levels = self._levels()
        n_slots = len(table.values)
        q = np.full((n_slots, len(levels)), np.nan)
        mad = np.full(n_slots, np.nan) if self._mad else None
        for s in range(n_slots):
            n = table.count(s)
            if n == 0 or (table.nan[s] and self.nan_policy == "propagate"):
                continue
            lo, hi, t = _exact.needed_ranks(n, levels)
            v, c = table.values[s], table.counts[s]
            q[s] = _exact.interpolate(_exact.select_sorted(v, c, lo), _exact.select_sorted(v, c, hi), t)
            if mad is not None:
                med = q[s, levels.index(0.5)]
                dev = np.abs(v - med)
                order = np.argsort(dev, kind="stable")
                lo, hi, t = _exact.needed_ranks(n, [0.5])
                dv, dc = dev[order], c[order]
                mad[s] = _exact.interpolate(
                    _exact.select_sorted(dv, dc, lo), _exact.select_sorted(dv, dc, hi), t
                )[0]
        return q, mad

    def _fit_recording(self, src: Source, layout: Layout, chunk_samples: int | None, progress: Any) -> Any:
        who = f"{self._who}.fit"
        factors = layout.factors(src.units, who)
        levels = self._levels()

        def ranks(n: int) -> list[int]:
            lo, hi, _ = _exact.needed_ranks(n, levels)
            return [*lo.tolist(), *hi.tolist()]

        def chunks() -> Iterator[list[np.ndarray]]:
            for block in src.blocks(who, chunk_samples, progress):
                yield layout.split(self._prepare(block, factors, layout, who))

        picked, count, nan = _exact.select_streamed(chunks, layout.n_slots, ranks, omit=True)
        q = self._pick(picked, count, nan, levels)
        mad = None
        if self._mad:
            med = q[:, levels.index(0.5)]

            def deviations() -> Iterator[list[np.ndarray]]:
                for parts in chunks():
                    yield [np.abs(v - med[s]) for s, v in enumerate(parts)]

            def mid(n: int) -> list[int]:
                lo, hi, _ = _exact.needed_ranks(n, [0.5])
                return [*lo.tolist(), *hi.tolist()]

            picked, count, nan = _exact.select_streamed(deviations, layout.n_slots, mid, omit=True)
            mad = self._pick(picked, count, nan, [0.5])[:, 0]
        return _Selected(q, mad)

    def _pick(
        self, picked: list[dict[int, float]], count: np.ndarray, nan: np.ndarray, levels: list[float]
    ) -> np.ndarray:
        q = np.full((len(picked), len(levels)), np.nan)
        for s, got in enumerate(picked):
            if count[s] == 0 or (nan[s] and self.nan_policy == "propagate"):
                continue
            lo, hi, t = _exact.needed_ranks(int(count[s]), levels)
            q[s] = _exact.interpolate(
                np.array([got[int(r)] for r in lo]), np.array([got[int(r)] for r in hi]), t
            )
        return q

    def _finalize(self, acc: Any, layout: Layout) -> dict[str, tuple[Any, int]]:
        q, mad = (acc.q, acc.mad) if isinstance(acc, _Selected) else self._from_table(acc)
        return self._from_quantiles(q, mad)

    def _commit(self, layout: Layout, acc: Any, stats: dict[str, Any]) -> None:
        super()._commit(layout, None if isinstance(acc, _Selected) else acc, stats)

    def _export_acc(self) -> Any:
        table = self._acc
        if table is None:
            return None
        return {"values": list(table.values), "counts": list(table.counts), "nan": table.nan}

    def _import_acc(self, tree: Any, n_slots: int, where: str, stats: dict[str, Any]) -> Any:
        if tree is None:
            return None
        table = _exact.CountTable(0)
        table.values = [np.asarray(v, dtype=np.float64) for v in tree["values"]]
        table.counts = [np.asarray(c, dtype=np.int64) for c in tree["counts"]]
        table.nan = np.asarray(tree["nan"], dtype=np.int64)
        if len(table.values) != n_slots or len(table.counts) != n_slots:
            raise ValueError(f"{where}: field 'acc' has {len(table.values)} tables for {n_slots} slots")
        return table

    def _from_quantiles(self, q: np.ndarray, mad: np.ndarray | None) -> dict[str, tuple[Any, int]]:
        raise NotImplementedError


class _Selected:
    """Order statistics found by the multi-pass selection (no value tables kept)."""

    def __init__(self, q: np.ndarray, mad: np.ndarray | None):
        self.q, self.mad = q, mad


class RobustScaler(_QuantileBase):
    __doc__ = f"""Center on the median and scale by a robust spread, per channel, statistics as Quantities.

    ``scale='iqr'`` is scikit-learn's ``RobustScaler``: ``(x - median) / (q_high - q_low)``
    with the quantile range in percent. ``scale='mad'`` is SpikeInterface's
    ``zscore(mode='median+mad')``: ``(x - median) / (MAD / 0.6744897501960817)``,
    which matches the standard deviation for normally distributed data.

    Quantiles are exact (linear interpolation between order statistics, NumPy's
    default): ``fit`` of an array and ``partial_fit`` keep per-channel value→count
    tables (exact over everything seen; memory grows with the number of distinct
    values, bounded for quantized ADC data); ``fit`` of a Recording uses a
    bounded-memory exact multi-pass selection (a histogram pass, then only the
    values of the bins holding the wanted ranks), reading the file several times.

    Parameters
    ----------
    with_centering : bool, default True
    with_scaling : bool, default True
    quantile_range : tuple of float, default (25.0, 75.0)
        ``(q_low, q_high)`` in percent, ``0 <= q_low < q_high <= 100`` (``scale='iqr'``).
    unit_variance : bool, default False
        Divide the IQR by the normal distribution's IQR over the same range, so
        normal data get unit variance (``scale='iqr'``).
    scale : {{'iqr', 'mad'}}, default 'iqr'
    {_SHARED_PARAMS}

    Attributes
    ----------
    center_ : Quantity or tuple of Quantity
        The median, in the data's unit (``None`` without centering).
    scale_ : Quantity or tuple of Quantity
        The spread divided by (``None`` without scaling).
    mad_ : Quantity or tuple of Quantity
        The unscaled median absolute deviation (``scale='mad'`` only).
    groups_, n_features_in_, channel_names_
        As in :class:`StandardScaler`.

    See Also
    --------
    StandardScaler, QuantileScaler

    Notes
    -----
    Units: ``center`` and ``scale`` have unit(x); ``(x - center) / scale`` is
    dimensionless and the same whatever unit the data come in.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.preprocessing import RobustScaler
    >>> x = np.array([[1.], [2.], [3.], [4.], [100.]]) * u.uvolt
    >>> r = RobustScaler(scale="mad").fit(x)
    >>> print(r.center_, r.mad_)
    [3.] uV [1.] uV
    >>> print(RobustScaler().fit(x).scale_)
    [2.] uV
    """

    _param_names = ("with_centering", "with_scaling", "quantile_range", "unit_variance", "scale")

    def __init__(
        self,
        *,
        with_centering: bool = True,
        with_scaling: bool = True,
        quantile_range: tuple[float, float] = (25.0, 75.0),
        unit_variance: bool = False,
        scale: str = "iqr",
        per: Any = "channel",
        flat: str = "unit",
        nan_policy: str = "propagate",
    ):
        super().__init__(per=per, flat=flat, nan_policy=nan_policy)
        for name, v in (
            ("with_centering", with_centering),
            ("with_scaling", with_scaling),
            ("unit_variance", unit_variance),
        ):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"RobustScaler: {name} must be True or False, got {v!r}")
        self.scale = _check_choice(scale, ("iqr", "mad"), "scale", "RobustScaler")
        try:
            lo, hi = (float(v) for v in quantile_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"RobustScaler: quantile_range must be (q_low, q_high) in percent, got {quantile_range!r}"
            ) from None
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                "RobustScaler: quantile_range must satisfy 0 <= q_low < q_high <= 100, "
                f"got {quantile_range!r}"
            )
        if scale == "mad" and (unit_variance or (lo, hi) != (25.0, 75.0)):
            raise ValueError("RobustScaler: quantile_range and unit_variance apply to scale='iqr', not 'mad'")
        self.with_centering, self.with_scaling = bool(with_centering), bool(with_scaling)
        self.quantile_range, self.unit_variance = (lo, hi), bool(unit_variance)
        self._mad = scale == "mad"

    def _levels(self) -> list[float]:
        if self._mad:
            return [0.5]
        lo, hi = self.quantile_range
        return [lo / 100.0, 0.5, hi / 100.0]

    def _from_quantiles(self, q: np.ndarray, mad: np.ndarray | None) -> dict[str, tuple[Any, int]]:
        median = q[:, self._levels().index(0.5)]
        if self._mad:
            spread = mad / MAD_NORMAL
        else:
            spread = q[:, 2] - q[:, 0]
            if self.unit_variance:
                nd = statistics.NormalDist()
                lo, hi = self.quantile_range
                spread = spread / (nd.inv_cdf(hi / 100.0) - nd.inv_cdf(lo / 100.0))
        if self.with_scaling:
            scale, flat = self._apply_flat(median, spread)
        else:
            scale, flat = np.ones_like(median), np.zeros(median.shape, dtype=bool)
        center = median if self.with_centering else np.zeros_like(median)
        stats: dict[str, tuple[Any, int]] = {
            "center": (median if self.with_centering else None, 1),
            "scale": (scale if self.with_scaling else None, 1),
            "_center": (center, 1),
            "_scale": (scale, 1),
            "_flat": (flat, 0),
            "_median": (median, 1),
        }
        if self._mad:
            stats["mad"] = (mad, 1)
        return stats


class QuantileScaler(_QuantileBase):
    __doc__ = f"""Scale so that the q1..q2 quantile distance becomes ``scale`` and the median ``median``.

    SpikeInterface's ``normalize_by_quantile(mode='by_channel')``:
    ``y = (x - med) * scale / |x_q2 - x_q1| + median`` per channel (``per='dimension'``
    pools channels like its ``mode='pool_channel'``, but never across dimensions).
    Quantiles are exact, as in :class:`RobustScaler`.

    Parameters
    ----------
    q1, q2 : float, default 0.01 and 0.99
        Quantile levels in [0, 1], ``q1 < q2``.
    scale : float, default 1.0
        The output distance between the two quantiles (dimensionless, > 0).
    median : float, default 0.0
        The output median (dimensionless).
    {_SHARED_PARAMS}

    Attributes
    ----------
    center_ : Quantity or tuple of Quantity
        The data's median.
    scale_ : Quantity or tuple of Quantity
        ``|x_q2 - x_q1| / scale``: what the centered data are divided by.
    quantile_low_, quantile_high_ : Quantity or tuple of Quantity
        ``x_q1`` and ``x_q2``.
    groups_, n_features_in_, channel_names_
        As in :class:`StandardScaler`.

    See Also
    --------
    RobustScaler

    Notes
    -----
    Units: the quantiles and the median have unit(x), ``scale`` and ``median`` are
    dimensionless, and so is the output.

    Examples
    --------
    >>> import numpy as np
    >>> from unitnorm.preprocessing import QuantileScaler
    >>> x = np.arange(101.)[:, None]
    >>> q = QuantileScaler(q1=0.1, q2=0.9, scale=2.0).fit(x)
    >>> print(q.center_, q.scale_, q.transform(x)[[10, 50, 90], 0])
    [50.] [40.] [-1.  0.  1.]
    """

    _param_names = ("q1", "q2", "scale", "median")

    def __init__(
        self,
        *,
        q1: float = 0.01,
        q2: float = 0.99,
        scale: float = 1.0,
        median: float = 0.0,
        per: Any = "channel",
        flat: str = "unit",
        nan_policy: str = "propagate",
    ):
        super().__init__(per=per, flat=flat, nan_policy=nan_policy)
        vals = {}
        for name, v in (("q1", q1), ("q2", q2), ("scale", scale), ("median", median)):
            if isinstance(v, u.Quantity) or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise TypeError(f"QuantileScaler: {name} must be a plain number, got {v!r}")
            vals[name] = float(v)
            if not math.isfinite(vals[name]):
                raise ValueError(f"QuantileScaler: {name} must be finite, got {v!r}")
        if not 0 <= vals["q1"] < vals["q2"] <= 1:
            raise ValueError(f"QuantileScaler: need 0 <= q1 < q2 <= 1, got q1={q1!r}, q2={q2!r}")
        if vals["scale"] <= 0:
            raise ValueError(f"QuantileScaler: scale must be > 0, got {scale!r}")
        self.q1, self.q2, self.scale, self.median = vals["q1"], vals["q2"], vals["scale"], vals["median"]
        self._offset = self.median

    def _levels(self) -> list[float]:
        return [self.q1, 0.5, self.q2]

    def _from_quantiles(self, q: np.ndarray, mad: np.ndarray | None) -> dict[str, tuple[Any, int]]:
        median = q[:, 1]
        scale, flat = self._apply_flat(median, np.abs(q[:, 2] - q[:, 0]))
        scale = scale / self.scale
        return {
            "center": (median, 1),
            "scale": (scale, 1),
            "quantile_low": (q[:, 0], 1),
            "quantile_high": (q[:, 2], 1),
            "_center": (median, 1),
            "_scale": (scale, 1),
            "_flat": (flat, 0),
        }


SCALERS = {c.__name__: c for c in (StandardScaler, RobustScaler, QuantileScaler)}
