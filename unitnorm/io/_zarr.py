"""Zarr stores: a float32 ``data`` array (time chunks x channels) and JSON attributes, written atomically.

``unitnorm.io`` writes what it is handed (an array, or a Recording streamed chunk by
chunk) and reads it back; it knows nothing of normalization. zarr is imported when a
function here is called (``pip install -e ".[scale]"``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import brainunit as u
import numpy as np

from unitnorm.io._recording import Recording, attach
from unitnorm.io._stream import chunk_size
from unitnorm.io._units_parse import parse_unit

__all__ = ["read_zarr", "write_zarr"]

#: Attributes :func:`read_zarr` needs.
REQUIRED = ("channel_names", "sampling_rate_hz")


def _zarr(who: str) -> Any:
    try:
        import zarr
    except ImportError:
        raise ImportError(f'{who} needs zarr: pip install -e ".[scale]"') from None
    return zarr


def _blocks(data: Any, step: int) -> Iterator[tuple[int, np.ndarray]]:
    if isinstance(data, Recording):
        with data._reader() as read:
            for start in range(0, data.n_samples, step):
                yield start, read(start, min(data.n_samples, start + step))
    else:
        for start in range(0, data.shape[0], step):
            yield start, data[start : start + step]


def write_zarr(
    path: str | os.PathLike,
    data: Any,
    attrs: Mapping[str, Any] | None = None,
    *,
    chunk_samples: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``data`` as a chunked, compressed float32 Zarr array ``'data'`` with ``attrs``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The store (a folder, conventionally ``NAME.zarr``). It is built under a
        temporary name in the same folder and renamed into place only when
        complete, so a crash never leaves a half-written store at ``path``.
    data : Recording or array_like
        ``(n_samples, n_channels)``; a Recording is read chunk by chunk (memory
        bounded by the chunk), e.g. one a scaler normalizes lazily. A Quantity is
        refused: store its unit as an attribute.
    attrs : mapping, optional
        JSON-serializable attributes of the store's root group.
    chunk_samples : int, optional
        Samples per Zarr chunk (and per read); default about 2**20 values.
    overwrite : bool, default False
        Replace a store already at ``path`` (the old one stays until the new one
        is complete).

    Raises
    ------
    FileExistsError
        When ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        When the folder of ``path`` does not exist.
    TypeError
        For a Quantity or data that are not a real 2-D array.
    ImportError
        Without zarr.

    See Also
    --------
    read_zarr, write_npz

    Examples
    --------
    >>> import os, tempfile, numpy as np, zarr
    >>> from unitnorm.io import write_zarr
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "x.zarr")
    ...     write_zarr(path, np.ones((5, 2)), {"note": "ones"})
    ...     store = zarr.open_group(path, mode="r")
    ...     print(store["data"].dtype, store["data"].shape, store.attrs["note"])
    float32 (5, 2) ones
    """
    zarr = _zarr("write_zarr")
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: the output folder {directory} does not exist")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    if isinstance(data, u.Quantity):
        raise TypeError(
            "write_zarr: data must be a plain array or a Recording; store a Quantity's unit in attrs"
        )
    if isinstance(data, Recording):
        shape = (data.n_samples, data.n_channels)
        step = chunk_size(data, None, chunk_samples)
    else:
        data = np.asarray(data)
        if data.dtype.kind not in "iuf" or data.ndim != 2:
            raise TypeError(
                f"write_zarr: data must be a real 2-D array, got dtype {data.dtype}, shape {data.shape}"
            )
        shape = data.shape
        step = chunk_samples or max(1, (1 << 20) // max(1, shape[1]))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    try:
        group = zarr.open_group(tmp, mode="w-")
        arr = group.create_array(
            "data", shape=shape, chunks=(max(1, min(step, shape[0] or 1)), max(1, shape[1])), dtype="float32"
        )
        for start, block in _blocks(data, step):
            arr[start : start + block.shape[0]] = np.asarray(block, dtype=np.float32)
        group.attrs.update(dict(attrs or {}))
        if os.path.lexists(path):
            old = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


class _ZarrSource:
    """The samples of a Zarr array, read block by block."""

    def __init__(self, array: Any):
        self.array = array
        self.n_samples = int(array.shape[0])

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        def read(start: int, stop: int, columns: Any) -> np.ndarray:
            block = np.asarray(self.array[start:stop], dtype=np.float64)
            cols = list(columns)
            return block if cols == list(range(block.shape[1])) else block[:, cols]

        yield read


def read_zarr(path: str | os.PathLike) -> Recording:
    """Read a store written by :func:`write_zarr` (e.g. by ``unitnorm normalize --out-dir``) as a Recording.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.zarr`` folder.

    Returns
    -------
    Recording
        Lazily read (nothing is loaded until asked), with the channel names and the
        sampling rate of the attributes; the samples are dimensionless (a normalized
        recording). Two extra attributes: ``attrs``, the store's attributes as a
        dict, and ``stats``, per statistic of ``attrs['stats']`` (``{'values': [...],
        'unit': [...]}``) a list of scalar Quantities, one per channel, in the unit
        stored for that channel (plain floats for dimensionless statistics).

    Raises
    ------
    FileNotFoundError
        When there is no store at ``path``.
    ValueError
        When an attribute is missing or malformed (the message names it), or the
        ``data`` array does not match the channel names.
    ImportError
        Without zarr.

    See Also
    --------
    write_zarr, unitnorm.preprocessing.normalize_corpus

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from unitnorm.io import read_zarr, write_zarr
    >>> stats = {"mean": {"values": [2.0, 5.0], "unit": ["mV", "uV"]}}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "x.zarr")
    ...     write_zarr(path, np.zeros((4, 2)),
    ...                {"channel_names": ["a", "b"], "sampling_rate_hz": 100.0, "stats": stats})
    ...     rec = read_zarr(path)
    ...     print(rec.channel_names, rec.stats["mean"][0], rec.stats["mean"][1], rec.n_samples)
    ('a', 'b') 2. mV 5. uV 4
    """
    zarr = _zarr("read_zarr")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such Zarr store")
    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    for key in REQUIRED:
        if key not in attrs:
            raise ValueError(f"{path}: not a unitnorm Zarr store: attribute {key!r} is missing")
    if "data" not in group:
        raise ValueError(f"{path}: not a unitnorm Zarr store: the array 'data' is missing")
    names = attrs["channel_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: attribute 'channel_names' must be a list of strings")
    array = group["data"]
    if len(array.shape) != 2 or array.shape[1] != len(names):
        raise ValueError(f"{path}: array 'data' has shape {array.shape} for {len(names)} channel names")
    try:
        rate = float(attrs["sampling_rate_hz"])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: attribute 'sampling_rate_hz' must be a number") from None
    rec = Recording._from_source(
        _ZarrSource(array), names, [u.UNITLESS] * len(names), rate, f"Zarr store {path}"
    )
    stats: dict[str, list[Any]] = {}
    for key, entry in (attrs.get("stats") or {}).items():
        try:
            values, units = entry["values"], entry["unit"]
            if isinstance(units, str):
                units = [units] * len(values)
            if len(values) != len(names) or len(units) != len(names):
                raise ValueError
            stats[key] = [
                attach(np.float64(np.nan if v is None else v), parse_unit(s) if s else u.UNITLESS)
                for v, s in zip(values, units, strict=True)
            ]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}: attribute 'stats.{key}' must hold 'values' and 'unit', one per channel"
            ) from None
    rec.attrs = attrs
    rec.stats = stats
    return rec
