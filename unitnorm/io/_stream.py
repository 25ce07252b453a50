"""Writing arrays and recordings to ``.npz`` files (atomically), and reading them back.

``unitnorm.io`` reads and writes; it knows nothing of normalization. The
normalizations (:func:`unitnorm.preprocessing.write_normalized`, the scalers)
hand it what to write: a Recording (streamed chunk by chunk) or an array, plus
small fields.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import brainunit as u
import numpy as np

from unitnorm.io._recording import Recording, attach
from unitnorm.io._units_parse import parse_unit

__all__ = ["load_normalized", "write_npz"]

FORMAT = "unitnorm.normalized/1"
# Default chunk: about this many values (8 MiB of float64) per read.
DEFAULT_CHUNK_VALUES = 1 << 20


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


PROGRESS_SECONDS = 10.0  # a progress line this often when stderr is not a terminal


def input_bytes(rec: Recording) -> int:
    """Size of the recording's file when it has one (what MB/s is measured in), else its float64 size."""
    path = getattr(rec, "_description", None)
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        return os.path.getsize(path)
    return 8 * rec.n_samples * rec.n_channels


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def progress_bar(
    total: int, desc: str, progress: bool | None, nbytes: int | None = None
) -> Iterator[Callable[[int], Any]]:
    """Yield ``update(n)`` counting ``total`` samples.

    ``progress=True``: a tqdm bar; ``False``: nothing; ``None`` (default): a tqdm bar on a
    terminal, else (batch jobs, ``nohup`` logs) one line every ``PROGRESS_SECONDS`` on stderr
    with the percentage, the throughput in MB/s of ``nbytes`` (the input's size) and the time left.
    """
    tty = sys.stderr.isatty()
    show = tty if progress is None else bool(progress)
    if show:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if progress:
                raise ImportError('progress=True needs tqdm: pip install -e ".[io]"') from None
            show = False
    if show:
        bar = tqdm(total=total, desc=desc, unit="sample", unit_scale=True, leave=False, file=sys.stderr)
        try:
            yield bar.update
        finally:
            bar.close()
        return
    if progress is False or tty or total <= 0:
        yield lambda n: None
        return
    import time

    per_sample = (nbytes or 0) / total
    start = last = time.monotonic()
    done = 0

    def update(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last < PROGRESS_SECONDS:
            return
        last = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        speed = f", {per_sample * rate / 1e6:.1f} MB/s" if per_sample else ""
        print(
            f"unitnorm: {desc}: {100 * done / total:.0f}% ({done}/{total} samples{speed}, "
            f"ETA {_clock(eta) if math.isfinite(eta) else '?'})",
            file=sys.stderr,
            flush=True,
        )

    yield update


def write_npz(
    path: str | os.PathLike,
    data: Any,
    fields: Mapping[str, Any] | None = None,
    *,
    chunk_samples: int | None = None,
    progress: bool | None = None,
) -> None:
    """Write ``data`` as float32 ``'data'`` plus small ``fields`` to an ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The output file (written exactly at this name, never half-written: a
        temporary file in the same folder is renamed over it when complete).
    data : Recording or array_like
        ``(n_samples, n_channels)``. A Recording is read chunk by chunk, so memory
        stays bounded by the chunk size (its channels' mantissas are written as they
        come, e.g. a recording normalized lazily by a scaler). A Quantity is refused:
        write its mantissa and its unit as a field.
    fields : mapping of str to array_like, optional
        Small arrays stored beside ``data`` (no object arrays: the file loads with
        ``allow_pickle=False``).
    chunk_samples : int, optional
        Samples per chunk for a Recording (default about 2**20 values).
    progress : bool, optional
        A tqdm bar: ``None`` (default) only when stderr is a terminal.

    Raises
    ------
    IsADirectoryError, FileNotFoundError
        When ``path`` is a folder or its folder does not exist.
    TypeError
        For a Quantity or non-numeric data.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from unitnorm.io import write_npz
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "x.npz")
    ...     write_npz(path, np.ones((3, 2)), {"note": np.array("ones")})
    ...     with np.load(path, allow_pickle=False) as npz:
    ...         print(npz["data"].dtype, npz["data"].shape, str(npz["note"]))
    float32 (3, 2) ones
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path}: is a folder; give a file name such as {os.path.join(path, 'out.npz')}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: the output folder {directory} does not exist")
    if isinstance(data, u.Quantity):
        raise TypeError(
            "write_npz: data must be a plain array or a Recording; store a Quantity's unit as a field"
        )
    small = {k: np.asarray(v) for k, v in (fields or {}).items()}
    if "data" in small:
        raise ValueError("write_npz: 'data' is the written array; choose another field name")
    if isinstance(data, Recording):
        step = chunk_size(data, None, chunk_samples)
        shape = (data.n_samples, data.n_channels)
        _write_npz(path, _recording_blocks(data, step, progress), shape, small)
        return
    arr = np.asarray(data)
    if arr.dtype.kind not in "iuf" or arr.ndim != 2:
        raise TypeError(f"write_npz: data must be a real 2-D array, got dtype {arr.dtype}, shape {arr.shape}")
    _write_npz(path, iter([arr]), arr.shape, small)


def _recording_blocks(rec: Recording, step: int, progress: bool | None) -> Iterator[np.ndarray]:
    with rec._reader() as read, progress_bar(rec.n_samples, "writing", progress, input_bytes(rec)) as update:
        for start in range(0, rec.n_samples, step):
            block = read(start, min(rec.n_samples, start + step))
            update(block.shape[0])
            yield block.astype(np.float32)


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
    """Read a file written by :func:`unitnorm.preprocessing.write_normalized`, checking its fields.

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

    Examples
    --------
    >>> import os, tempfile, brainunit as u, numpy as np
    >>> from unitnorm.io import Recording, load_normalized
    >>> from unitnorm.preprocessing import write_normalized
    >>> rec = Recording(np.array([[1.], [2.], [3.]]) * u.mV, 10.)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = write_normalized(rec, os.path.join(folder, "z.npz"))
    ...     z = load_normalized(os.path.join(folder, "z.npz"))
    >>> print(z["method"], z["mean"][0], z["data"][:, 0].round(4))
    zscore 2. mV [-1.2247  0.      1.2247]
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
