"""Exact order statistics: value→count tables, and a bounded-memory multi-pass selection.

Two ways to get exact quantiles of data seen in chunks, both ending in the same
order statistics, so every route gives the same numbers:

- :class:`CountTable`: each slot (a channel, or a pool of channels) keeps its
  distinct values and how often each was seen, merged chunk by chunk with
  ``np.unique``. Exact over everything seen, usable with data that can be read
  only once (``partial_fit``); memory grows with the number of *distinct* values
  (bounded for quantized ADC data, up to one entry per sample for continuous data).
- :func:`select_streamed`: for data that can be read again (a ``Recording``).
  A first pass counts the values and finds their range; each further pass
  histograms only the windows that hold a wanted rank into ``BINS`` bins, until a
  window holds at most ``COLLECT_LIMIT`` values, which are then collected (as a
  value→count table) and the rank picked exactly. Memory is bounded by the chunk
  size, the bins and ``COLLECT_LIMIT``, whatever the recording's length.

Quantiles interpolate linearly between the two order statistics around
``q * (n - 1)`` (NumPy's default ``method='linear'``, which scikit-learn's
``RobustScaler`` and SpikeInterface use).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "CountTable",
    "Ranges",
    "interpolate",
    "merge_window_results",
    "needed_ranks",
    "select_passes",
    "select_sorted",
    "select_streamed",
    "window_pass",
]

#: Bins per histogram pass of :func:`select_streamed`.
BINS = 4096
#: A window with at most this many values is collected and selected from.
COLLECT_LIMIT = 1 << 13
#: Refinement passes after which a window is collected whatever its size (only
#: reached by values packed closer than float64 histogram edges can separate).
MAX_DEPTH = 8


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Return ``a + t (b - a)``, computed from the nearer end so that ``t = 1`` gives ``b`` exactly."""
    diff = b - a
    with np.errstate(invalid="ignore"):
        return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def needed_ranks(count: int, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the low and high 0-based ranks and the weight for each quantile level.

    ``count`` values; level ``q`` in [0, 1] sits at ``h = q (count - 1)``, between ranks
    ``floor(h)`` and ``floor(h) + 1`` (clipped), with weight ``h - floor(h)``.
    """
    q = np.asarray(levels, dtype=np.float64)
    h = q * (count - 1)
    lo = np.floor(h)
    t = h - lo
    lo = lo.astype(np.int64)
    hi = np.minimum(lo + 1, count - 1)
    return lo, hi, t


def interpolate(low: np.ndarray, high: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation between the order statistics (see :func:`needed_ranks`)."""
    return _lerp(np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64), t)


def select_sorted(values: np.ndarray, counts: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Return the values at 0-based ``ranks`` of the multiset given as sorted distinct values and counts."""
    ends = np.cumsum(counts)
    return values[np.searchsorted(ends, ranks, side="right")]


class CountTable:
    """Per-slot exact value→count tables (sorted distinct values), merged chunk by chunk.

    ``nan`` counts NaNs per slot, which the tables never hold.
    """

    def __init__(self, n_slots: int):
        self.values: list[np.ndarray] = [np.empty(0) for _ in range(n_slots)]
        self.counts: list[np.ndarray] = [np.empty(0, dtype=np.int64) for _ in range(n_slots)]
        self.nan = np.zeros(n_slots, dtype=np.int64)

    def copy(self) -> CountTable:
        out = CountTable(0)
        out.values, out.counts, out.nan = list(self.values), list(self.counts), self.nan.copy()
        return out

    def add(self, slots: Iterable[np.ndarray]) -> None:
        """Add one chunk: one 1-D float64 array of values per slot."""
        for s, v in enumerate(slots):
            isnan = np.isnan(v)
            n_nan = int(isnan.sum())
            if n_nan:
                self.nan[s] += n_nan
                v = v[~isnan]
            if v.size == 0:
                continue
            new_v, new_c = np.unique(v, return_counts=True)
            if self.values[s].size == 0:
                self.values[s], self.counts[s] = new_v, new_c.astype(np.int64)
                continue
            self.values[s], self.counts[s] = _merge_sorted(
                self.values[s], self.counts[s], new_v, new_c.astype(np.int64)
            )

    def count(self, s: int) -> int:
        """Return the number of non-NaN values in slot ``s``."""
        return int(self.counts[s].sum())


def _merge_sorted(
    va: np.ndarray, ca: np.ndarray, vb: np.ndarray, cb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted value→count tables (a stable sort of two sorted runs: linear time)."""
    values = np.concatenate([va, vb])
    counts = np.concatenate([ca, cb])
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return values[starts], np.add.reduceat(counts, starts)


def _index(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Histogram bin of each value of a window ``[lo, hi]`` (the same arithmetic in every pass)."""
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.int64)
    scale = BINS / (hi - lo)
    with np.errstate(invalid="ignore", over="ignore"):
        idx = np.floor((x - lo) * scale)
    return np.clip(np.nan_to_num(idx, nan=0.0), 0, BINS - 1).astype(np.int64)


class _Window:
    """The finite values of one slot that pass every test of ``chain``: ranks ``offset ..``."""

    def __init__(self, slot: int, lo: float, hi: float, chain: tuple, offset: int, count: int):
        self.slot, self.lo, self.hi, self.chain = slot, lo, hi, chain
        self.offset, self.count = offset, count
        self.ranks: set[int] = set()

    def members(self, v: np.ndarray) -> np.ndarray:
        keep = np.isfinite(v)
        for lo, hi, b in self.chain:
            keep &= _index(v, lo, hi) == b
        return v[keep]


class Ranges:
    """First-pass summary per slot: counts of non-NaN, NaN, -inf and +inf values, and the finite range.

    Summaries of disjoint parts (chunks, files) combine exactly and in any order with
    :meth:`merge` (integer sums, minima and maxima), so a corpus can be summarized file
    by file on different machines.
    """

    def __init__(self, n_slots: int):
        self.count = np.zeros(n_slots, dtype=np.int64)
        self.nan = np.zeros(n_slots, dtype=np.int64)
        self.neg = np.zeros(n_slots, dtype=np.int64)
        self.pos = np.zeros(n_slots, dtype=np.int64)
        self.lo = np.full(n_slots, np.inf)
        self.hi = np.full(n_slots, -np.inf)

    def add(self, chunk: Sequence[np.ndarray]) -> None:
        """Add one chunk: one 1-D float64 array of values per slot."""
        for s, v in enumerate(chunk):
            isnan = np.isnan(v)
            n_nan = int(isnan.sum())
            self.nan[s] += n_nan
            self.count[s] += v.size - n_nan
            finite = v[np.isfinite(v)]
            self.neg[s] += int(np.sum(v == -np.inf))
            self.pos[s] += int(np.sum(v == np.inf))
            if finite.size:
                self.lo[s] = min(self.lo[s], float(finite.min()))
                self.hi[s] = max(self.hi[s], float(finite.max()))

    def merge(self, other: Ranges) -> Ranges:
        """Return the summary of both parts (exact, the same in any order)."""
        out = Ranges(0)
        out.count, out.nan = self.count + other.count, self.nan + other.nan
        out.neg, out.pos = self.neg + other.neg, self.pos + other.pos
        out.lo, out.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        return out


def window_pass(
    chunks: Iterable[Sequence[np.ndarray]], small: Sequence[_Window], large: Sequence[_Window]
) -> tuple[list[CountTable], list[np.ndarray]]:
    """One pass over ``chunks``: a value table of each ``small`` window, a histogram of each ``large`` one.

    The results of disjoint parts combine exactly with :func:`merge_window_results`.
    """
    tables = [CountTable(1) for _ in small]
    hists = [np.zeros(BINS, dtype=np.int64) for _ in large]
    for chunk in chunks:
        for w, table in zip(small, tables, strict=True):
            table.add([w.members(chunk[w.slot])])
        for w, hist in zip(large, hists, strict=True):
            hist += np.bincount(_index(w.members(chunk[w.slot]), w.lo, w.hi), minlength=BINS)
    return tables, hists


def merge_window_results(
    a: tuple[list[CountTable], list[np.ndarray]], b: tuple[list[CountTable], list[np.ndarray]]
) -> tuple[list[CountTable], list[np.ndarray]]:
    """Combine two :func:`window_pass` results of disjoint parts (exact, the same in any order)."""
    tables = []
    for ta, tb in zip(a[0], b[0], strict=True):
        out = CountTable(1)
        if ta.values[0].size == 0 or tb.values[0].size == 0:
            keep = ta if tb.values[0].size == 0 else tb
            out.values, out.counts = [keep.values[0]], [keep.counts[0]]
        else:
            v, c = _merge_sorted(ta.values[0], ta.counts[0], tb.values[0], tb.counts[0])
            out.values, out.counts = [v], [c]
        out.nan = ta.nan + tb.nan
        tables.append(out)
    return tables, [ha + hb for ha, hb in zip(a[1], b[1], strict=True)]


def select_streamed(
    chunks: Callable[[], Iterable[Sequence[np.ndarray]]],
    n_slots: int,
    ranks_for: Callable[[int], Sequence[int]],
    omit: bool,
) -> tuple[list[dict[int, float]], np.ndarray, np.ndarray]:
    """Exact order statistics of data read in chunks, in bounded memory (several passes).

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterable of chunks; a chunk is one 1-D float64 array per slot.
    n_slots : int
    ranks_for : callable
        ``ranks_for(count)``: the 0-based ranks wanted of a slot holding ``count`` values.
    omit : bool
        Skip NaNs (otherwise a slot with a NaN gets no ranks).

    Returns
    -------
    picked : list of dict
        Per slot, rank → value (empty for a slot that had a NaN and ``omit`` is False,
        or no values).
    count, nan : ndarray
        Per slot, the number of non-NaN values and of NaNs.
    """
    ranges = Ranges(n_slots)
    for chunk in chunks():
        ranges.add(chunk)
    return select_passes(ranges, lambda small, large: window_pass(chunks(), small, large), ranks_for, omit)


def select_passes(
    ranges: Ranges,
    run_pass: Callable[[list[_Window], list[_Window]], tuple[list[CountTable], list[np.ndarray]]],
    ranks_for: Callable[[int], Sequence[int]],
    omit: bool,
) -> tuple[list[dict[int, float]], np.ndarray, np.ndarray]:
    """Run the selection of :func:`select_streamed` from a first-pass summary and a way to run window passes.

    ``run_pass(small, large)`` returns what :func:`window_pass` returns over all the data
    (for a corpus: the per-file results combined with :func:`merge_window_results`).
    """
    count, nan, neg, pos, lo, hi = ranges.count, ranges.nan, ranges.neg, ranges.pos, ranges.lo, ranges.hi
    n_slots = len(count)
    picked: list[dict[int, float]] = [{} for _ in range(n_slots)]
    open_windows: list[_Window] = []
    for s in range(n_slots):
        if count[s] == 0 or (nan[s] and not omit):
            continue
        finite_n = int(count[s] - neg[s] - pos[s])
        window = _Window(s, float(lo[s]), float(hi[s]), (), 0, finite_n)
        for r in sorted(set(int(r) for r in ranks_for(int(count[s])))):
            if r < neg[s]:
                picked[s][r] = -np.inf
            elif r >= neg[s] + finite_n:
                picked[s][r] = np.inf
            else:
                window.ranks.add(r - int(neg[s]))
        if window.ranks:
            open_windows.append(window)
    depth = 0
    while open_windows:
        small = [w for w in open_windows if w.count <= COLLECT_LIMIT or depth >= MAX_DEPTH or not w.hi > w.lo]
        large = [w for w in open_windows if w not in small]
        tables, hists = run_pass(small, large)
        for w, table in zip(small, tables, strict=True):
            ranks = np.array(sorted(w.ranks), dtype=np.int64)
            got = select_sorted(table.values[0], table.counts[0], ranks - w.offset)
            for r, value in zip(ranks, got, strict=True):
                picked[w.slot][int(r) + int(neg[w.slot])] = float(value)
        next_windows: list[_Window] = []
        for w, hist in zip(large, hists, strict=True):
            ends = np.cumsum(hist)
            children: dict[int, _Window] = {}
            for r in sorted(w.ranks):
                b = int(np.searchsorted(ends, r - w.offset, side="right"))
                if b not in children:
                    width = (w.hi - w.lo) / BINS
                    start = w.offset + (int(ends[b - 1]) if b else 0)
                    children[b] = _Window(
                        w.slot,
                        w.lo + b * width,
                        min(w.hi, w.lo + (b + 1) * width),
                        (*w.chain, (w.lo, w.hi, b)),
                        start,
                        int(hist[b]),
                    )
                children[b].ranks.add(r)
            next_windows.extend(children.values())
        open_windows = next_windows
        depth += 1
    return picked, count, nan
