"""NWB files through pynwb: an ``ElectricalSeries`` or any other ``TimeSeries``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from unitnorm.io._edf import EXTRA_HINT, check_file
from unitnorm.io._recording import ReadFn, Recording, pick_named, shorten
from unitnorm.io._units_parse import parse_unit

__all__ = ["read_nwb"]

# A timestamp step may differ from the mean step by this fraction and still count as regular.
TIMESTAMP_RTOL = 1e-3


def _pynwb() -> Any:
    try:
        import h5py
        import pynwb
    except ImportError as err:
        raise ImportError(f"read_nwb needs pynwb, which is not installed: {EXTRA_HINT}") from err
    return pynwb, h5py


class NwbSource:
    """Rows of an HDF5 dataset, scaled per column: ``raw * scale[c] + offset``."""

    def __init__(self, filename: str, dataset: str, scale: np.ndarray, offset: float, n: int, label: str):
        self.filename = filename
        self.dataset = dataset
        self.scale = scale
        self.offset = offset
        self.n_samples = n
        self.label = label

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        _, h5py = _pynwb()
        try:
            handle = h5py.File(self.filename, "r")
        except OSError as err:
            raise ValueError(f"{self.label}: cannot open the NWB file again ({err})") from None
        try:
            ds = handle[self.dataset]

            def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
                block = np.asarray(ds[start:stop])
                if block.ndim == 1:
                    block = block[:, None]
                cols = list(columns)
                if cols != list(range(block.shape[1])):
                    block = block[:, cols]
                return block.astype(np.float64) * self.scale[cols] + self.offset

            yield read
        finally:
            handle.close()


def _reason(err: BaseException, path: str) -> str:
    """Return the reason in a pynwb/hdmf error, first, without the dump of the object it concerns.

    hdmf's ``ConstructError`` carries ``(builder, message)``: the builder prints as a
    long dictionary, the message ends in "... due to: <the reason>".
    """
    messages = [a for a in err.args if isinstance(a, str)]
    text = " ".join((messages[-1] if messages else str(err)).split())
    where = ""
    for arg in err.args:
        name = getattr(arg, "path", None) or getattr(arg, "name", None)
        if isinstance(name, str) and not isinstance(arg, str):
            where = f" (in {name.removeprefix('root/')})"
            break
    marker = "due to: "
    if marker in text:
        what = text[: text.index(marker)].replace("Could not construct ", "").replace(" object ", " ")
        text = f"{text[text.index(marker) + len(marker) :]}; could not build the {what.strip()}"
    text = text.replace(path, "the file")
    return f"{text}{where}" if len(text) < 300 else shorten(text, 300) + where


def _all_series(nwbfile: Any, pynwb: Any) -> list[Any]:
    return [obj for obj in nwbfile.objects.values() if isinstance(obj, pynwb.TimeSeries)]


def _find(nwbfile: Any, pynwb: Any, name: str | None, path: str) -> Any:
    series = _all_series(nwbfile, pynwb)
    if name is not None:
        found = [s for s in series if s.name == name]
        if len(found) == 1:
            return found[0]
        names = shorten(", ".join(repr(n) for n in sorted({s.name for s in series})), 240)
        if not found:
            raise ValueError(f"{path}: no TimeSeries named {name!r}; pass name= (or --name) one of {names}")
        raise ValueError(
            f"{path}: {len(found)} TimeSeries are named {name!r}; rename one"
        )  # pragma: no cover
    acquired = [s for s in nwbfile.acquisition.values() if isinstance(s, pynwb.TimeSeries)]
    pool = acquired or series
    if len(pool) == 1:
        return pool[0]
    if not pool:
        raise ValueError(f"{path}: the NWB file holds no TimeSeries")
    names = shorten(repr(sorted(s.name for s in pool)), 200)
    raise ValueError(f"{path}: the NWB file holds several TimeSeries {names}; pass name=... (or --name)")


def _rate(series: Any, n: int, path: str) -> float:
    if series.rate is not None:
        rate = float(series.rate)
        if not (rate > 0 and np.isfinite(rate)):
            raise ValueError(
                f"{path}: TimeSeries {series.name!r} has rate {rate}, expected a positive number"
            )
        return rate
    if series.timestamps is None:  # pragma: no cover - pynwb requires one of the two
        raise ValueError(f"{path}: TimeSeries {series.name!r} has neither rate nor timestamps")
    t = np.asarray(series.timestamps[:], dtype=np.float64)
    if t.shape != (n,) or n < 2:
        raise ValueError(
            f"{path}: TimeSeries {series.name!r} has {t.shape[0]} timestamps for {n} samples; "
            "a sampling rate needs at least 2 timestamps, one per sample"
        )
    step = (t[-1] - t[0]) / (n - 1)
    steps = np.diff(t)
    if not step > 0 or np.max(np.abs(steps - step)) > TIMESTAMP_RTOL * step:
        worst = float(np.max(np.abs(steps - step))) if step > 0 else float("nan")
        raise ValueError(
            f"{path}: TimeSeries {series.name!r} has irregular timestamps (mean step {step:g} s, "
            f"a step differs by {worst:g} s); unitnorm needs one sampling rate"
        )
    return 1.0 / step


def _channel_names(series: Any, pynwb: Any, n_channels: int) -> list[str]:
    electrodes = getattr(series, "electrodes", None)
    if electrodes is not None:
        rows = np.asarray(electrodes.data[:])
        table = electrodes.table
        if "label" in table.colnames:
            labels = [str(table["label"][int(r)]) for r in rows]
        else:
            ids = np.asarray(table.id[:])
            labels = [str(ids[int(r)]) for r in rows]
        if len(labels) == n_channels:
            return labels
    if n_channels == 1:
        return [series.name]
    return [f"{series.name}[{i}]" for i in range(n_channels)]


def read_nwb(
    path: str | os.PathLike,
    name: str | None = None,
    channels: str | Sequence[str] | None = None,
) -> Recording:
    """Read a ``TimeSeries`` (e.g. an ``ElectricalSeries``) of an NWB file as a :class:`Recording`.

    Parameters
    ----------
    path : str or os.PathLike
        The NWB (HDF5) file.
    name : str, optional
        The TimeSeries' name. Default: the only TimeSeries in ``acquisition``
        (or in the whole file when ``acquisition`` holds none).
    channels : str or sequence of str, optional
        Channel names to keep, in this order.

    Returns
    -------
    Recording
        Values ``data * conversion * channel_conversion[c] + offset`` in the series'
        ``unit`` (``'volts'`` for an ElectricalSeries), as the NWB specification
        says and as ``TimeSeries.get_data_in_units()`` computes; the sampling rate
        from ``rate``, or from ``timestamps`` when they are regular. Channel names
        are the electrodes' ``label`` column, else their ids, for an
        ElectricalSeries; ``name[i]`` otherwise. Samples are read lazily from the
        HDF5 dataset.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When the file is not NWB, the series is missing or ambiguous, its data
        are not 1-D or 2-D, the unit is unknown, the timestamps are irregular
        (steps differing by more than 0.1 %), or a channel is missing.
    ImportError
        When pynwb is not installed (``pip install -e ".[io]"``).
    """
    pynwb, h5py = _pynwb()
    path = check_file(path, "read_nwb")
    try:
        io = pynwb.NWBHDF5IO(path, "r")
    except Exception as err:  # h5py and hdmf raise many kinds for a file that is not NWB
        raise ValueError(f"{path}: not a readable NWB file: {_reason(err, path)}") from None
    try:
        try:
            nwbfile = io.read()
        except Exception as err:
            raise ValueError(f"{path}: not a readable NWB file: {_reason(err, path)}") from None
        series = _find(nwbfile, pynwb, name, path)
        data = series.data
        if not isinstance(data, h5py.Dataset):
            raise ValueError(f"{path}: TimeSeries {series.name!r} keeps no data in this file")
        if data.ndim not in (1, 2) or data.dtype.kind not in "iuf":
            raise ValueError(
                f"{path}: TimeSeries {series.name!r} has data of shape {data.shape} and dtype {data.dtype}; "
                "expected numbers of shape (time,) or (time, channels)"
            )
        n = int(data.shape[0])
        n_channels = 1 if data.ndim == 1 else int(data.shape[1])
        try:
            unit = parse_unit(series.unit)
        except ValueError as err:
            raise ValueError(f"{path}: TimeSeries {series.name!r}: {err}") from None
        scale = np.full(n_channels, float(series.conversion), dtype=np.float64)
        channel_conversion = getattr(series, "channel_conversion", None)
        if channel_conversion is not None:
            cc = np.asarray(channel_conversion[:], dtype=np.float64)
            if cc.shape != (n_channels,):
                raise ValueError(
                    f"{path}: channel_conversion has {cc.shape} values for {n_channels} channels"
                )
            scale = scale * cc
        offset = float(getattr(series, "offset", 0.0) or 0.0)
        rate = _rate(series, n, path)
        names = _channel_names(series, pynwb, n_channels)
        source = NwbSource(os.path.abspath(data.file.filename), data.name, scale, offset, n, path)
    finally:
        io.close()
    rec = Recording._from_source(source, names, [unit] * n_channels, rate, description=path)
    return pick_named(rec, channels, path)
