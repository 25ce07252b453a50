"""What a scaler is given: arrays, Quantities, Recordings or chunks, read as float64 mantissas per channel."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import brainunit as u
import numpy as np

from unitnorm import _units
from unitnorm.io._recording import Recording, factor
from unitnorm.io._stream import chunk_size, input_bytes, progress_bar

__all__ = ["Layout", "Source", "layout_for", "read_input"]


def _mantissa(x: Any, who: str) -> tuple[Any, u.Unit]:
    """Return ``(array, unit)`` of a 2-D block; the array keeps its type (NumPy or jax)."""
    if isinstance(x, u.Quantity):
        m, unit = x.mantissa, x.unit
    else:
        m, unit = x, _units.UNITLESS
    if not hasattr(m, "dtype") or not hasattr(m, "ndim"):
        try:
            m = np.asarray(m)
        except (TypeError, ValueError):
            raise TypeError(
                f"{who} expected an array, a Quantity, a Recording or chunks, got {type(x).__name__}"
            ) from None
    kind = np.dtype(m.dtype).kind
    if kind not in "iuf":
        raise TypeError(f"{who} expected real numbers (int or float), got an array of dtype {m.dtype}")
    if m.ndim != 2:
        raise ValueError(f"{who} expected data of shape (time, channels), got shape {tuple(m.shape)}")
    return m, unit


@dataclass
class Source:
    """Data to fit or transform: per-channel units and a way to read float64 blocks."""

    kind: str  # "array", "recording" or "chunks"
    units: tuple[u.Unit, ...]
    names: tuple[str, ...] | None
    value: Any  # the array, the Recording, or an iterator of chunks (first chunk pushed back)
    quantity: bool = False
    mne: Any = None  # the MNE Raw or Epochs the Recording was read from

    def output(self, rec: Recording) -> Any:
        """Return a normalized Recording as the kind given: a Raw or Epochs for MNE input."""
        return rec if self.mne is None else to_mne_like(rec, self.mne)

    @property
    def n_channels(self) -> int:
        return len(self.units)

    def blocks(
        self, who: str, chunk_samples: int | None = None, progress: bool | None = False
    ) -> Iterator[np.ndarray]:
        """Yield float64 ``(n, channels)`` mantissas, each channel in ``self.units``."""
        if self.kind == "array":
            yield np.asarray(self.value, dtype=np.float64)
        elif self.kind == "recording":
            rec = self.value
            step = chunk_size(rec, None, chunk_samples)
            nbytes = input_bytes(rec)
            with rec._reader() as read, progress_bar(rec.n_samples, "statistics", progress, nbytes) as update:
                for start in range(0, rec.n_samples, step):
                    block = read(start, min(rec.n_samples, start + step))
                    update(block.shape[0])
                    yield block
        else:
            for i, chunk in enumerate(self.value):
                m, unit = _mantissa(chunk, f"{who} (chunk {i})")
                if m.shape[1] != self.n_channels:
                    raise ValueError(
                        f"{who} (chunk {i}) expected {self.n_channels} channels, got shape {tuple(m.shape)}"
                    )
                block = np.asarray(m, dtype=np.float64)
                if not _units.same_dim(unit, self.units[0]):
                    raise _units.UnitError(
                        f"{who} (chunk {i}): expected {_units.describe(self.units[0])} like the first chunk, "
                        f"got {_units.describe(unit)}"
                    )
                f = factor(unit, self.units[0])
                yield block if f == 1.0 else block * f


def _mne_kind(data: Any) -> str | None:
    """Return ``'raw'`` or ``'epochs'`` for MNE objects (without importing MNE when nobody did)."""
    mne = sys.modules.get("mne")
    if mne is None:
        return None
    if isinstance(data, mne.io.BaseRaw):
        return "raw"
    if isinstance(data, mne.BaseEpochs):
        return "epochs"
    return None


def from_mne_input(data: Any, kind: str, who: str) -> Recording:
    """Read an MNE Raw (lazily) or Epochs (epochs x time as rows) as a Recording in SI units."""
    from unitnorm.io._mne import channel_units, from_mne

    if kind == "raw":
        return from_mne(data)
    units = channel_units(data.info, who)
    block = data.get_data(picks=np.arange(len(data.ch_names)))  # (epochs, channels, times), SI units
    rows = np.ascontiguousarray(block.transpose(0, 2, 1).reshape(-1, block.shape[1]), dtype=np.float64)
    return Recording(rows, float(data.info["sfreq"]), list(data.ch_names), units)


def to_mne_like(rec: Recording, original: Any) -> Any:
    """Put a normalized Recording's values into a copy of the MNE Raw or Epochs it came from."""
    out = original.copy()
    if list(out.ch_names) != list(rec.channel_names):
        out.pick(list(rec.channel_names))
    out.load_data()
    values = rec.mantissa()  # (rows, channels)
    if _mne_kind(original) == "raw":
        shaped = values.T
    else:
        n_epochs, n_times = len(out), len(out.times)
        shaped = values.reshape(n_epochs, n_times, -1).transpose(0, 2, 1)
    out.apply_function(lambda _: shaped, picks="all", channel_wise=False, verbose="error")
    return out


def read_input(data: Any, who: str) -> Source:
    """Recognize the kind of ``data`` and its units (without reading a Recording)."""
    kind = _mne_kind(data)
    if kind is not None:
        rec = from_mne_input(data, kind, who)
        src = read_input(rec, who)
        src.mne = data
        return src
    if isinstance(data, Recording):
        if data.n_samples == 0:
            raise ValueError(f"{who}: the recording has no samples")
        return Source("recording", tuple(data.channel_units), tuple(data.channel_names), data)
    if isinstance(data, (str, bytes, dict)) or data is None:
        raise TypeError(
            f"{who} expected an array or Quantity of shape (time, channels), a Recording or an iterable "
            f"of chunks, got {type(data).__name__}"
        )
    if isinstance(data, u.Quantity) or hasattr(data, "__array__") or isinstance(data, (list, tuple)):
        first = data[0] if isinstance(data, (list, tuple)) and len(data) else None
        is_chunk_list = first is not None and (
            isinstance(first, u.Quantity) or getattr(first, "ndim", 0) == 2
        )
        if not is_chunk_list:
            m, unit = _mantissa(data, who)
            return Source("array", (unit,) * m.shape[1], None, m, isinstance(data, u.Quantity))
    try:
        it = iter(data)
    except TypeError:
        raise TypeError(
            f"{who} expected an array or Quantity of shape (time, channels), a Recording or an iterable "
            f"of chunks, got {type(data).__name__}"
        ) from None
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(f"{who}: the iterable of chunks is empty") from None
    m, unit = _mantissa(first, f"{who} (chunk 0)")
    return Source(
        "chunks", (unit,) * m.shape[1], None, itertools.chain([first], it), isinstance(first, u.Quantity)
    )


@dataclass
class Layout:
    """How channels map to groups (one unit each) and statistics slots."""

    groups: tuple[np.ndarray, ...]  # channel indices per group
    units: tuple[u.Unit, ...]  # one per group
    pooled: bool  # one statistic per group (True) or per channel
    n_channels: int
    names: tuple[str, ...] | None

    @property
    def group_of(self) -> np.ndarray:
        out = np.empty(self.n_channels, dtype=np.int64)
        for g, idx in enumerate(self.groups):
            out[idx] = g
        return out

    @property
    def slot_of(self) -> np.ndarray:
        return self.group_of if self.pooled else np.arange(self.n_channels)

    @property
    def n_slots(self) -> int:
        return len(self.groups) if self.pooled else self.n_channels

    def factors(self, units: Sequence[u.Unit], who: str) -> np.ndarray:
        """Per channel, the factor from the incoming unit to the channel's group unit (or a UnitError)."""
        if len(units) != self.n_channels:
            raise ValueError(f"{who} expected {self.n_channels} channels, got {len(units)}")
        out = np.empty(self.n_channels)
        group_of = self.group_of
        for c, unit in enumerate(units):
            target = self.units[group_of[c]]
            if not _units.same_dim(unit, target):
                name = f"channel {self.names[c]!r}" if self.names else f"channel {c}"
                raise _units.UnitError(
                    f"{who}: {name} was fitted in {_units.describe(target)}, got {_units.describe(unit)}; "
                    "convert it or fit a new scaler"
                )
            out[c] = factor(unit, target)
        return out

    def split(self, block: np.ndarray) -> list[np.ndarray]:
        """Cut a ``(n, channels)`` block (group units) into one 1-D array of values per slot."""
        if not self.pooled:
            return [block[:, c] for c in range(self.n_channels)]
        return [block[:, idx].reshape(-1) for idx in self.groups]

    def per_channel(self, slot_values: np.ndarray) -> np.ndarray:
        return np.asarray(slot_values)[self.slot_of]


def layout_for(per: Any, units: Sequence[u.Unit], names: Sequence[str] | None, who: str) -> Layout:
    """Group channels by dimension (``per='channel'|'dimension'``) or by the pools given."""
    c = len(units)
    if isinstance(per, str):
        groups: list[list[int]] = []
        for i, unit in enumerate(units):
            for members in groups:
                if _units.same_dim(units[members[0]], unit):
                    members.append(i)
                    break
            else:
                groups.append([i])
        pooled = per == "dimension"
    else:
        groups = [list(p) for p in per]
        flat = [i for p in groups for i in p]
        if sorted(flat) != list(range(c)):
            raise ValueError(
                f"{who}: per must list every channel index 0..{c - 1} exactly once across the pools, "
                f"got {per!r}"
            )
        for k, pool in enumerate(groups):
            dims = {}
            for i in pool:
                dims.setdefault(u.get_dim(units[i]), []).append(i)
            if len(dims) > 1:
                listing = "; ".join(
                    f"{_units.describe(units[m[0]])}: channels {', '.join(map(str, m))}"
                    for m in dims.values()
                )
                raise _units.UnitError(
                    f"{who}: pool {k} mixes {len(dims)} dimensions ({listing}); "
                    "a pool must hold one dimension"
                )
        pooled = True
    return Layout(
        tuple(np.array(g, dtype=np.int64) for g in groups),
        tuple(units[g[0]] for g in groups),
        pooled,
        c,
        None if names is None else tuple(names),
    )
