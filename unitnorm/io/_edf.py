"""EDF, EDF+, BDF and BDF+ files: our own header reader and memory map, pyedflib as fallback."""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from unitnorm.io._recording import (
    ReadFn,
    Recording,
    RecordingWarning,
    no_such_channel,
    shorten,
    unknown_units_error,
)
from unitnorm.io._units_parse import parse_unit

__all__ = ["read_edf", "read_edf_by_rate"]

EXTRA_HINT = 'pip install -e ".[io]"'
# Signals with these labels hold EDF+/BDF+ annotations, not samples (plain EDF readers show them).
ANNOTATION_LABELS = frozenset({"EDF Annotations", "BDF Annotations"})
# pyedflib's C library keeps a table of open files and refuses a second open of the same file,
# and is not documented as thread-safe: every pyedflib call of this module holds this lock.
PYEDFLIB_LOCK = threading.RLock()


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


# ---------------------------------------------------------------------------- the header


class HeaderError(ValueError):
    """The EDF/BDF header cannot be understood; the message is the reason (without the path)."""


def _field(raw: bytes, what: str) -> str:
    try:  # EDF says ASCII; writers in the wild use UTF-8 ('µV' as b'\xc2\xb5V') or Latin-1
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise HeaderError(f"{what} {raw!r} holds control characters (EDF allows printable ASCII only)")
    return text.strip()


def _number(raw: bytes, what: str, kind: type = float) -> Any:
    text = _field(raw, what)
    try:
        return kind(float(text)) if kind is int and "." in text else kind(text)
    except ValueError:
        raise HeaderError(f"{what} is {text!r}, not a number") from None


class Header:
    """An EDF/BDF header as the file says it, checked against the file's size.

    ``n_records`` is the number of complete data records the file holds; when the
    header's count differs, ``lie`` says so (both counts) and the records held are read.
    """

    def __init__(self, path: str):
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(256)
            if len(head) < 256:
                raise HeaderError(f"the file has {size} bytes, fewer than the 256 of an EDF/BDF header")
            if head[:8] == b"0       ":
                self.kind, self.width = "EDF", 2
            elif head[:8] == b"\xffBIOSEMI":
                self.kind, self.width = "BDF", 3
            else:
                raise HeaderError(
                    f"it starts with {head[:8]!r}, not b'0       ' (EDF) or b'\\xffBIOSEMI' (BDF)"
                )
            ns = _number(head[252:256], "the number of signals", int)
            if not 0 < ns <= 100_000:
                raise HeaderError(f"the header says {ns} signals")
            self.header_bytes = 256 * (ns + 1)
            said = _number(head[184:192], "the header size", int)
            if said != self.header_bytes:
                raise HeaderError(
                    f"the header size field says {said} bytes; {ns} signals need {self.header_bytes}"
                )
            rest = fh.read(256 * ns)
        if len(rest) != 256 * ns:
            raise HeaderError(
                f"the header of {ns} signals needs {self.header_bytes} bytes, the file has {size}"
            )
        reserved = head[192:236].decode("latin-1")
        self.plus = reserved.startswith(("EDF+", "BDF+"))
        self.discontinuous = self.plus and reserved[4:5] == "D"
        n_said = _number(head[236:244], "the number of data records", int)
        self.duration = _number(head[244:252], "the data record duration")
        self.ns = ns

        def column(offset: int, width: int, i: int) -> bytes:
            return rest[offset * ns + width * i : offset * ns + width * (i + 1)]

        self.labels, self.dims, self.spr = [], [], []
        self.pmin, self.pmax, self.dmin, self.dmax = [], [], [], []
        for i in range(ns):
            try:
                label = _field(column(0, 16, i), "the label")
            except HeaderError as err:
                raise HeaderError(f"signal {i + 1}: {err}") from None
            who = f"signal {i + 1} ({label!r})"
            try:
                self.labels.append(label)
                self.dims.append(_field(column(96, 8, i), "the physical dimension"))
                self.pmin.append(_number(column(104, 8, i), "the physical minimum"))
                self.pmax.append(_number(column(112, 8, i), "the physical maximum"))
                self.dmin.append(_number(column(120, 8, i), "the digital minimum", int))
                self.dmax.append(_number(column(128, 8, i), "the digital maximum", int))
                self.spr.append(_number(column(216, 8, i), "the number of samples per record", int))
            except HeaderError as err:
                raise HeaderError(f"{who}: {err}") from None
            if self.spr[-1] <= 0:
                raise HeaderError(f"{who} has {self.spr[-1]} samples per data record")
        self.starts = np.concatenate([[0], np.cumsum(self.spr)[:-1]]).astype(np.int64)
        self.record_bytes = int(sum(self.spr)) * self.width
        data_bytes = size - self.header_bytes
        held, partial = divmod(data_bytes, self.record_bytes)
        self.n_records_said = n_said
        self.lie = None
        if n_said != -1 and held < n_said:
            raise HeaderError(
                f"the file is truncated: the header says {n_said} data records but the file holds "
                f"{held}" + (f" and {partial} bytes of an incomplete one" if partial else "")
            )
        notes = []
        if n_said != -1 and held > n_said:  # EDF: -1 while recording; the file size is the truth then
            notes.append(
                f"the header says {n_said} data records but the file holds {held}; "
                f"reading all {held}, as MNE does"
            )
        if partial:
            notes.append(f"the {partial} bytes after the last complete data record are ignored")
        self.lie = "; ".join(notes) or None
        if held <= 0:
            raise HeaderError(f"the file holds no complete data record (the header says {n_said})")
        self.n_records = int(held)

    def annotation(self, i: int) -> bool:
        return self.labels[i] in ANNOTATION_LABELS

    def key(self) -> tuple:
        """Return what must not change between reading the header and reading the samples."""
        return (self.kind, self.header_bytes, self.record_bytes, self.n_records, self.labels, self.spr)


def _tal_onsets(hdr: Header, records: np.ndarray) -> np.ndarray:
    """Each record's onset in seconds from the first TAL of its annotation signal (EDF+)."""
    signal = next((i for i in range(hdr.ns) if hdr.annotation(i)), None)
    if signal is None:
        raise HeaderError(f"it is {hdr.kind}+D (discontinuous) but has no '{hdr.kind} Annotations' signal")
    lo = int(hdr.starts[signal]) * hdr.width
    hi = lo + hdr.spr[signal] * hdr.width
    onsets = np.empty(hdr.n_records, dtype=np.float64)
    for r in range(hdr.n_records):
        tal = bytes(records[r, lo:hi])
        end = tal.find(b"\x14")
        try:
            onsets[r] = float(tal[:end].decode("ascii")) if end > 0 else float("nan")
        except (UnicodeDecodeError, ValueError):
            onsets[r] = float("nan")
        if not np.isfinite(onsets[r]):
            raise HeaderError(
                f"data record {r} of this {hdr.kind}+D file has no time-keeping annotation "
                f"(it starts with {tal[:20]!r})"
            )
    return onsets


# ---------------------------------------------------------------------------- reading samples


class MappedSource:
    """Samples of some signals straight from a memory map of the data records.

    Thread-safe: each :meth:`open` maps the file afresh and shares nothing mutable.
    ``positions[r]`` is the sample index at which record ``r`` starts (``r * spr``
    for a continuous file; from the record onsets for EDF+D, with NaN in between).
    """

    def __init__(
        self, path: str, hdr: Header, signals: Sequence[int], gains: np.ndarray, offsets: np.ndarray
    ):
        self.path = path
        self.key = hdr.key()
        self.header_bytes = hdr.header_bytes
        self.record_bytes = hdr.record_bytes
        self.n_records = hdr.n_records
        self.width = hdr.width
        self.signals = list(signals)
        self.k = hdr.spr[self.signals[0]]
        self.starts = hdr.starts[self.signals]
        self.gains = gains
        self.offsets = offsets
        self.positions: np.ndarray | None = None
        self.n_samples = self.n_records * self.k
        self.gaps: tuple[tuple[int, int], ...] = ()

    def set_onsets(self, onsets: np.ndarray, rate: float) -> None:
        pos = np.rint((onsets - onsets[0]) * rate).astype(np.int64)
        back = np.flatnonzero(np.diff(pos) < self.k)
        if back.size:
            r = int(back[0]) + 1
            raise HeaderError(
                f"data record {r} starts at {onsets[r]:g} s, before record {r - 1} "
                f"(from {onsets[r - 1]:g} s, {self.k / rate:g} s long) ends"
            )
        ends = pos + self.k
        self.gaps = tuple((int(a), int(b)) for a, b in zip(ends[:-1], pos[1:], strict=True) if b > a)
        if self.gaps:
            self.positions = pos
            self.n_samples = int(ends[-1])

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        try:
            now = Header(self.path).key()
        except (OSError, HeaderError) as err:
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise ValueError(
                f"{self.path}: not a readable EDF/BDF file any more ({why}); it changed since it was opened"
            ) from None
        if now != self.key:
            raise ValueError(
                f"{self.path}: the file changed since it was opened (its header or size differs now); "
                "read it again"
            )
        records = np.memmap(
            self.path,
            dtype=np.uint8,
            mode="r",
            offset=self.header_bytes,
            shape=(self.n_records, self.record_bytes),
        )
        try:

            def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
                cols = list(columns)
                if stop <= start:
                    return np.empty((0, len(cols)))
                if self.positions is None:
                    r0, r1 = start // self.k, (stop - 1) // self.k + 1
                    whole = self._physical(records, r0, r1, cols)  # (records * k, channels)
                    return whole[start - r0 * self.k : stop - r0 * self.k]
                out = np.full((stop - start, len(cols)), np.nan)
                pos = self.positions
                r0 = max(int(np.searchsorted(pos, start, side="right")) - 1, 0)
                r1 = int(np.searchsorted(pos, stop, side="left"))
                if r1 > r0:
                    block = self._physical(records, r0, r1, cols)
                    where = (pos[r0:r1, None] + np.arange(self.k)).reshape(-1)
                    inside = (where >= start) & (where < stop)
                    out[where[inside] - start] = block[inside]
                return out

            yield read
        finally:
            records = None

    def _digital(self, records: np.ndarray, r0: int, r1: int, cols: list[int]) -> np.ndarray:
        """Digital samples of records ``r0:r1`` as ``(len(cols), r1 - r0, k)``, a view when it can be.

        EDF: the records viewed as little-endian int16; when the columns are
        neighbouring signals in file order, no copy at all (a strided view).
        BDF: three bytes per sample assembled into int32, sign-extended.
        """
        first = int(self.starts[cols[0]])
        raw = records[r0:r1]
        n = r1 - r0
        if self.width == 2:
            words = np.asarray(raw).view("<i2")
            if np.array_equal(self.starts[cols], first + self.k * np.arange(len(cols))):
                block = words[:, first : first + self.k * len(cols)]
                return block.reshape(n, len(cols), self.k).transpose(1, 0, 2)
            samples = self.starts[cols][:, None] + np.arange(self.k)[None, :]  # (channels, k)
            return words[:, samples].transpose(1, 0, 2)
        index = (self.starts[cols][:, None] + np.arange(self.k)[None, :]) * 3
        b0, b1, b2 = raw[:, index], raw[:, index + 1], raw[:, index + 2]
        value = b0.astype(np.int32) | (b1.astype(np.int32) << 8) | (b2.astype(np.int8).astype(np.int32) << 16)
        return value.transpose(1, 0, 2)

    def _physical(self, records: np.ndarray, r0: int, r1: int, cols: list[int]) -> np.ndarray:
        """Physical float64 samples of records ``r0:r1``, ``(records * k, channels)``.

        Two vectorised passes (scale, shift) into a channel-major buffer, returned
        transposed: each channel's samples are contiguous, as the per-channel
        statistics read them.
        """
        digital = self._digital(records, r0, r1, cols)
        out = np.empty((len(cols), r1 - r0, self.k), dtype=np.float64)
        np.multiply(digital, self.gains[cols][:, None, None], out=out)
        out += self.offsets[cols][:, None, None]
        return out.reshape(len(cols), -1).T


class PyedflibSource:
    """Samples through pyedflib, for headers our reader does not understand (slow, serialized)."""

    def __init__(self, path: str, signals: Sequence[int], gains: np.ndarray, offsets: np.ndarray, n: int):
        self.path = path
        self.signals = list(signals)
        self.gains = gains
        self.offsets = offsets
        self.n_samples = n

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        pyedflib = _pyedflib()

        def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
            out = np.empty((len(columns), stop - start), dtype=np.float64)
            with PYEDFLIB_LOCK:
                reader = _open(pyedflib, self.path)
                try:
                    for j, col in enumerate(columns):
                        if stop == start:
                            break
                        values = reader.readSignal(self.signals[col], start, stop - start, digital=True)
                        if values.shape != (stop - start,):
                            raise ValueError(
                                f"{self.path}: signal {self.signals[col] + 1} gave {values.shape[0]} samples "
                                f"from {start}, expected {stop - start} (truncated file?)"
                            )
                        np.multiply(values, self.gains[col], out=out[j])
                        out[j] += self.offsets[col]
                finally:
                    reader.close()
            return out.T

        yield read


def _open(pyedflib: Any, path: str) -> Any:
    """Open a pyedflib reader (hold ``PYEDFLIB_LOCK``); its error is quoted without the path."""
    try:
        return pyedflib.EdfReader(
            path,
            annotations_mode=pyedflib.DO_NOT_READ_ANNOTATIONS,
            check_file_size=pyedflib.CHECK_FILE_SIZE,
        )
    except OSError as err:
        text = " ".join(str(err).split())
        for spelled in (path, os.path.abspath(path)):
            text = text.replace(f"{spelled}: ", "").replace(spelled, "the file")
        if "already been opened" in text:
            raise ValueError(
                f"{path}: pyedflib has this file open already (it allows one reader per file "
                "in a process); close the other reader"
            ) from None
        raise ValueError(f"{path}: not a readable EDF/BDF file (pyedflib: {text})") from None


# ---------------------------------------------------------------------------- read_edf


def _names(labels: Sequence[str]) -> list[str]:
    names: list[str] = []
    for label in labels:
        name, k = label, 1
        while name in names:
            k += 1
            name = f"{label}#{k}"
        names.append(name)
    return names


def _rate_groups_error(path: str, names: list[str], rates: list[float]) -> ValueError:
    groups: dict[float, list[str]] = {}
    for name, rate in zip(names, rates, strict=True):
        groups.setdefault(rate, []).append(name)
    short = "; ".join(f"{rate:g} Hz: {', '.join(members)}" for rate, members in groups.items())
    listing = "; ".join(
        f"{rate:g} Hz: --channels {' '.join(shlex.quote(m) for m in members)} (Python: channels={members!r})"
        for rate, members in groups.items()
    )
    return ValueError(
        f"{path}: the signals have different sampling rates ({shorten(short, 120)}); read one rate "
        f"at a time (read_edf_by_rate gives one Recording per rate), passing the channels of one group: "
        f"{listing}"
    )


def read_edf(
    path: str | os.PathLike,
    channels: str | Sequence[str] | None = None,
    *,
    skip_unknown_units: bool = False,
) -> Recording:
    """Read an EDF, EDF+, BDF or BDF+ file as a :class:`Recording` (lazily).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    channels : str or sequence of str, optional
        Signal labels to keep, in this order (default: every signal; EDF+
        annotation signals are never data).
    skip_unknown_units : bool, default False
        Leave out the signals whose physical dimension :func:`parse_unit` does not
        know (``'l/min'``, ``'cmH2O'``, ``'a.u.'``), with one
        :class:`RecordingWarning` naming them, instead of refusing the file.

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
        When the file is not EDF/BDF or is corrupt (the reason comes first), a
        unit string is unknown (and ``skip_unknown_units`` is off), a channel is
        missing, the kept signals have different sampling rates (the message
        lists each rate's channels, ready to paste as ``channels=`` or
        ``--channels``), or a digital range is empty.
    ImportError
        When pyedflib is not installed (``pip install -e ".[io]"``).

    Warns
    -----
    RecordingWarning
        When the file holds more data records than its header says (both
        counts named; all complete records are read, as MNE does) or bytes of
        an incomplete record (ignored), when an EDF+D file has gaps (read as
        NaN), and when ``skip_unknown_units`` leaves signals out. A file with
        fewer records than its header says is refused as truncated, naming both
        counts.

    See Also
    --------
    read_recording : Picks this reader (or another) from the file's content.

    Notes
    -----
    Samples are read from a memory map of the data records by unitnorm's own
    header reader, so a Recording is readable while pyedflib or MNE has the same
    file open, and from several threads at once. pyedflib reads only files whose
    header our reader does not understand, one call at a time (a lock).

    An EDF+D (discontinuous) file places each data record at its onset (the
    first time-keeping annotation of the record); the samples in between are
    NaN, listed as ``(start, stop)`` sample ranges in :attr:`Recording.gaps`, so
    statistics with ``nan_policy='omit'`` are those of the recorded samples.

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
    return _read(path, channels, skip_unknown_units, by_rate=False)[0]


def read_edf_by_rate(
    path: str | os.PathLike,
    channels: str | Sequence[str] | None = None,
    *,
    skip_unknown_units: bool = False,
) -> list[Recording]:
    """Read an EDF/BDF file whose signals have several sampling rates: one Recording per rate.

    Parameters
    ----------
    path, channels, skip_unknown_units
        As for :func:`read_edf`.

    Returns
    -------
    list of Recording
        One per sampling rate, in the order the rates first appear among the
        kept signals; each holds that rate's channels in file order (or in the
        order of ``channels``). A file of one rate gives a list of one.

    Raises
    ------
    FileNotFoundError, ValueError, ImportError
        As for :func:`read_edf`, except that mixed rates are not an error.

    See Also
    --------
    read_edf : Refuses mixed rates, listing the groups ready to paste.

    Examples
    --------
    >>> from unitnorm.io import read_edf_by_rate
    >>> import pyedflib, pathlib
    >>> bdf = pathlib.Path(pyedflib.__file__).parent / "tests" / "data" / "test_generator.bdf"
    >>> [(float(r.sampling_rate.mantissa), r.channel_names[0]) for r in read_edf_by_rate(bdf)][:2]
    [(1000.0, 'sine 5Hz'), (800.0, 'square 13Hz')]
    """
    return _read(path, channels, skip_unknown_units, by_rate=True)


def _by_rate(rates: list[float]) -> list[list[int]]:
    groups: dict[float, list[int]] = {}
    for j, rate in enumerate(rates):
        groups.setdefault(rate, []).append(j)
    return list(groups.values())


def _read(path: Any, channels: Any, skip_unknown_units: bool, by_rate: bool) -> list[Recording]:
    pyedflib = _pyedflib()
    path = check_file(path, "read_edf")
    try:
        hdr = Header(path)
    except HeaderError as err:
        return _read_with_pyedflib(pyedflib, path, channels, skip_unknown_units, str(err), by_rate)
    visible = [i for i in range(hdr.ns) if not (hdr.plus and hdr.annotation(i))]
    labels = [hdr.labels[i] for i in visible]
    names = _names(labels)
    keep = _keep(path, visible, labels, names, channels)
    kind = f"{hdr.kind}+D" if hdr.discontinuous else hdr.kind
    units, kept, gains, offsets, rates, unknown = [], [], [], [], [], []
    for i, name in zip(keep, (names[visible.index(i)] for i in keep), strict=True):
        try:
            unit = parse_unit(hdr.dims[i])
        except ValueError as err:
            unknown.append((name, hdr.dims[i], err))
            continue
        pmin, pmax, dmin, dmax = hdr.pmin[i], hdr.pmax[i], hdr.dmin[i], hdr.dmax[i]
        if not dmax > dmin or not (np.isfinite(pmin) and np.isfinite(pmax)):
            raise ValueError(
                f"{path}: channel {name!r} has an unusable range: digital {dmin:g}..{dmax:g}, "
                f"physical {pmin:g}..{pmax:g}"
            )
        if not hdr.duration > 0:
            raise ValueError(
                f"{path}: the data record duration is {hdr.duration:g} s; a sampling rate needs > 0"
            )
        gain = (pmax - pmin) / (dmax - dmin)
        units.append(unit)
        kept.append((i, name))
        gains.append(gain)
        offsets.append(pmin - gain * dmin)
        rates.append(hdr.spr[i] / hdr.duration)
    _unknown(path, unknown, kept, skip_unknown_units)
    if len(set(rates)) > 1 and not by_rate:
        raise _rate_groups_error(path, [name for _, name in kept], rates)
    out, notes = [], [hdr.lie] if hdr.lie else []
    for group in _by_rate(rates):
        rate = rates[group[0]]
        source = MappedSource(
            path, hdr, [kept[j][0] for j in group], np.array(gains)[group], np.array(offsets)[group]
        )
        if hdr.discontinuous:
            _place_records(path, hdr, kind, source, rate, notes)
        rec = Recording._from_source(
            source, [kept[j][1] for j in group], [units[j] for j in group], rate, description=path
        )
        out.append(rec)
    notes = list(dict.fromkeys(notes))
    for rec in out:
        rec._notes = tuple(notes)
    for note in notes:
        warnings.warn(f"{path}: {note}", RecordingWarning, stacklevel=3)
    return out


def _place_records(path: str, hdr: Header, kind: str, source: MappedSource, rate: float, notes: list) -> None:
    """Place an EDF+D file's records at their onsets (gaps NaN); note the gaps."""
    records = np.memmap(
        path, dtype=np.uint8, mode="r", offset=hdr.header_bytes, shape=(hdr.n_records, hdr.record_bytes)
    )
    try:
        source.set_onsets(_tal_onsets(hdr, records), rate)
    except HeaderError as err:
        raise ValueError(f"{path}: {kind} (discontinuous) file: {err}") from None
    finally:
        del records
    if source.gaps:
        missing = sum(b - a for a, b in source.gaps)
        notes.append(
            f"{kind} (discontinuous): {len(source.gaps)} gap{'s' if len(source.gaps) != 1 else ''} "
            f"({missing / rate:g} s in all) between its {hdr.n_records} data records read as NaN; "
            "use nan_policy='omit' for statistics of the recorded samples"
        )


def _keep(path: str, visible: list[int], labels: list[str], names: list[str], channels: Any) -> list[int]:
    if channels is None:
        keep = [i for i, label in zip(visible, labels, strict=True) if label not in ANNOTATION_LABELS]
    else:
        wanted = [channels] if isinstance(channels, str) else list(channels)
        if not wanted:
            raise ValueError(f"{path}: no channels given")
        keep = []
        for name in wanted:
            if name not in names:
                raise ValueError(f"{path}: {no_such_channel(name, names)}")
            keep.append(visible[names.index(name)])
    if not keep:
        raise ValueError(f"{path}: the file has no data signals")
    return keep


def _unknown(path: str, unknown: list, kept: list, skip: bool) -> None:
    if not unknown:
        return
    if not skip:
        raise unknown_units_error(path, unknown)
    listing = ", ".join(f"{name!r} ({dim!r})" for name, dim, _ in unknown)
    if not kept:
        raise ValueError(f"{path}: every channel has a unit unitnorm does not know: {shorten(listing, 300)}")
    warnings.warn(
        f"{path}: left out {len(unknown)} channel{'s' if len(unknown) != 1 else ''} with units unitnorm "
        f"does not know: {shorten(listing, 300)}",
        RecordingWarning,
        stacklevel=4,
    )


def _read_with_pyedflib(
    pyedflib: Any, path: str, channels: Any, skip_unknown_units: bool, why: str, by_rate: bool
) -> list[Recording]:
    """Read through pyedflib when our header reader refuses the file (its reads serialized)."""
    with PYEDFLIB_LOCK:
        try:
            reader = _open(pyedflib, path)
        except ValueError as err:
            if "has this file open already" in str(err):
                raise
            raise ValueError(f"{path}: not a readable EDF/BDF file: {why}") from None
        try:
            n_signals = reader.signals_in_file
            labels = [reader.getLabel(i).strip() for i in range(n_signals)]
            names = _names(labels)
            keep = _keep(path, list(range(n_signals)), labels, names, channels)
            units, kept, gains, offsets, rates, counts, unknown = [], [], [], [], [], [], []
            for i in keep:
                try:
                    unit = parse_unit(reader.getPhysicalDimension(i))
                except ValueError as err:
                    unknown.append((names[i], reader.getPhysicalDimension(i), err))
                    continue
                pmin, pmax = float(reader.getPhysicalMinimum(i)), float(reader.getPhysicalMaximum(i))
                dmin, dmax = float(reader.getDigitalMinimum(i)), float(reader.getDigitalMaximum(i))
                if not dmax > dmin or not (np.isfinite(pmin) and np.isfinite(pmax)):
                    raise ValueError(
                        f"{path}: channel {names[i]!r} has an unusable range: digital {dmin:g}..{dmax:g}, "
                        f"physical {pmin:g}..{pmax:g}"
                    )
                gain = (pmax - pmin) / (dmax - dmin)
                units.append(unit)
                kept.append((i, names[i]))
                gains.append(gain)
                offsets.append(pmin - gain * dmin)
                rates.append(float(reader.getSampleFrequency(i)))
                counts.append(int(reader.samples_in_file(i)))
        finally:
            reader.close()
    _unknown(path, unknown, kept, skip_unknown_units)
    if len(set(rates)) > 1 and not by_rate:
        raise _rate_groups_error(path, [name for _, name in kept], rates)
    out = []
    for group in _by_rate(rates):
        if not rates[group[0]] > 0:
            raise ValueError(f"{path}: sampling rate {rates[group[0]]:g} Hz is not positive")
        source = PyedflibSource(
            path,
            [kept[j][0] for j in group],
            np.array(gains)[group],
            np.array(offsets)[group],
            counts[group[0]],
        )
        names = [kept[j][1] for j in group]
        out.append(
            Recording._from_source(
                source, names, [units[j] for j in group], rates[group[0]], description=path
            )
        )
    return out
