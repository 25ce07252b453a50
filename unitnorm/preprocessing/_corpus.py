"""Statistics and normalization over a corpus of recordings: per-file tasks, merged in path order.

A corpus is a list of recordings (paths, glob patterns, folders searched by content, or a
BIDS root). Every pass over the data is one task per file returning that file's
sufficient statistics (count, mean and M2 per channel; or a first-pass summary,
histograms and value tables for exact order statistics); the client merges them in
sorted path order, so the result does not depend on who ran which task or when.
The tasks run in this process (``scheduler=None``), on a local Dask cluster
(``'processes'``) or on any Dask cluster (a ``Client`` or a scheduler address).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brainunit as u
import numpy as np

from unitnorm import _moments, _units
from unitnorm.io._recording import Recording
from unitnorm.io._units_parse import parse_unit
from unitnorm.preprocessing import _exact
from unitnorm.preprocessing._input import Layout, layout_for, read_input
from unitnorm.preprocessing._scalers import SCALERS, StandardScaler, _QuantileBase, _scaled_recording, _Scaler
from unitnorm.preprocessing._stream import _method_of, scaler_for

__all__ = ["CorpusReport", "find_recordings", "fit_corpus", "normalize_corpus"]

#: Seconds between two progress lines when stderr is not a terminal.
PROGRESS_SECONDS = 10.0
#: Dask configuration for the cluster ``scheduler='processes'`` starts. Dask gives its workers
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at 128 KiB: every
#: chunk-sized array is then mapped and faulted in anew, and these tasks ran 2x slower
#: (measured, ``benchmarks/bench_corpus.py --dask-malloc``). Their memory is bounded by the
#: chunk, so glibc's adaptive defaults are kept.
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
_CONTENT_KINDS = ("edf", "bdf", "nwb", "fif")
_GLOB_CHARS = frozenset("*?[")


@dataclass
class CorpusReport:
    """What a corpus run did.

    Attributes
    ----------
    scaler : StandardScaler, RobustScaler or QuantileScaler
        The fitted scaler (its ``channel_names_`` are the corpus channels).
    files : tuple of str
        The recordings used, in path order.
    skipped : tuple of (str, str)
        Each recording left out with ``on_error='skip'`` and why.
    channel_names : tuple of str
        The corpus channels, in the order of the statistics.
    written, reused : tuple of str
        Stores written, and stores left as they were because they were complete and
        made from the same statistics (:func:`normalize_corpus` only).
    """

    scaler: Any
    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    channel_names: tuple[str, ...]
    written: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- finding files


@dataclass(frozen=True)
class _File:
    path: str
    channels_tsv: str | None = None  # a BIDS sidecar


def _sniffed(path: str) -> bool:
    from unitnorm.io._sniff import sniff

    try:
        return sniff(path) in _CONTENT_KINDS
    except OSError:
        return False


def _walk(root: str, bids: bool) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and not d.endswith(".zarr")
            and not (bids and folder == root and d in ("derivatives", "sourcedata"))
        )
        for name in sorted(files):
            if not name.startswith(".") and _sniffed(os.path.join(folder, name)):
                yield os.path.join(folder, name)


def _sidecar(path: str) -> str | None:
    folder, name = os.path.split(path)
    stem = name.split(".")[0]
    if "_" not in stem:
        return None
    candidate = os.path.join(folder, stem.rsplit("_", 1)[0] + "_channels.tsv")
    return candidate if os.path.isfile(candidate) else None


def find_recordings(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Return the recordings a corpus is made of, sorted by path.

    Parameters
    ----------
    paths : str, os.PathLike or sequence of them
        Files (any format :func:`unitnorm.io.read_recording` reads), glob patterns
        (``'data/**/*.edf'``, recursive), or folders: a folder is searched for files
        recognized by their content (EDF, BDF, NWB/HDF5, FIF), whatever their names;
        hidden files, ``.zarr`` stores and, in a BIDS root (a folder holding
        ``dataset_description.json``), ``derivatives/`` and ``sourcedata/`` are left
        out.

    Returns
    -------
    list of str
        Absolute paths, each once, sorted.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist (and is not a glob pattern).
    ValueError
        When a pattern matches nothing or nothing is found.
    TypeError
        For something that is not a path.

    Examples
    --------
    >>> import os, tempfile
    >>> from unitnorm.preprocessing import find_recordings
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for name in ("b.edf", "a.dat", "notes.txt"):
    ...         with open(os.path.join(folder, name), "wb") as fh:
    ...             _ = fh.write(b"0       " if name != "notes.txt" else b"hello")
    ...     print([os.path.basename(p) for p in find_recordings(folder)])
    ['a.dat', 'b.edf']
    """
    return [f.path for f in _find(paths)]


def _find(paths: Any) -> list[_File]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        items = list(paths)
    except TypeError:
        raise TypeError(
            f"expected paths (str or os.PathLike, or a list of them), got {type(paths).__name__}"
        ) from None
    found: dict[str, _File] = {}

    def add(path: str, bids: bool) -> None:
        real = os.path.abspath(path)
        found.setdefault(real, _File(real, _sidecar(real) if bids else None))

    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"expected paths (str or os.PathLike), got {type(item).__name__}: {item!r:.60}")
        text = os.fspath(item)
        if os.path.isdir(text):
            bids = os.path.isfile(os.path.join(text, "dataset_description.json"))
            for path in _walk(text, bids):
                add(path, bids)
        elif os.path.exists(text):
            add(text, _in_bids(text))
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ValueError(f"{text}: no file matches this pattern")
            for m in matches:
                if os.path.isdir(m):
                    for path in _walk(m, False):
                        add(path, _in_bids(path))
                else:
                    add(m, _in_bids(m))
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
    if not found:
        raise ValueError(f"no recording found in {', '.join(os.fspath(i) for i in items) or 'an empty list'}")
    return [found[k] for k in sorted(found)]


def _in_bids(path: str) -> bool:
    """Whether a file lies in a BIDS dataset (a parent folder holds dataset_description.json)."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(6):
        if os.path.isfile(os.path.join(folder, "dataset_description.json")):
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return False


def _read_channels_tsv(path: str) -> tuple[dict[str, u.Unit], set[str]]:
    """BIDS ``*_channels.tsv``: each channel's unit (``units``) and the channels marked ``status=bad``."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    units: dict[str, u.Unit] = {}
    bad: set[str] = set()
    for row in rows:
        name = (row.get("name") or "").strip()
        if not name:
            raise ValueError(f"{path}: a row has no 'name'")
        text = (row.get("units") or "").strip()
        if text and text.lower() != "n/a":
            units[name] = parse_unit(text)
        if (row.get("status") or "").strip().lower() == "bad":
            bad.add(name)
    return units, bad


# ---------------------------------------------------------------------------- tasks (run anywhere)


@dataclass(frozen=True)
class _Header:
    path: str
    names: tuple[str, ...]
    units: tuple[u.Unit, ...]
    rate: float
    n_samples: int
    nbytes: int


@dataclass(frozen=True)
class _Failed:
    path: str
    reason: str


@dataclass(frozen=True)
class _Plan:
    """What a task needs to read one file's share of the corpus."""

    file: _File
    names: tuple[str, ...]  # the file's channels used, in corpus order
    factors: np.ndarray  # per used channel: the file's unit -> the corpus unit
    slot_cols: tuple[tuple[int, ...], ...]  # per statistics slot: the columns (of ``names``) it holds
    scaler: tuple[str, dict[str, Any]]  # class name and parameters
    chunk_samples: int | None
    nbytes: int


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, (OSError, ValueError, TypeError, ArithmeticError, ImportError)):
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 400 else f"{text[:260]} ... {text[-135:]}"


def _open(file: _File) -> Recording:
    from unitnorm.io._sniff import read_recording

    rec = read_recording(file.path)
    if file.channels_tsv is None:
        return rec
    units, bad = _read_channels_tsv(file.channels_tsv)
    if units:
        new = tuple(units.get(n, unit) for n, unit in zip(rec.channel_names, rec.channel_units, strict=True))
        relabeled = Recording.__new__(Recording)
        relabeled._init(rec._source, rec._names, new, rec._rate, rec._columns, rec._factors, rec._description)
        relabeled._notes = rec._notes
        rec = relabeled
    keep = [n for n in rec.channel_names if n not in bad]
    if not keep:
        raise ValueError(f"{file.path}: every channel is marked bad in {file.channels_tsv}")
    return rec if len(keep) == rec.n_channels else rec.pick(keep)


def _header_task(file: _File) -> _Header | _Failed:
    try:
        rec = _open(file)
        size = _size(file.path)
        return _Header(file.path, rec.channel_names, rec.channel_units, float(rec._rate), rec.n_samples, size)
    except Exception as err:  # a file from a stranger: reported, not raised, on the worker
        return _Failed(file.path, _reason(err))


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _chunks(plan: _Plan, scaler: _Scaler, center: np.ndarray | None) -> Iterator[list[np.ndarray]]:
    """Yield the file's values per statistics slot, chunk by chunk (deviations ``|x - center|`` if given)."""
    who = f"corpus file {plan.file.path}"
    rec = _open(plan.file).pick(list(plan.names))
    k = len(plan.names)
    file_layout = Layout((np.arange(k),), (u.UNITLESS,), False, k, plan.names)
    empty = np.empty(0)
    for block in read_input(rec, who).blocks(who, plan.chunk_samples):
        block = scaler._prepare(block, plan.factors, file_layout, who)
        parts = []
        for s, cols in enumerate(plan.slot_cols):
            if not cols:
                parts.append(empty)
                continue
            v = block[:, cols[0]] if len(cols) == 1 else block[:, list(cols)].reshape(-1)
            parts.append(v if center is None else np.abs(v - center[s]))
        yield parts


def _scan_task(plan: _Plan, job: tuple[str, Any]) -> Any:
    """One pass over one file: ``('moments', None)``, ``('ranges', center)`` or ``('windows', ...)``."""
    kind, payload = job
    try:
        name, params = plan.scaler
        scaler = SCALERS[name](**params)
        n_slots = len(plan.slot_cols)
        if kind == "moments":
            acc = scaler._new_acc(n_slots)
            for parts in _chunks(plan, scaler, None):
                scaler._update(acc, parts)
            return acc
        if kind == "ranges":
            ranges = _exact.Ranges(n_slots)
            for parts in _chunks(plan, scaler, payload):
                ranges.add(parts)
            return ranges
        small, large, center = payload
        return _exact.window_pass(_chunks(plan, scaler, center), small, large)
    except Exception as err:
        return _Failed(plan.file.path, _reason(err))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    paths = (
        [path]
        if not os.path.isdir(path)
        else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    )
    for p in paths:
        if p != path:
            digest.update(os.path.relpath(p, path).encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _write_task(
    plan: _Plan, out: str, a: np.ndarray, b: np.ndarray, attrs: dict[str, Any], digest: str
) -> tuple[str, str] | _Failed:
    """Normalize one file into ``out`` (atomically), or leave a complete store of the same statistics."""
    try:
        from unitnorm.io._zarr import write_zarr

        sha = _sha256(plan.file.path)
        if _complete(out, digest, sha):
            return ("reused", out)
        rec = _open(plan.file).pick(list(plan.names))
        scaled = _scaled_recording(rec, a, b, None, None, None, None)
        attrs = {
            **attrs,
            "sampling_rate_hz": float(rec._rate),
            "source": {"path": plan.file.path, "sha256": sha},
        }
        write_zarr(out, scaled, attrs, chunk_samples=plan.chunk_samples, overwrite=True)
        return ("written", out)
    except Exception as err:
        return _Failed(plan.file.path, _reason(err))


def _complete(out: str, digest: str, sha: str) -> bool:
    if not os.path.isdir(out):
        return False
    try:
        import zarr

        attrs = zarr.open_group(out, mode="r").attrs
        return attrs.get("stats_digest") == digest and (attrs.get("source") or {}).get("sha256") == sha
    except Exception:  # an unreadable store is rewritten
        return False


# ---------------------------------------------------------------------------- running tasks


class _Progress:
    """Files and bytes done: a tqdm bar on a terminal, else one line every ``PROGRESS_SECONDS``."""

    def __init__(self, desc: str, files: int, nbytes: int, progress: bool | None):
        self.desc, self.files, self.nbytes = desc, files, nbytes
        self.done_files = self.done_bytes = 0
        self.bar = None
        self.lines = False
        tty = sys.stderr.isatty()
        if progress is False:
            return
        if tty:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(
                    total=nbytes, desc=desc, unit="B", unit_scale=True, leave=False, file=sys.stderr
                )
                return
            except ImportError:
                pass
        self.lines = True
        self.last = time.monotonic()

    def update(self, nbytes: int) -> None:
        self.done_files += 1
        self.done_bytes += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix_str(f"{self.done_files}/{self.files} files")
        elif self.lines and time.monotonic() - self.last >= PROGRESS_SECONDS:
            self.last = time.monotonic()
            print(
                f"unitnorm: {self.desc}: {self.done_files}/{self.files} files, "
                f"{self.done_bytes / 1e6:.0f}/{self.nbytes / 1e6:.0f} MB",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Runner:
    """Maps a task over files, in this process or on Dask; results always come back in input order."""

    def __init__(self, scheduler: Any, n_workers: int | None, progress: bool | None):
        self.client = self._cluster = None
        self.progress = progress
        if n_workers is not None and (
            isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1
        ):
            raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
        if scheduler is None:
            if n_workers is not None:
                raise ValueError(
                    "n_workers applies to scheduler='processes'; the serial run uses this process"
                )
            return
        try:
            import distributed
        except ImportError:
            raise ImportError(f'scheduler={scheduler!r} needs Dask: pip install -e ".[scale]"') from None
        if scheduler == "processes":
            import dask

            with dask.config.set(WORKER_ENVIRON):
                self._cluster = distributed.LocalCluster(
                    n_workers=n_workers or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            self.client = distributed.Client(self._cluster)
        elif isinstance(scheduler, str):
            if n_workers is not None:
                raise ValueError("n_workers applies to scheduler='processes', not to a running cluster")
            self.client = distributed.Client(scheduler)
        elif isinstance(scheduler, distributed.Client):
            if n_workers is not None:
                raise ValueError("n_workers applies to scheduler='processes', not to a running cluster")
            self.client = scheduler
        else:
            raise TypeError(
                "scheduler must be None, 'processes', a Dask scheduler address or a dask.distributed.Client, "
                f"got {type(scheduler).__name__}"
            )
        self._own = scheduler == "processes" or isinstance(scheduler, str)

    def close(self) -> None:
        if self.client is not None and self._own:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def map(
        self, desc: str, fn: Callable[..., Any], items: Sequence[Any], sizes: Sequence[int], *extra: Any
    ) -> list:
        progress = _Progress(desc, len(items), int(sum(sizes)), self.progress)
        try:
            if self.client is None:
                out = []
                for item, size in zip(items, sizes, strict=True):
                    out.append(fn(item, *extra))
                    progress.update(size)
                return out
            from distributed import as_completed

            extras = [[e] * len(items) for e in extra]
            futures = self.client.map(fn, list(items), *extras, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for done in as_completed(futures):
                progress.update(sizes[index[done.key]])
            return self.client.gather(futures)  # in input order, whatever the completion order
        finally:
            progress.close()


# ---------------------------------------------------------------------------- the corpus


@dataclass
class _Corpus:
    names: tuple[str, ...]
    units: tuple[u.Unit, ...]
    headers: list[_Header]
    files: list[_File]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _check_policy(channels: Any, on_error: Any) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(channels, str):
        if channels not in ("intersection", "union"):
            raise ValueError(
                f"channels must be 'intersection', 'union' or a list of channel names, got {channels!r}"
            )
    elif not isinstance(channels, Sequence) or not channels or not all(isinstance(c, str) for c in channels):
        raise ValueError(
            f"channels must be 'intersection', 'union' or a list of channel names, got {channels!r}"
        )


def _fail(path: str, reason: str) -> ValueError:
    return ValueError(reason if reason.startswith(path) else f"{path}: {reason}")


def _survey(runner: _Runner, files: list[_File], channels: Any, on_error: str) -> _Corpus:
    """Read every header; choose the corpus channels and each channel's unit (from its first file)."""
    results = runner.map("headers", _header_task, files, [0] * len(files))
    skipped: list[tuple[str, str]] = []
    headers: list[_Header] = []
    kept: list[_File] = []
    wanted = None if isinstance(channels, str) else list(channels)
    for f, r in zip(files, results, strict=True):
        if isinstance(r, _Header) and wanted is not None:
            missing = [c for c in wanted if c not in r.names]
            if missing:
                r = _Failed(
                    f.path,
                    f"lacks the channel{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}",
                )
        if isinstance(r, _Failed):
            if on_error == "raise":
                raise _fail(r.path, r.reason)
            skipped.append((r.path, r.reason))
            continue
        headers.append(r)
        kept.append(f)
    if not headers:
        raise ValueError(f"no usable recording: every file was skipped ({skipped[0][0]}: {skipped[0][1]})")
    first_of: dict[str, tuple[u.Unit, str]] = {}
    order: list[str] = []
    for h in headers:
        for name, unit in zip(h.names, h.units, strict=True):
            if name not in first_of:
                first_of[name] = (unit, h.path)
                order.append(name)
            elif not _units.same_dim(unit, first_of[name][0]):
                unit0, path0 = first_of[name]
                raise _units.UnitError(
                    f"channel {name!r} is {_units.describe(unit0)} in {path0} but {_units.describe(unit)} "
                    f"in {h.path}; a channel must have one dimension across the corpus"
                )
    if wanted is not None:
        names = wanted
    elif channels == "union":
        names = order
    else:
        common = set.intersection(*(set(h.names) for h in headers))
        names = [n for n in headers[0].names if n in common]
        if not names:
            raise ValueError(
                f"the {len(headers)} recordings share no channel name (channels='intersection'); "
                "use channels='union' or pick channels"
            )
    return _Corpus(tuple(names), tuple(first_of[n][0] for n in names), headers, kept, skipped)


def _plan(corpus: _Corpus, i: int, layout: Layout, scaler: _Scaler, chunk_samples: int | None) -> _Plan:
    from unitnorm.io._recording import factor

    h = corpus.headers[i]
    here = dict(zip(h.names, h.units, strict=True))
    used = [n for n in corpus.names if n in here]
    col = {n: j for j, n in enumerate(used)}
    # the layout's channels are the corpus channels (a fit) or a superset (a fitted scaler applied)
    target = {n: layout.units[g] for n, g in zip(layout.names, layout.group_of, strict=True)}
    factors = np.array([factor(here[n], target[n]) for n in used], dtype=np.float64)
    if layout.pooled:
        slot_cols = tuple(
            tuple(col[layout.names[c]] for c in idx if layout.names[c] in col) for idx in layout.groups
        )
    else:
        slot_cols = tuple((col[n],) if n in col else () for n in layout.names)
    return _Plan(
        corpus.files[i],
        tuple(used),
        factors,
        slot_cols,
        (type(scaler).__name__, scaler.get_params()),
        chunk_samples,
        h.nbytes,
    )


def _as_scaler(scaler: Any) -> _Scaler:
    if isinstance(scaler, str):
        return scaler_for(scaler)
    if isinstance(scaler, tuple(SCALERS.values())):
        return scaler
    raise TypeError(
        "scaler must be a method name ('zscore', 'robust', 'mad', 'quantile') or a StandardScaler, "
        f"RobustScaler or QuantileScaler, got {type(scaler).__name__}"
    )


def _gather(
    runner: _Runner, desc: str, plans: list[_Plan], job: tuple[str, Any], skippable: bool
) -> list[Any]:
    """Run one pass; a failure raises, unless ``skippable`` (the first full read with on_error='skip')."""
    results = runner.map(desc, _scan_task, plans, [p.nbytes for p in plans], job)
    for r in results:
        if isinstance(r, _Failed) and not skippable:
            raise _fail(r.path, r.reason)
    return results


def _fit(runner: _Runner, corpus: _Corpus, scaler: _Scaler, on_error: str, chunk_samples: int | None) -> None:
    who = type(scaler).__name__
    layout = layout_for(scaler.per, corpus.units, corpus.names, who)
    plans = [_plan(corpus, i, layout, scaler, chunk_samples) for i in range(len(corpus.files))]
    first = ("moments", None) if isinstance(scaler, StandardScaler) else ("ranges", None)
    results = _gather(runner, "statistics", plans, first, on_error == "skip")
    # files that fail on their first full read are skipped (on_error='skip') before anything is merged
    keep = [i for i, r in enumerate(results) if not isinstance(r, _Failed)]
    for r in results:
        if isinstance(r, _Failed):
            corpus.skipped.append((r.path, r.reason))
    if not keep:
        raise ValueError(
            f"no usable recording: every file was skipped ({corpus.skipped[0][0]}: {corpus.skipped[0][1]})"
        )
    if len(keep) < len(plans):
        corpus.files = [corpus.files[i] for i in keep]
        corpus.headers = [corpus.headers[i] for i in keep]
        plans = [plans[i] for i in keep]
        results = [results[i] for i in keep]
    if isinstance(scaler, StandardScaler):
        acc = scaler._new_acc(layout.n_slots)
        for part in results:  # in path order
            acc["count"], acc["mean"], acc["m2"] = _moments.merge(
                acc["count"], acc["mean"], acc["m2"], part["count"], part["mean"], part["m2"]
            )
    else:
        acc = _select(runner, plans, results, scaler)
    stats = scaler._finalize(acc, layout)
    scaler._check_flat_on_fit(stats, layout)
    scaler._commit(layout, acc, stats)


def _merged_ranges(results: list[_exact.Ranges]) -> _exact.Ranges:
    total = results[0]
    for r in results[1:]:
        total = total.merge(r)
    return total


def _select(runner: _Runner, plans: list[_Plan], results: list[Any], scaler: _QuantileBase) -> Any:
    from unitnorm.preprocessing._scalers import _Selected

    levels = scaler._levels()

    def order_stats(ranges: _exact.Ranges, levels: list[float], center: np.ndarray | None) -> np.ndarray:
        def ranks(n: int) -> list[int]:
            lo, hi, _ = _exact.needed_ranks(n, levels)
            return [*lo.tolist(), *hi.tolist()]

        def run_pass(small: list[Any], large: list[Any]) -> Any:
            parts = _gather(runner, "selection", plans, ("windows", (small, large, center)), False)
            total = parts[0]
            for p in parts[1:]:
                total = _exact.merge_window_results(total, p)
            return total

        picked, count, nan = _exact.select_passes(ranges, run_pass, ranks, omit=True)
        return scaler._pick(picked, count, nan, levels)

    q = order_stats(_merged_ranges(results), levels, None)
    mad = None
    if scaler._mad:
        med = q[:, levels.index(0.5)]
        ranges = _merged_ranges(_gather(runner, "deviations", plans, ("ranges", med), False))
        mad = order_stats(ranges, [0.5], med)[:, 0]
    return _Selected(q, mad)


# ---------------------------------------------------------------------------- public functions


def fit_corpus(
    paths: Any,
    scaler: Any = "zscore",
    *,
    channels: str | Sequence[str] = "intersection",
    on_error: str = "raise",
    scheduler: Any = None,
    n_workers: int | None = None,
    chunk_samples: int | None = None,
    progress: bool | None = False,
) -> CorpusReport:
    """Fit a scaler over every recording of a corpus, exactly, one task per file.

    Parameters
    ----------
    paths : str, os.PathLike or sequence of them
        Files, glob patterns, folders (searched by content) or a BIDS root; see
        :func:`find_recordings`. In a BIDS dataset each recording's
        ``*_channels.tsv`` is read: its ``units`` give the channels' units and
        channels with ``status`` ``bad`` are left out.
    scaler : str or scaler, default 'zscore'
        A method name (``'zscore'``, ``'robust'``, ``'mad'``, ``'quantile'``, as
        :func:`scaler_for`) or a :class:`StandardScaler`, :class:`RobustScaler` or
        :class:`QuantileScaler`, which is fitted in place (its ``per``, ``flat`` and
        ``nan_policy`` apply; ``per`` pools refer to the corpus channel order).
    channels : {'intersection', 'union'} or sequence of str, default 'intersection'
        Channels are matched by name. ``'intersection'``: the channels every
        recording has, in the first recording's order; ``'union'``: every channel,
        each one's statistics from the recordings that have it (first-seen order);
        a list: these channels, which every recording must have.
    on_error : {'raise', 'skip'}, default 'raise'
        A recording that cannot be read (or lacks a listed channel): ``'raise'``
        stops with a ``ValueError`` naming it; ``'skip'`` leaves it out of the
        statistics and lists it in the report's ``skipped``.
    scheduler : None, 'processes', str or dask.distributed.Client, default None
        Where the per-file tasks run: ``None`` in this process, one file after
        the other; ``'processes'`` on a local Dask cluster started for the call
        (loopback only, no dashboard, ``n_workers`` processes of one thread); a
        scheduler address (``'tcp://host:8786'``) or a ``Client`` for a cluster you
        run. The results are bit-identical whatever runs them.
    n_workers : int, optional
        Worker processes for ``'processes'`` (default: the number of CPUs).
    chunk_samples : int, optional
        Samples per read (default about 2**20 values): bounds each task's memory.
    progress : bool, optional
        ``False`` (default) nothing; ``None``/``True`` a bar on a terminal, else one
        line every 10 s on stderr, over files and bytes.

    Returns
    -------
    CorpusReport
        ``scaler`` (fitted), ``files``, ``skipped``, ``channel_names``.

    Raises
    ------
    ValueError
        A bad configuration, a recording that fails with ``on_error='raise'``, no
        channel shared (``'intersection'``), or no usable recording.
    brainunit.UnitMismatchError
        A channel whose dimension differs between two recordings (both named).
    TypeError
        A scaler or a scheduler of the wrong kind.
    ImportError
        A Dask scheduler without Dask (``pip install -e ".[scale]"``).

    See Also
    --------
    normalize_corpus, find_recordings, StandardScaler, RobustScaler

    Notes
    -----
    Each channel's statistics are in the unit of the first recording (in path order)
    that has it; a recording in V and one in µV contribute the same numbers (each
    value is converted before it is counted). As for every scaler, the channels of
    one dimension share one unit: that of the first of them in the corpus order
    (which is the first recording's unit for each of them unless that recording
    mixes, say, µV and mV channels). ``StandardScaler``: every task returns
    the file's count, mean and M2 per channel in float64, and the client combines
    them with Chan's formula in sorted path order. Quantile scalers: exact order
    statistics (linear interpolation, NumPy's default), found as for one recording
    (see ``RobustScaler``) but with each pass split into per-file tasks: a first
    pass of counts and ranges, then histograms of the windows that hold the wanted
    ranks and finally the values in those windows; histograms and value tables add
    exactly, so the result is the same in any order. Units: ``mean``, ``center``,
    ``scale`` in the channel's unit, ``var`` in its square.

    Examples
    --------
    >>> import os, tempfile, brainunit as u, numpy as np
    >>> from unitnorm.io import Recording, write_npz
    >>> from unitnorm.preprocessing import fit_corpus
    >>> import pyedflib
    >>> folder = tempfile.mkdtemp()
    >>> for i, (unit, scale) in enumerate([("uV", 1.0), ("mV", 1e-3)]):  # one file in uV, one in mV
    ...     header = pyedflib.highlevel.make_signal_header(
    ...         "Cz", dimension=unit, sample_frequency=100,
    ...         physical_min=-32768 * scale, physical_max=32767 * scale)
    ...     digital = np.arange(100, dtype=np.int32) + 100 * i  # 0..99 uV, then 0.100..0.199 mV
    ...     path = os.path.join(folder, f"r{i}.edf")
    ...     _ = pyedflib.highlevel.write_edf(path, [digital], [header], digital=True)
    >>> report = fit_corpus(folder)
    >>> print(report.channel_names, report.scaler.mean_.mantissa.round(6), report.scaler.mean_.unit)
    ('Cz',) [99.5] uV
    >>> print(report.scaler.n_samples_seen_, report.skipped)
    200 ()
    >>> import shutil; shutil.rmtree(folder)
    """
    scaler = _as_scaler(scaler)
    _check_policy(channels, on_error)
    files = _find(paths)
    runner = _Runner(scheduler, n_workers, progress)
    try:
        corpus = _survey(runner, files, channels, on_error)
        _fit(runner, corpus, scaler, on_error, chunk_samples)
    finally:
        runner.close()
    return CorpusReport(scaler, tuple(f.path for f in corpus.files), tuple(corpus.skipped), corpus.names)


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _stats_attrs(scaler: _Scaler, names: Sequence[str]) -> dict[str, Any]:
    """Per public statistic: values and unit strings, one per channel of ``names`` (of the fitted ones)."""
    layout = scaler._layout
    index = [layout.names.index(n) for n in names]
    group_of = layout.group_of
    out: dict[str, Any] = {}
    for key, (values, power) in scaler._stats.items():
        if key.startswith("_") or values is None:
            continue
        per_channel = layout.per_channel(values)
        units = [
            ""
            if power == 0 or layout.units[group_of[c]].is_unitless
            else str(layout.units[group_of[c]] ** power)
            for c in index
        ]
        out[key] = {"values": [_json_float(per_channel[c]) for c in index], "unit": units}
    return out


def _digest(scaler: _Scaler) -> str:
    layout = scaler._layout
    payload = {
        "scaler": type(scaler).__name__,
        "params": {k: repr(v) for k, v in scaler.get_params().items()},
        "names": list(layout.names),
        "units": [str(x) for x in layout.units],
        "stats": {
            k: [float(x).hex() for x in np.asarray(v, dtype=np.float64).ravel()]
            for k, (v, p) in sorted(scaler._stats.items())
            if v is not None
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def normalize_corpus(
    paths: Any,
    out_dir: str | os.PathLike,
    scaler: Any = "zscore",
    *,
    channels: str | Sequence[str] = "intersection",
    on_error: str = "raise",
    scheduler: Any = None,
    n_workers: int | None = None,
    chunk_samples: int | None = None,
    progress: bool | None = False,
) -> CorpusReport:
    """Normalize every recording of a corpus with statistics of the whole corpus, one Zarr store each.

    Parameters
    ----------
    paths : str, os.PathLike or sequence of them
        As in :func:`fit_corpus`.
    out_dir : str or os.PathLike
        Created if needed; each recording goes to ``out_dir/<file stem>.zarr``.
    scaler : str or scaler, default 'zscore'
        A fitted scaler (e.g. ``un.load`` of ``unitnorm stats --out``), applied as it
        is, by channel name; or a method name / unfitted scaler, first fitted over the
        corpus as :func:`fit_corpus` does.
    channels, on_error, scheduler, n_workers, chunk_samples, progress
        As in :func:`fit_corpus`. With a fitted scaler: ``'intersection'`` needs
        every fitted channel in every recording; ``'union'`` writes each recording
        with the fitted channels it has; a list writes those channels.

    Returns
    -------
    CorpusReport
        With ``written`` (the stores written) and ``reused`` (stores already there,
        complete and made from the same statistics and the same source file, left as
        they were: a run stopped half way resumes where it stopped).

    Raises
    ------
    ValueError, brainunit.UnitMismatchError, TypeError, ImportError
        As :func:`fit_corpus`; with ``on_error='raise'`` every recording is read
        (headers, and the data when fitting) before any store is written. Also
        when two recordings have the same file stem.

    See Also
    --------
    fit_corpus, unitnorm.io.read_zarr

    Notes
    -----
    Each store holds the float32 array ``data`` (time chunks x channels, compressed)
    and the attributes ``channel_names``, ``sampling_rate_hz``, ``method``,
    ``stats`` (per statistic: ``values`` and ``unit``, one per channel),
    ``source`` (``path``, ``sha256``), ``unitnorm_version``, ``scaler`` (class and
    parameters) and ``stats_digest`` (a SHA-256 of the fitted statistics, to know a
    store made from the same ones). A store is written under a temporary name in
    ``out_dir`` and renamed when complete. The output ``(x - center) / scale`` is
    dimensionless whatever unit each recording came in.

    Examples
    --------
    >>> import os, tempfile, numpy as np, pyedflib
    >>> from unitnorm.io import read_zarr
    >>> from unitnorm.preprocessing import normalize_corpus
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(2):
    ...     header = pyedflib.highlevel.make_signal_header(
    ...         "Cz", dimension="uV", sample_frequency=100, physical_min=-32768, physical_max=32767)
    ...     signal = np.arange(100.0) + 100 * i
    ...     _ = pyedflib.highlevel.write_edf(os.path.join(folder, f"r{i}.edf"), [signal], [header])
    >>> report = normalize_corpus(folder, os.path.join(folder, "out"), "robust")
    >>> print([os.path.basename(p) for p in report.written])
    ['r0.zarr', 'r1.zarr']
    >>> z = read_zarr(report.written[1])
    >>> print(z.stats["center"][0], round(float(z.data[0, 0]), 3))
    99.5 uV 0.005
    >>> import shutil; shutil.rmtree(folder)
    """
    scaler = _as_scaler(scaler)
    _check_policy(channels, on_error)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder")
    files = _find(paths)
    stems: dict[str, str] = {}
    for f in files:
        stem = Path(f.path).stem
        if stem in stems:
            raise ValueError(
                f"{stems[stem]} and {f.path} would both be written to "
                f"{os.path.join(out_dir, stem + '.zarr')}; "
                "give recordings distinct file names"
            )
        stems[stem] = f.path
    fitted = scaler.__dict__.get("_layout") is not None
    if fitted and scaler._layout.names is None:
        raise ValueError(
            f"{type(scaler).__name__}: fitted without channel names (on an array); a corpus matches channels "
            "by name: fit it on recordings"
        )
    runner = _Runner(scheduler, n_workers, progress)
    try:
        if fitted:
            wanted = list(scaler._layout.names) if channels == "intersection" else channels
            corpus = _restrict(_survey(runner, files, wanted, on_error), scaler, channels)
        else:
            corpus = _survey(runner, files, channels, on_error)
            _fit(runner, corpus, scaler, on_error, chunk_samples)
        layout = scaler._layout
        center, scale = scaler._center_scale(layout)
        digest = _digest(scaler)
        base_attrs = {
            "method": _method_of(scaler),
            "scaler": {"class": type(scaler).__name__, "params": _jsonable(scaler.get_params())},
            "unitnorm_version": _version(),
            "stats_digest": digest,
        }
        plans, outs, args = [], [], []
        for i in range(len(corpus.files)):
            plan = _plan(corpus, i, layout, scaler, chunk_samples)
            index = np.array([layout.names.index(n) for n in plan.names], dtype=np.int64)
            a = plan.factors / scale[index]
            b = scaler._offset - center[index] / scale[index]
            attrs = {
                **base_attrs,
                "channel_names": list(plan.names),
                "stats": _stats_attrs(scaler, plan.names),
            }
            plans.append(plan)
            outs.append(os.path.join(out_dir, Path(plan.file.path).stem + ".zarr"))
            args.append((plan, outs[-1], a, b, attrs, digest))
        os.makedirs(out_dir, exist_ok=True)
        results = runner.map("normalizing", _write_star, args, [p.nbytes for p in plans])
    finally:
        runner.close()
    written, reused = [], []
    skipped = list(corpus.skipped)
    for r in results:
        if isinstance(r, _Failed):
            if on_error == "raise":
                raise _fail(r.path, r.reason)
            skipped.append((r.path, r.reason))
        else:
            (written if r[0] == "written" else reused).append(r[1])
    return CorpusReport(
        scaler,
        tuple(f.path for f in corpus.files),
        tuple(skipped),
        tuple(layout.names),
        tuple(written),
        tuple(reused),
    )


def _write_star(args: tuple[Any, ...]) -> Any:
    return _write_task(*args)


def _restrict(corpus: _Corpus, scaler: _Scaler, channels: Any) -> _Corpus:
    """Give a corpus the channels (all, or those listed) and units of a fitted scaler, checking each file."""
    layout = scaler._layout
    for h in corpus.headers:
        here = dict(zip(h.names, h.units, strict=True))
        for n, g in zip(layout.names, layout.group_of, strict=True):
            if n in here and not _units.same_dim(here[n], layout.units[g]):
                raise _units.UnitError(
                    f"{h.path}: channel {n!r} is {_units.describe(here[n])}, but the statistics were fitted "
                    f"in {_units.describe(layout.units[g])}"
                )
    names = list(layout.names) if isinstance(channels, str) else [n for n in layout.names if n in channels]
    unknown = [] if isinstance(channels, str) else [n for n in channels if n not in layout.names]
    if unknown:
        raise ValueError(
            f"channels {', '.join(map(repr, unknown))} are not among the fitted ones: "
            f"{', '.join(layout.names)}"
        )
    corpus.names = tuple(names)
    corpus.units = tuple(layout.units[layout.group_of[layout.names.index(n)]] for n in names)
    return corpus


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _version() -> str:
    from unitnorm import __version__

    return __version__
