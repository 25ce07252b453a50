"""EDF, EDF+, BDF and BDF+ files through pyedflib."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from unitnorm.io._recording import ReadFn, Recording, no_such_channel
from unitnorm.io._units_parse import parse_unit

__all__ = ["read_edf"]

EXTRA_HINT = "pip install 'unitnorm[io]'"
# Signals with these labels hold EDF+/BDF+ annotations, not samples (plain EDF readers show them).
ANNOTATION_LABELS = frozenset({"EDF Annotations", "BDF Annotations"})


def _pyedflib() -> Any:
    try:
        import pyedflib
    except ImportError as err:
        raise ImportError(f"read_edf needs pyedflib, which is not installed: {EXTRA_HINT}") from err
    return pyedflib


def check_file(path: Any, who: str) -> str:
    """``path`` as a str, or ``FileNotFoundError`` / ``IsADirectoryError`` naming it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{who} expected a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder, not a file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _open(pyedflib: Any, path: str) -> Any:
    try:
        return pyedflib.EdfReader(
            path,
            annotations_mode=pyedflib.DO_NOT_READ_ANNOTATIONS,
            check_file_size=pyedflib.CHECK_FILE_SIZE,
        )
    except OSError as err:
        raise ValueError(f"{path}: not a readable EDF/BDF file ({' '.join(str(err).split())})") from None


class Layout:
    """Where each signal's samples sit in the data records, from the raw header.

    Used to read samples straight from a memory map (much faster than one pyedflib
    call per signal and record). Built only after pyedflib has validated the file,
    and only when the raw header agrees with pyedflib on every label and count.
    """

    def __init__(
        self,
        header_bytes: int,
        record_bytes: int,
        n_records: int,
        width: int,
        starts: list[int],
        spr: list[int],
    ):
        self.header_bytes = header_bytes
        self.record_bytes = record_bytes
        self.n_records = n_records
        self.width = width  # bytes per sample: 2 (EDF) or 3 (BDF)
        self.starts = starts  # per pyedflib signal: its first sample's index within a record
        self.spr = spr  # per pyedflib signal: samples per record

    def key(self) -> tuple:
        return (self.header_bytes, self.record_bytes, self.n_records, self.width, self.starts, self.spr)

    @classmethod
    def of(cls, path: str, reader: Any) -> Layout | None:
        with open(path, "rb") as fh:
            head = fh.read(256)
            try:
                ns = int(head[252:256].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return None
            if not 0 < ns <= 4096:
                return None
            rest = fh.read(256 * ns)
        if len(rest) != 256 * ns:
            return None
        try:
            labels = [rest[16 * i : 16 * (i + 1)].decode("latin-1").strip() for i in range(ns)]
            spr = [int(rest[216 * ns + 8 * i : 216 * ns + 8 * (i + 1)].decode("ascii")) for i in range(ns)]
        except ValueError:
            return None
        width = 3 if head[:1] == b"\xff" else 2
        plus = reader.filetype in (1, 3)  # EDF+ / BDF+: pyedflib hides the annotation signals
        visible = [i for i in range(ns) if not (plus and labels[i] in ANNOTATION_LABELS)]
        n_records = int(reader.datarecords_in_file)
        if len(visible) != reader.signals_in_file or n_records <= 0 or min(spr) < 0:
            return None
        starts, offsets = [], np.concatenate([[0], np.cumsum(spr)])
        for k, i in enumerate(visible):
            if reader.getLabel(k).strip() != labels[i] or reader.samples_in_file(k) != spr[i] * n_records:
                return None
            starts.append(int(offsets[i]))
        record_bytes = int(offsets[-1]) * width
        if 256 * (ns + 1) + n_records * record_bytes > os.path.getsize(path):
            return None
        return cls(256 * (ns + 1), record_bytes, n_records, width, starts, [spr[i] for i in visible])

    def digital(self, records: np.ndarray, signal: int, start: int, stop: int) -> np.ndarray:
        """Digital samples ``start:stop`` of ``signal`` from the mapped records (int32)."""
        k = self.spr[signal]
        r0, r1 = start // k, (stop - 1) // k + 1
        lo, hi = self.starts[signal] * self.width, (self.starts[signal] + k) * self.width
        raw = records[r0:r1, lo:hi]
        if self.width == 2:
            values = raw.reshape(r1 - r0, k, 2).view("<i2").reshape(-1).astype(np.int32)
        else:
            b = raw.reshape(-1, 3).astype(np.int32)
            values = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            values -= (values & 0x800000) << 1  # sign-extend 24-bit two's complement
        return values[start - r0 * k : stop - r0 * k]


class EdfSource:
    """Digital samples of some EDF signals, turned into physical values on reading."""

    def __init__(
        self,
        path: str,
        signals: Sequence[int],
        gains: np.ndarray,
        offsets: np.ndarray,
        n: int,
        layout: Layout | None = None,
    ):
        self.path = path
        self.signals = list(signals)
        self.gains = gains
        self.offsets = offsets
        self.n_samples = n
        self.layout = layout

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        pyedflib = _pyedflib()
        reader = _open(pyedflib, self.path)  # validates the file again: it may have changed
        records = None
        now = None if self.layout is None else Layout.of(self.path, reader)
        if now is not None and now.key() == self.layout.key():
            lay = self.layout
            records = np.memmap(
                self.path,
                dtype=np.uint8,
                mode="r",
                offset=lay.header_bytes,
                shape=(lay.n_records, lay.record_bytes),
            )
        try:

            def digital(signal: int, start: int, stop: int) -> np.ndarray:
                if records is not None:
                    return self.layout.digital(records, signal, start, stop)
                return reader.readSignal(signal, start, stop - start, digital=True)

            def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
                # filled channel by channel, contiguous per channel; returned as (samples, channels)
                out = np.empty((len(columns), stop - start), dtype=np.float64)
                for j, col in enumerate(columns):
                    if stop == start:
                        break
                    values = digital(self.signals[col], start, stop)
                    if values.shape != (stop - start,):
                        raise ValueError(
                            f"{self.path}: signal {self.signals[col]} gave {values.shape[0]} samples "
                            f"from {start}, expected {stop - start} (truncated file?)"
                        )
                    np.multiply(values, self.gains[col], out=out[j])
                    out[j] += self.offsets[col]
                return out.T

            yield read
        finally:
            records = None
            reader.close()


def read_edf(path: str | os.PathLike, channels: str | Sequence[str] | None = None) -> Recording:
    """Read an EDF, EDF+, BDF or BDF+ file as a :class:`Recording` (lazily).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    channels : str or sequence of str, optional
        Signal labels to keep, in this order (default: every signal; EDF+
        annotation signals are never data).

    Returns
    -------
    Recording
        Channel names from the signal labels (a repeated label gets ``#2``, ``#3``
        appended), units from each signal's physical dimension through
        :func:`parse_unit`, physical values ``pmin + (d - dmin) * (pmax - pmin) / (dmax - dmin)``
        from the digital samples ``d`` in float64. Nothing is read until asked.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When the file is not EDF/BDF or is corrupt (pyedflib's reason is quoted),
        a unit string is unknown, a channel is missing, the kept signals have
        different sampling rates (pass ``channels``), or a digital range is empty.
    ImportError
        When pyedflib is not installed (``pip install 'unitnorm[io]'``).

    Notes
    -----
    The header's physical minimum may exceed its maximum (a negative gain, e.g.
    an inverted polarity); the formula above handles it. Values equal pyedflib's
    ``readSignal`` to float64 rounding, far inside one quantization step
    ``|pmax - pmin| / (dmax - dmin)``.

    Examples
    --------
    >>> from importlib.resources import files
    >>> from unitnorm.io import read_edf
    >>> rec = read_edf(files("unitnorm") / "data" / "test_subsecond_crop.edf")
    >>> rec
    Recording(1 channel: Fp1 [uV]; 15360 samples at 128 Hz, 120 s)
    >>> print(rec.data.unit, rec.data.shape)
    uV (15360, 1)
    """
    pyedflib = _pyedflib()
    path = check_file(path, "read_edf")
    reader = _open(pyedflib, path)
    try:
        n_signals = reader.signals_in_file
        labels = [reader.getLabel(i).strip() for i in range(n_signals)]
        names: list[str] = []
        for label in labels:
            name, k = label, 1
            while name in names:
                k += 1
                name = f"{label}#{k}"
            names.append(name)
        if channels is None:
            keep = [i for i in range(n_signals) if labels[i] not in ANNOTATION_LABELS]
        else:
            wanted = [channels] if isinstance(channels, str) else list(channels)
            if not wanted:
                raise ValueError(f"{path}: no channels given")
            keep = []
            for name in wanted:
                if name not in names:
                    raise ValueError(f"{path}: {no_such_channel(name, names)}")
                keep.append(names.index(name))
        if not keep:
            raise ValueError(f"{path}: the file has no data signals")
        units, gains, offsets, rates, counts = [], [], [], [], []
        for i in keep:
            dimension = reader.getPhysicalDimension(i)
            try:
                units.append(parse_unit(dimension))
            except ValueError as err:
                raise ValueError(f"{path}: channel {names[i]!r}: {err}") from None
            pmin, pmax = float(reader.getPhysicalMinimum(i)), float(reader.getPhysicalMaximum(i))
            dmin, dmax = float(reader.getDigitalMinimum(i)), float(reader.getDigitalMaximum(i))
            if not dmax > dmin or not (np.isfinite(pmin) and np.isfinite(pmax)):
                raise ValueError(
                    f"{path}: channel {names[i]!r} has an unusable range: digital {dmin:g}..{dmax:g}, "
                    f"physical {pmin:g}..{pmax:g}"
                )
            gain = (pmax - pmin) / (dmax - dmin)
            gains.append(gain)
            offsets.append(pmin - gain * dmin)
            rates.append(float(reader.getSampleFrequency(i)))
            counts.append(int(reader.samples_in_file(i)))
        if len(set(rates)) > 1:
            groups: dict[float, list[str]] = {}
            for i, rate in zip(keep, rates, strict=True):
                groups.setdefault(rate, []).append(names[i])
            listing = "; ".join(f"{rate:g} Hz: {', '.join(members)}" for rate, members in groups.items())
            raise ValueError(
                f"{path}: the signals have different sampling rates ({listing}); "
                "pick channels of one rate (channels=[...] or --channels)"
            )
        if not rates[0] > 0:
            raise ValueError(f"{path}: sampling rate {rates[0]:g} Hz is not positive")
        layout = Layout.of(path, reader)
    finally:
        reader.close()
    source = EdfSource(path, keep, np.array(gains), np.array(offsets), counts[0], layout)
    return Recording._from_source(source, [names[i] for i in keep], units, rates[0], description=path)
