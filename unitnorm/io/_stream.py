"""Streaming per-channel statistics and normalization of recordings larger than memory."""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import brainunit as u
import numpy as np

from unitnorm.io._recording import Recording, attach, common_unit, no_such_channel
from unitnorm.io._units_parse import parse_unit

__all__ = [
    "ChannelStats",
    "RobustStats",
    "channel_stats",
    "load_normalized",
    "normalize_recording",
    "robust_stats",
    "write_normalized",
]

FORMAT = "unitnorm.normalized/1"
METHODS = ("zscore", "robust")
# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_STD = 1.482602218505602
# Default chunk: about this many values (8 MiB of float64) per read.
DEFAULT_CHUNK_VALUES = 1 << 20
# robust_stats keeps at most this many bytes of float64 samples in memory at once.
ROBUST_MAX_BYTES = 256 << 20


# ---------------------------------------------------------------------------- results


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

    Built by :func:`channel_stats` (one pass over a recording) or by
    :meth:`of_block` on samples in memory; two of them combine exactly with
    :meth:`merge` (Chan et al.'s parallel update), which is how the streaming pass
    accumulates chunks. Everything is float64; each channel stays in its own unit.

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
    >>> from unitnorm.io import ChannelStats
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
        """Statistics of a ``(samples, channels)`` block of mantissas, one unit per channel.

        Deviations are taken from the block's first row before averaging, so a
        constant channel gives exactly zero variance.
        """
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
        shift = block[0]
        d = block - shift
        mean_d = d.mean(axis=0)
        d -= mean_d
        m2 = np.einsum("ij,ij->j", d, d)
        return cls(tuple(names), units, n, shift + mean_d, m2)

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Combine with ``other``: the statistics of both sets of samples (exact, Chan's formula)."""
        if not isinstance(other, ChannelStats):
            raise TypeError(f"ChannelStats.merge expected ChannelStats, got {type(other).__name__}")
        if other.channel_names != self.channel_names or any(
            a != b or str(a) != str(b) for a, b in zip(other.channel_units, self.channel_units, strict=True)
        ):
            raise ValueError("ChannelStats.merge: both must have the same channel names and units")
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean_mantissa - self.mean_mantissa
        mean = self.mean_mantissa + delta * (other.count / n)
        m2 = self.m2_mantissa + other.m2_mantissa + delta**2 * (self.count * other.count / n)
        return ChannelStats(self.channel_names, self.channel_units, n, mean, m2)

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
        """Per-channel mean as one Quantity (channels must share a dimension; see ``Recording.data``)."""
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


# ---------------------------------------------------------------------------- helpers


def chunk_size(rec: Recording, chunk_seconds: float | None, chunk_samples: int | None) -> int:
    """Return samples per chunk from ``chunk_seconds`` or ``chunk_samples`` (default ~2**20 values)."""
    if chunk_seconds is not None and chunk_samples is not None:
        raise ValueError("give chunk_seconds or chunk_samples, not both")
    if chunk_samples is not None:
        if not isinstance(chunk_samples, (int, np.integer)) or isinstance(chunk_samples, bool):
            raise TypeError(f"chunk_samples must be an int, got {chunk_samples!r}")
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
        return int(chunk_samples)
    if chunk_seconds is not None:
        seconds = float(chunk_seconds)
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"chunk_seconds must be finite and > 0, got {chunk_seconds}")
        return max(1, round(seconds * float(rec.sampling_rate.mantissa)))
    return max(1, DEFAULT_CHUNK_VALUES // max(1, rec.n_channels))


@contextlib.contextmanager
def progress_bar(total: int, desc: str, progress: bool | None) -> Iterator[Callable[[int], Any]]:
    """Yield ``update(n)``: a tqdm bar on a terminal (``progress=None``), always (True) or never (False)."""
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if show:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if progress:
                raise ImportError("progress=True needs tqdm: pip install 'unitnorm[io]'") from None
            show = False
    if not show:
        yield lambda n: None
        return
    bar = tqdm(total=total, desc=desc, unit="sample", unit_scale=True, leave=False, file=sys.stderr)
    try:
        yield bar.update
    finally:
        bar.close()


def _check_rec(rec: Any, who: str) -> Recording:
    if not isinstance(rec, Recording):
        raise TypeError(f"{who} expected a unitnorm.io.Recording, got {type(rec).__name__}")
    if rec.n_samples == 0:
        raise ValueError(f"{who}: the recording has no samples")
    return rec


def _chunks(read: Callable[[int, int], np.ndarray], n: int, step: int) -> Iterator[np.ndarray]:
    for start in range(0, n, step):
        yield read(start, min(n, start + step))


# ---------------------------------------------------------------------------- statistics


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
        Exact in float64 whatever the chunking (each chunk's statistics are
        combined with Chan's parallel formula), each channel in its own unit.

    Raises
    ------
    TypeError, ValueError
        For something that is not a Recording, an empty one, or a bad chunk size.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording, channel_stats
    >>> rec = Recording(np.arange(12.).reshape(6, 2) * u.mV, 100 * u.Hz)
    >>> stats = channel_stats(rec, chunk_samples=4)
    >>> print(stats.mean, stats.std)
    [5. 6.] mV [3.41565026 3.41565026] mV
    """
    rec = _check_rec(recording, "channel_stats")
    step = chunk_size(rec, chunk_seconds, chunk_samples)
    stats = ChannelStats.of_block(rec.channel_names, rec.channel_units, np.empty((0, rec.n_channels)))
    with rec._reader() as read, progress_bar(rec.n_samples, "statistics", progress) as update:
        for block in _chunks(read, rec.n_samples, step):
            stats = stats.merge(ChannelStats.of_block(rec.channel_names, rec.channel_units, block))
            update(block.shape[0])
    return stats


def robust_stats(recording: Recording, *, progress: bool | None = None) -> RobustStats:
    """Per-channel median and MAD (median absolute deviation) of a recording.

    A median needs every sample of a channel: channels are read in groups that
    keep at most 256 MiB of float64 samples in memory (at least one whole channel).

    Returns
    -------
    RobustStats

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording, robust_stats
    >>> rec = Recording(np.array([1., 2., 3., 4., 100.]) * u.uvolt, 10.)
    >>> r = robust_stats(rec)
    >>> print(r.median, r.mad)
    [3.] uV [1.] uV
    """
    rec = _check_rec(recording, "robust_stats")
    n, c = rec.n_samples, rec.n_channels
    group = max(1, ROBUST_MAX_BYTES // (8 * n))
    step = max(1, DEFAULT_CHUNK_VALUES // min(group, c))
    median = np.empty(c)
    mad = np.empty(c)
    with progress_bar(n * c, "median/MAD", progress) as update:
        for g0 in range(0, c, group):
            cols = list(range(g0, min(c, g0 + group)))
            sub = rec._derive(cols)
            buf = np.empty((n, len(cols)))
            with sub._reader() as read:
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    buf[start:stop] = read(start, stop)
                    update((stop - start) * len(cols))
            med = np.median(buf, axis=0)
            np.subtract(buf, med, out=buf)
            np.abs(buf, out=buf)
            median[cols] = med
            mad[cols] = np.median(buf, axis=0)
    return RobustStats(rec.channel_names, rec.channel_units, n, median, mad)


# ---------------------------------------------------------------------------- normalization


def _center_scale(
    rec: Recording, method: str, step: int, progress: bool | None
) -> tuple[np.ndarray, np.ndarray, ChannelStats, RobustStats | None]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    stats = channel_stats(rec, chunk_samples=step, progress=progress)
    if method == "zscore":
        return stats.mean_mantissa, stats.std_mantissa, stats, None
    robust = robust_stats(rec, progress=progress)
    return robust.median_mantissa, MAD_TO_STD * robust.mad_mantissa, stats, robust


def _normalized(
    rec: Recording, center: np.ndarray, scale: np.ndarray, step: int, progress: bool | None
) -> Iterator[np.ndarray]:
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, 1.0 / scale, 0.0)
    inv = np.where(np.isnan(scale), np.nan, inv)
    with rec._reader() as read, progress_bar(rec.n_samples, "normalizing", progress) as update:
        for block in _chunks(read, rec.n_samples, step):
            block -= center
            block *= inv
            update(block.shape[0])
            yield block.astype(np.float32)


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
    method : {'zscore', 'robust'}, default 'zscore'
        ``zscore``: ``(x - mean) / std``. ``robust``: ``(x - median) / (1.4826 * MAD)``,
        which matches ``zscore`` for normally distributed data and ignores outliers.
    chunk_seconds, chunk_samples, progress
        As in :func:`channel_stats`.

    Returns
    -------
    z : ndarray
        float32, shape ``(n_samples, n_channels)``, dimensionless.
    stats : ChannelStats or RobustStats
        The statistics used.

    Notes
    -----
    There is no epsilon: the result is the same whatever unit the recording is
    in (V or µV give the same z-scores), and a channel with zero spread
    (constant) is all zeros. For files larger than memory use
    :func:`write_normalized`.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording, normalize_recording
    >>> x = np.array([[1., 10.], [2., 10.], [3., 10.]])
    >>> z, stats = normalize_recording(Recording(x * u.mV, 1000.))
    >>> print(z.dtype, np.round(z.astype(float), 4).tolist())
    float32 [[-1.2247, 0.0], [0.0, 0.0], [1.2247, 0.0]]
    """
    rec = _check_rec(recording, "normalize_recording")
    step = chunk_size(rec, chunk_seconds, chunk_samples)
    center, scale, stats, robust = _center_scale(rec, method, step, progress)
    out = np.empty((rec.n_samples, rec.n_channels), dtype=np.float32)
    row = 0
    for block in _normalized(rec, center, scale, step, progress):
        out[row : row + block.shape[0]] = block
        row += block.shape[0]
    return out, (stats if robust is None else robust)


def _unit_strings(units: Sequence[u.Unit]) -> np.ndarray:
    return np.array([str(unit) for unit in units], dtype=str)


def write_normalized(
    recording: Recording,
    path: str | os.PathLike,
    method: str = "zscore",
    *,
    chunk_seconds: float | None = None,
    chunk_samples: int | None = None,
    progress: bool | None = None,
) -> ChannelStats | RobustStats:
    """Normalize a recording chunk by chunk into an ``.npz`` file, written atomically.

    Memory stays bounded by the chunk size (``robust`` also holds whole channels,
    see :func:`robust_stats`). The file is written under a temporary name in the
    same folder and renamed over ``path`` only when complete, so ``path`` is never
    half-written; on any error nothing is left behind.

    Parameters
    ----------
    recording : Recording
    path : str or os.PathLike
        The output file (written exactly at this name).
    method : {'zscore', 'robust'}, default 'zscore'
        As in :func:`normalize_recording`.
    chunk_seconds, chunk_samples, progress
        As in :func:`channel_stats`.

    Returns
    -------
    ChannelStats or RobustStats
        The statistics used.

    Notes
    -----
    The file loads with ``numpy.load(path, allow_pickle=False)`` (or
    :func:`load_normalized`) and holds:

    ``data``
        float32 ``(n_samples, n_channels)``, the normalized samples.
    ``channel_names``, ``method``, ``sampling_rate`` (Hz), ``format``
        (``'unitnorm.normalized/1'``).
    ``mean``, ``mean_unit``, ``std``, ``std_unit``
        float64 values per channel and the unit each is in (brainunit's spelling,
        which :func:`parse_unit` reads back).
    ``center``, ``center_unit``, ``scale``, ``scale_unit``
        What was subtracted and divided by (mean and std, or median and
        1.4826 * MAD), so ``data * scale + center`` gives the samples back.
    ``median``, ``median_unit``, ``mad``, ``mad_unit``
        With ``method='robust'`` only.
    """
    rec = _check_rec(recording, "write_normalized")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path}: is a folder; give a file name such as {os.path.join(path, 'out.npz')}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: the output folder {directory} does not exist")
    step = chunk_size(rec, chunk_seconds, chunk_samples)
    center, scale, stats, robust = _center_scale(rec, method, step, progress)
    units = _unit_strings(rec.channel_units)
    small: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "method": np.array(method),
        "channel_names": np.array(rec.channel_names, dtype=str),
        "sampling_rate": np.array(float(rec.sampling_rate.mantissa)),
        "mean": stats.mean_mantissa,
        "mean_unit": units,
        "std": stats.std_mantissa,
        "std_unit": units,
        "center": np.asarray(center, dtype=np.float64),
        "center_unit": units,
        "scale": np.asarray(scale, dtype=np.float64),
        "scale_unit": units,
    }
    if robust is not None:
        small |= {
            "median": robust.median_mantissa,
            "median_unit": units,
            "mad": robust.mad_mantissa,
            "mad_unit": units,
        }
    shape = (rec.n_samples, rec.n_channels)
    _write_npz(path, _normalized(rec, center, scale, step, progress), shape, small)
    return stats if robust is None else robust


def _write_npz(
    path: str, blocks: Iterator[np.ndarray], shape: tuple[int, int], small: dict[str, Any]
) -> None:
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                with zf.open("data.npy", "w", force_zip64=True) as member:
                    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_1_0(member, header)
                    rows = 0
                    for block in blocks:
                        member.write(np.ascontiguousarray(block, dtype="<f4"))
                        rows += block.shape[0]
                    if rows != shape[0]:  # pragma: no cover - the reader checks every block's length
                        raise ValueError(f"{path}: wrote {rows} rows, expected {shape[0]}")
                for key, value in small.items():
                    with zf.open(f"{key}.npy", "w") as member:
                        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_REQUIRED = (
    "format",
    "method",
    "data",
    "channel_names",
    "sampling_rate",
    "mean",
    "mean_unit",
    "std",
    "std_unit",
)


def load_normalized(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write_normalized` (no pickle), checking its fields.

    Returns
    -------
    dict
        ``data`` (float32 array), ``channel_names`` (list of str), ``method``
        (str), ``sampling_rate`` (Quantity in Hz), and ``mean``, ``std``
        (``center``, ``scale``, ``median``, ``mad`` when present): lists of
        scalar Quantities, one per channel, in the channel's unit.

    Raises
    ------
    ValueError
        When a field is missing or malformed (the message names it) or the
        format is not ``'unitnorm.normalized/1'``.
    """
    with np.load(os.fspath(path), allow_pickle=False) as npz:
        missing = [k for k in _REQUIRED if k not in npz.files]
        if missing:
            raise ValueError(f"{path}: not a unitnorm normalized file: field {missing[0]!r} is missing")
        fmt = str(npz["format"])
        if fmt != FORMAT:
            raise ValueError(f"{path}: field 'format' is {fmt!r}, expected {FORMAT!r}")
        data = npz["data"]
        names = [str(n) for n in npz["channel_names"]]
        if data.ndim != 2 or data.shape[1] != len(names):
            raise ValueError(f"{path}: field 'data' has shape {data.shape} for {len(names)} channel names")
        out: dict[str, Any] = {
            "data": data,
            "channel_names": names,
            "method": str(npz["method"]),
            "sampling_rate": u.Quantity(float(npz["sampling_rate"]), unit=u.hertz),
        }
        for key in ("mean", "std", "center", "scale", "median", "mad"):
            if key not in npz.files:
                continue
            values, units = npz[key], npz.get(f"{key}_unit")
            if units is None or values.shape != (len(names),) or units.shape != (len(names),):
                raise ValueError(f"{path}: field {key!r} or {key + '_unit'!r} is malformed")
            out[key] = [attach(np.float64(v), parse_unit(str(s))) for v, s in zip(values, units, strict=True)]
    return out
