"""Streaming per-channel statistics and normalization of recordings larger than memory, on the scalers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import brainunit as u
import numpy as np

from unitnorm import _moments
from unitnorm.io._recording import Recording, attach, common_unit, factor, no_such_channel
from unitnorm.io._stream import FORMAT, chunk_size, write_npz
from unitnorm.io._units_parse import parse_unit
from unitnorm.preprocessing._scalers import QuantileScaler, RobustScaler, StandardScaler

__all__ = [
    "ChannelStats",
    "RobustStats",
    "channel_stats",
    "normalize_recording",
    "robust_stats",
    "scaler_for",
    "write_normalized",
]

METHODS = ("zscore", "robust", "mad", "quantile")


class _PerChannel:
    channel_names: tuple[str, ...]
    channel_units: tuple[u.Unit, ...]

    def _index(self, name: str) -> int:
        if name not in self.channel_names:
            raise ValueError(no_such_channel(name, self.channel_names))
        return self.channel_names.index(name)

    def _joined(self, mantissa: np.ndarray, power: int, what: str) -> Any:
        target, conv = common_unit(self.channel_names, self.channel_units, what)
        return attach(mantissa * conv**power, target**power if power != 1 else target)


@dataclass(frozen=True, eq=False)
class ChannelStats(_PerChannel):
    """Exact per-channel count, mean and sum of squared deviations, with units.

    Built by :func:`channel_stats` (one pass over a recording, through
    :class:`StandardScaler`) or by :meth:`of_block` on samples in memory; two of
    them combine exactly with :meth:`merge` (the project's one moment merge,
    :func:`unitnorm._moments.merge`). Everything is float64; each channel stays in
    its own unit.

    Attributes
    ----------
    channel_names : tuple of str
    channel_units : tuple of brainunit.Unit
    count : int
        Samples per channel.
    mean_mantissa : ndarray
        Per-channel mean, in each channel's unit.
    m2_mantissa : ndarray
        Per-channel sum of squared deviations from the mean, in unit**2.

    Notes
    -----
    ``var = m2 / count`` is the biased (population) variance, as in
    :func:`unitnorm.functional.compute_stats`; ``std = sqrt(var)``.

    Examples
    --------
    >>> import numpy as np
    >>> from unitnorm.preprocessing import ChannelStats
    >>> x = np.arange(10.0)[:, None]
    >>> a = ChannelStats.of_block(["ch0"], ["mV"], x[:3])
    >>> b = ChannelStats.of_block(["ch0"], ["mV"], x[3:])
    >>> both = a.merge(b)
    >>> print(both.count, both.mean, both.var)
    10 [4.5] mV [8.25] mV^2
    """

    channel_names: tuple[str, ...]
    channel_units: tuple[u.Unit, ...]
    count: int
    mean_mantissa: np.ndarray
    m2_mantissa: np.ndarray

    @classmethod
    def of_block(cls, names: Sequence[str], units: Sequence[Any], block: Any) -> ChannelStats:
        """Statistics of a ``(samples, channels)`` block of mantissas, one unit per channel."""
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2 or block.shape[1] != len(names):
            raise ValueError(
                f"ChannelStats.of_block: expected a block of shape (samples, {len(names)}), got {block.shape}"
            )
        units = tuple(parse_unit(x) if isinstance(x, str) else x for x in units)
        n = block.shape[0]
        if n == 0:
            zeros = np.zeros(len(names))
            return cls(tuple(names), units, 0, zeros, zeros.copy())
        mean = block.mean(axis=0)
        d = block - mean
        return cls(tuple(names), units, n, mean, np.einsum("ij,ij->j", d, d))

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Combine with ``other``: the statistics of both sets of samples (exact)."""
        if not isinstance(other, ChannelStats):
            raise TypeError(f"ChannelStats.merge expected ChannelStats, got {type(other).__name__}")
        if other.channel_names != self.channel_names or any(
            a != b or str(a) != str(b) for a, b in zip(other.channel_units, self.channel_units, strict=True)
        ):
            raise ValueError("ChannelStats.merge: both must have the same channel names and units")
        n, mean, m2 = _moments.merge(
            self.count,
            self.mean_mantissa,
            self.m2_mantissa,
            other.count,
            other.mean_mantissa,
            other.m2_mantissa,
        )
        return ChannelStats(self.channel_names, self.channel_units, int(n), mean, m2)

    @property
    def var_mantissa(self) -> np.ndarray:
        """Per-channel biased variance, in each channel's unit squared."""
        return self.m2_mantissa / self.count if self.count else np.full(len(self.channel_names), np.nan)

    @property
    def std_mantissa(self) -> np.ndarray:
        """Per-channel standard deviation, in each channel's unit."""
        return np.sqrt(self.var_mantissa)

    @property
    def mean(self) -> Any:
        """Per-channel mean as one Quantity (channels must share a dimension)."""
        return self._joined(self.mean_mantissa, 1, "ChannelStats.mean")

    @property
    def var(self) -> Any:
        """Per-channel variance as one Quantity in unit**2."""
        return self._joined(self.var_mantissa, 2, "ChannelStats.var")

    @property
    def std(self) -> Any:
        """Per-channel standard deviation as one Quantity."""
        return self._joined(self.std_mantissa, 1, "ChannelStats.std")

    def channel(self, name: str) -> tuple[Any, Any]:
        """``(mean, std)`` of one channel, scalars in its own unit."""
        i = self._index(name)
        unit = self.channel_units[i]
        return attach(self.mean_mantissa[i], unit), attach(self.std_mantissa[i], unit)


@dataclass(frozen=True, eq=False)
class RobustStats(_PerChannel):
    """Per-channel median and median absolute deviation (MAD), with units.

    Attributes
    ----------
    channel_names : tuple of str
    channel_units : tuple of brainunit.Unit
    count : int
    median_mantissa, mad_mantissa : ndarray
        In each channel's unit. ``MAD = median(|x - median(x)|)``, unscaled.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording
    >>> from unitnorm.preprocessing import robust_stats
    >>> r = robust_stats(Recording(np.array([1., 2., 3., 4., 100.]) * u.uvolt, 10.))
    >>> print(r.median, r.mad, r.channel("ch0")[1])
    [3.] uV [1.] uV 1. uV
    """

    channel_names: tuple[str, ...]
    channel_units: tuple[u.Unit, ...]
    count: int
    median_mantissa: np.ndarray
    mad_mantissa: np.ndarray

    @property
    def median(self) -> Any:
        """Per-channel median as one Quantity."""
        return self._joined(self.median_mantissa, 1, "RobustStats.median")

    @property
    def mad(self) -> Any:
        """Per-channel MAD as one Quantity."""
        return self._joined(self.mad_mantissa, 1, "RobustStats.mad")

    def channel(self, name: str) -> tuple[Any, Any]:
        """``(median, mad)`` of one channel, scalars in its own unit."""
        i = self._index(name)
        unit = self.channel_units[i]
        return attach(self.median_mantissa[i], unit), attach(self.mad_mantissa[i], unit)


def _check_rec(rec: Any, who: str) -> Recording:
    if not isinstance(rec, Recording):
        raise TypeError(f"{who} expected a unitnorm.io.Recording, got {type(rec).__name__}")
    if rec.n_samples == 0:
        raise ValueError(f"{who}: the recording has no samples")
    return rec


def _own_units(rec: Recording, scaler: Any, name: str, power: int) -> np.ndarray:
    """Return a fitted per-channel statistic (group units) in each channel's own unit."""
    layout = scaler._layout
    values = layout.per_channel(scaler._stats[name][0])
    group_of = layout.group_of
    conv = np.array([factor(layout.units[group_of[c]], unit) for c, unit in enumerate(rec.channel_units)])
    return values * conv**power


def channel_stats(
    recording: Recording,
    *,
    chunk_seconds: float | None = None,
    chunk_samples: int | None = None,
    progress: bool | None = None,
) -> ChannelStats:
    """Per-channel mean and variance of a recording in one streaming pass.

    Parameters
    ----------
    recording : Recording
        Read chunk by chunk; never held in memory whole.
    chunk_seconds, chunk_samples : float or int, optional
        Chunk length (one of them; default about 2**20 values per chunk).
    progress : bool, optional
        Show a tqdm bar: ``None`` (default) only when stderr is a terminal.

    Returns
    -------
    ChannelStats
        Exact in float64 whatever the chunking (a :class:`StandardScaler`'s
        ``partial_fit`` merge), each channel in its own unit.

    Raises
    ------
    TypeError, ValueError
        For something that is not a Recording, an empty one, or a bad chunk size.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording
    >>> from unitnorm.preprocessing import channel_stats
    >>> rec = Recording(np.arange(12.).reshape(6, 2) * u.mV, 100 * u.Hz)
    >>> stats = channel_stats(rec, chunk_samples=4)
    >>> print(stats.mean, stats.std)
    [5. 6.] mV [3.41565026 3.41565026] mV
    """
    rec = _check_rec(recording, "channel_stats")
    step = chunk_size(rec, chunk_seconds, chunk_samples)
    return _channel_stats_of(rec, StandardScaler().fit(rec, chunk_samples=step, progress=progress))


def _channel_stats_of(rec: Recording, scaler: StandardScaler) -> ChannelStats:
    return ChannelStats(
        rec.channel_names,
        rec.channel_units,
        int(scaler._stats["_count"][0][0]),
        _own_units(rec, scaler, "_mean", 1),
        _own_units(rec, scaler, "_m2", 2),
    )


def _robust_stats_of(rec: Recording, scaler: RobustScaler) -> RobustStats:
    return RobustStats(
        rec.channel_names,
        rec.channel_units,
        rec.n_samples,
        _own_units(rec, scaler, "_median", 1),
        _own_units(rec, scaler, "mad", 1),
    )


def robust_stats(
    recording: Recording, *, chunk_samples: int | None = None, progress: bool | None = None
) -> RobustStats:
    """Per-channel median and MAD (median absolute deviation) of a recording, exact, in bounded memory.

    A :class:`RobustScaler` with ``scale='mad'`` fitted on the recording: an exact
    multi-pass selection (histogram passes, then only the values near the median)
    whose memory does not grow with the recording's length.

    Returns
    -------
    RobustStats

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording
    >>> from unitnorm.preprocessing import robust_stats
    >>> print(robust_stats(Recording(np.array([1., 2., 3., 4., 100.]) * u.uvolt, 10.)).mad)
    [1.] uV
    """
    rec = _check_rec(recording, "robust_stats")
    return _robust_stats_of(
        rec, RobustScaler(scale="mad").fit(rec, chunk_samples=chunk_samples, progress=progress)
    )


def scaler_for(method: str, **params: Any) -> Any:
    """Return an unfitted scaler for a method name of the command line.

    ``'zscore'``: :class:`StandardScaler`; ``'robust'``: :class:`RobustScaler`
    (median, IQR); ``'mad'``: ``RobustScaler(scale='mad')`` (median, MAD / 0.6745);
    ``'quantile'``: :class:`QuantileScaler`. Keyword arguments (``per``, ``flat``,
    ``nan_policy``) go to the scaler's constructor.

    Examples
    --------
    >>> from unitnorm.preprocessing import scaler_for
    >>> scaler_for("mad").get_params()["scale"]
    'mad'
    """
    if method == "zscore":
        return StandardScaler(**params)
    if method == "robust":
        return RobustScaler(**params)
    if method == "mad":
        return RobustScaler(scale="mad", **params)
    if method == "quantile":
        return QuantileScaler(**params)
    raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")


def _method_of(scaler: Any) -> str:
    if isinstance(scaler, StandardScaler):
        return "zscore"
    if isinstance(scaler, QuantileScaler):
        return "quantile"
    return "mad" if scaler.scale == "mad" else "robust"


def normalize_recording(
    recording: Recording,
    method: str = "zscore",
    *,
    chunk_seconds: float | None = None,
    chunk_samples: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, ChannelStats | RobustStats]:
    """Normalize every channel of a recording; the result is held in memory.

    Parameters
    ----------
    recording : Recording
    method : {'zscore', 'robust', 'mad', 'quantile'}, default 'zscore'
        See :func:`scaler_for`. ``'mad'`` is ``(x - median) / (1.4826 MAD)``.
    chunk_seconds, chunk_samples, progress
        As in :func:`channel_stats`.

    Returns
    -------
    z : ndarray
        float32, shape ``(n_samples, n_channels)``, dimensionless.
    stats : ChannelStats or RobustStats
        The mean and std (``RobustStats`` for ``'mad'``; for ``'robust'`` and
        ``'quantile'`` one more pass computes the mean and std).

    Notes
    -----
    There is no epsilon: V or µV give the same result, and a constant channel is
    all zeros (divided by 1). For files larger than memory use :func:`write_normalized`.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording
    >>> from unitnorm.preprocessing import normalize_recording
    >>> x = np.array([[1., 10.], [2., 10.], [3., 10.]])
    >>> z, stats = normalize_recording(Recording(x * u.mV, 1000.))
    >>> print(z.dtype, np.round(z.astype(float), 4).tolist())
    float32 [[-1.2247, 0.0], [0.0, 0.0], [1.2247, 0.0]]
    """
    rec = _check_rec(recording, "normalize_recording")
    step = chunk_size(rec, chunk_seconds, chunk_samples)
    scaler = scaler_for(method).fit(rec, chunk_samples=step, progress=progress)
    normalized = scaler.transform(rec)
    out = np.empty((rec.n_samples, rec.n_channels), dtype=np.float32)
    with normalized._reader() as read:
        for start in range(0, rec.n_samples, step):
            stop = min(rec.n_samples, start + step)
            out[start:stop] = read(start, stop)
    if method == "mad":
        return out, _robust_stats_of(rec, scaler)
    if method == "zscore":
        return out, _channel_stats_of(rec, scaler)
    return out, channel_stats(rec, chunk_samples=step, progress=progress)


def write_normalized(
    recording: Recording,
    path: str | os.PathLike,
    method: str = "zscore",
    *,
    scaler: Any = None,
    chunk_seconds: float | None = None,
    chunk_samples: int | None = None,
    progress: bool | None = None,
) -> Any:
    """Normalize a recording chunk by chunk into an ``.npz`` file, written atomically.

    Memory stays bounded by the chunk size: the scaler is fitted by streaming
    (quantiles by the exact multi-pass selection), then :meth:`transform` gives a
    lazily normalized Recording that :func:`unitnorm.io.write_npz` streams to disk.

    Parameters
    ----------
    recording : Recording
    path : str or os.PathLike
        The output file (written exactly at this name, never half-written).
    method : {'zscore', 'robust', 'mad', 'quantile'}, default 'zscore'
        See :func:`scaler_for`; ignored when ``scaler`` is given.
    scaler : fitted scaler, optional
        Apply these statistics (fitted on another recording) instead of fitting.
    chunk_seconds, chunk_samples, progress
        As in :func:`channel_stats`.

    Returns
    -------
    scaler
        The fitted scaler used.

    Notes
    -----
    The file loads with ``numpy.load(path, allow_pickle=False)`` (or
    :func:`unitnorm.io.load_normalized`) and holds ``data`` (float32
    ``(n_samples, n_channels)``), ``channel_names``, ``method``,
    ``sampling_rate`` (Hz), ``format`` (``'unitnorm.normalized/1'``), and per
    channel (values, and ``<name>_unit`` strings): ``center`` and ``scale`` (so
    ``(data - offset) * scale + center`` gives the samples back, ``offset`` being 0
    except for ``'quantile'``), ``mean`` and ``std`` of the scaler's own
    statistics when ``method='zscore'`` (otherwise ``mean`` = ``center`` and
    ``std`` = ``scale``), and ``median``, ``mad`` for ``'mad'``.

    Examples
    --------
    >>> import os, tempfile, brainunit as u, numpy as np
    >>> from unitnorm.io import Recording
    >>> from unitnorm.preprocessing import write_normalized
    >>> rec = Recording(np.array([[1.], [2.], [3.], [10.]]) * u.mV, 10.)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     fitted = write_normalized(rec, os.path.join(folder, "z.npz"), "robust")
    >>> print(fitted.center_, fitted.scale_)
    [2.5] mV [3.] mV
    """
    rec = _check_rec(recording, "write_normalized")
    step = chunk_size(rec, chunk_seconds, chunk_samples)
    if scaler is None:
        scaler = scaler_for(method).fit(rec, chunk_samples=step, progress=progress)
    else:
        scaler._check_fitted("write_normalized")
        method = _method_of(scaler)
    normalized = scaler.transform(rec)
    small = summary_fields(scaler, rec, method)
    write_npz(path, normalized, small, chunk_samples=step, progress=progress)
    return scaler


def summary_fields(scaler: Any, rec: Recording, method: str) -> dict[str, Any]:
    """Return the small fields :func:`write_normalized` stores beside ``data`` (statistics with units).

    Computed from the fitted scaler alone (no pass over the data), so a caller can also
    print them without reading the output back.
    """
    layout = scaler._layout
    if layout.names is not None:
        rec = rec.pick(list(layout.names))
    center, scale = scaler._center_scale(layout)
    units = np.array([str(layout.units[g]) for g in layout.group_of], dtype=str)
    small: dict[str, Any] = {
        "format": np.array(FORMAT),
        "method": np.array(method),
        "channel_names": np.array(rec.channel_names, dtype=str),
        "sampling_rate": np.array(float(rec.sampling_rate.mantissa)),
        "center": center,
        "center_unit": units,
        "scale": scale,
        "scale_unit": units,
        "offset": np.array(float(scaler._offset)),
    }
    if method == "zscore":
        small |= {"mean": layout.per_channel(scaler._stats["_mean"][0]), "std": scale}
    else:
        small |= {"mean": center, "std": scale}
    small |= {"mean_unit": units, "std_unit": units}
    if method == "mad":
        small |= {
            "median": center,
            "median_unit": units,
            "mad": layout.per_channel(scaler._stats["mad"][0]),
            "mad_unit": units,
        }
    return small
