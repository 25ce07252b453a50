"""The ``unitnorm`` command line: ``unitnorm demo``, ``unitnorm normalize`` and ``unitnorm stats``.

``python -m unitnorm demo`` normalizes a real EEG recording bundled with the
package, prints its per-channel statistics with units and writes a before/after
plot. ``python -m unitnorm normalize INPUT --out OUT.npz`` does the same job for
an EDF/BDF or NWB file of any size, streaming it chunk by chunk, with the
scalers of :mod:`unitnorm.preprocessing` (``--method zscore|robust|mad|quantile``)
or exponential moving standardization (``--method ems``); ``--save-stats`` saves
the fitted scaler and ``--stats`` applies a saved one to another recording.

Corpora: ``unitnorm stats PATHS... --out STATS`` fits a scaler over many recordings
(files, glob patterns, folders, a BIDS root) and saves it; ``unitnorm normalize
PATHS... --out-dir DIR [--stats STATS]`` writes one Zarr store per recording. Both
run serially, on a local Dask cluster (``--scheduler processes --workers N``) or on a
running one (``--scheduler tcp://HOST:PORT``), with progress over files and bytes.

The installed ``unitnorm`` command enters through the top-level module ``unitnorm_cli``,
which parses the arguments with the standard library only (``--help`` and ``--version``
answer without importing JAX) and then calls :func:`run` here; ``python -m unitnorm``
imports the package (and so JAX) first.

Bad input (a missing file, a file that is not EDF/BDF/NWB, a corrupt header, an
unknown unit string, a channel that is not there) ends with exit status 1 and
one line on stderr; the output file is written under a temporary name and renamed
only when complete, so it is never left half-written.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from unitnorm_cli import DEMO_PLOT, _corpus_options, _Parser, _parser  # noqa: F401 - re-exported

DEMO_FILE = "test_subsecond_crop.edf"
_INTERNAL_PREFIX = re.compile(
    r"(?:Recording|ChannelStats|StandardScaler|RobustScaler|QuantileScaler|ScalerLayer)(?:\.\w+)?: "
)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``finally``/cleanup on the way out runs."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _one_line(err: BaseException, source: str | None = None) -> str:
    """One line for an exception: its message, whitespace collapsed, at most 400 characters plus the path.

    A longer message is cut in the middle, so its start (the reason) and its end
    (the fix, e.g. "pass name=... (or --name)") both survive.
    """
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = " ".join(str(err).split()) or type(err).__name__
    # Library messages start with the class that raised them ("Recording: channel names must be
    # unique ..."); on the command line that name means nothing, the input file does.
    internal = _INTERNAL_PREFIX.match(text)
    if internal is not None:
        text = text[internal.end() :]
        if source and source not in text:
            text = f"{source}: {text}"
    known = (OSError, ValueError, TypeError, ImportError, ArithmeticError)
    if not isinstance(err, known):  # a library's own exception type, e.g. from h5py or hdmf
        text = f"{source + ': ' if source else ''}{type(err).__name__}: {text}"
    # the budget grows with the input's path, so a deep folder does not push the reason out
    extra = len(source) if source else 0
    return text if len(text) <= 400 + extra else f"{text[: 260 + extra]} ... {text[-135:]}"


def _concerns_data(w: warnings.WarningMessage) -> bool:
    """Whether a warning is about the user's data (shown) rather than a library's own notice.

    Deprecation-like categories are never shown (pynwb's, h5py's, ...); unitnorm's
    ``RecordingWarning`` always is; other warnings only when unitnorm issued them.
    """
    quiet = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)
    if issubclass(w.category, quiet):
        return False
    from unitnorm.io import RecordingWarning

    if issubclass(w.category, RecordingWarning):
        return True
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    return os.path.abspath(w.filename).startswith(package)


def _nan_policy(args: argparse.Namespace) -> dict[str, str]:
    """``--nan-policy``: the scaler keyword for fitting (refused where nothing is fitted)."""
    policy = getattr(args, "nan_policy", None)
    if policy is None:
        return {}
    if getattr(args, "stats", None) is not None:
        raise ValueError("--nan-policy applies when fitting; --stats applies statistics already fitted")
    if getattr(args, "method", None) == "ems":
        raise ValueError("--nan-policy applies to the fitted methods, not to --method ems")
    return {"nan_policy": policy}


def _warn_nonfinite(scaler: Any) -> None:
    """One line on stderr naming the channels whose fitted statistics are not finite."""
    import sys

    import numpy as np

    scales = scaler.scale_ if isinstance(scaler.scale_, tuple) else (scaler.scale_,)
    names = scaler.channel_names_
    bad: list[str] = []
    for index, scale in zip(scaler.groups_, scales, strict=False):
        finite = np.isfinite(np.asarray(getattr(scale, "mantissa", scale)))
        if finite.shape != np.shape(index):
            finite = np.full(np.shape(index), finite.all())
        for i in np.asarray(index)[~finite]:
            bad.append(str(names[i]) if names is not None else f"#{i}")
    if bad:
        hint = "" if scaler.nan_policy != "propagate" else "; --nan-policy omit leaves those samples out"
        plural = "s" if len(bad) != 1 else ""
        print(
            f"unitnorm: warning: the statistics of {len(bad)} channel{plural} are not finite "
            f"({', '.join(bad)}): non-finite samples such as EDF+D gaps{hint}",
            file=sys.stderr,
        )


def _load_stats(path: str, method: str | None) -> tuple[Any, str]:
    """Read a ``--stats`` file: a fitted scaler, and its method (which ``--method``, if given, must match)."""
    import unitnorm as un
    from unitnorm import preprocessing

    scaler = un.load(path)
    kinds = (preprocessing.StandardScaler, preprocessing.RobustScaler, preprocessing.QuantileScaler)
    if not isinstance(scaler, kinds):
        raise ValueError(f"{path}: holds a {type(scaler).__name__}, not a fitted scaler")
    scaler._check_fitted("--stats")
    saved = preprocessing._stream._method_of(scaler)
    if method is not None and method != saved:
        raise ValueError(f"--method {method} does not match --stats {path}, which holds {saved}")
    return scaler, saved


def _split_channels(tokens: Sequence[str] | None) -> list[str] | None:
    if tokens is None:
        return None
    names = [part.strip() for token in tokens for part in token.split(",")]
    names = [n for n in names if n]
    if not names:
        raise ValueError("--channels needs at least one channel name")
    return names


def _format_stats(rec: Any, stats: Any, robust: Any = None) -> list[str]:
    """Format a small table: channel, mean, std (and median, MAD), each with its unit."""
    rows = [["channel", "mean", "std"] + (["median", "MAD"] if robust is not None else [])]
    for i, name in enumerate(rec.channel_names):
        unit = rec.channel_units[i]
        cells = [name, f"{stats.mean_mantissa[i]:.4g} {unit}", f"{stats.std_mantissa[i]:.4g} {unit}"]
        if robust is not None:
            cells += [f"{robust.median_mantissa[i]:.4g} {unit}", f"{robust.mad_mantissa[i]:.4g} {unit}"]
        rows.append(cells)
    return _table(rows)


# ---------------------------------------------------------------------------- corpora


def _corpus_channels(tokens: Sequence[str] | None) -> Any:
    """``--channels intersection|union|A,B,C`` (names may also come as several words)."""
    if tokens is None:
        return "intersection"
    if len(tokens) == 1 and tokens[0] in ("intersection", "union"):
        return tokens[0]
    return _split_channels(tokens)


def _scheduler(args: argparse.Namespace) -> Any:
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.scheduler is None:
        if args.workers is not None:
            raise ValueError("--workers needs --scheduler processes")
        return None, None
    return args.scheduler, args.workers


def _report_skipped(report: Any) -> None:
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")


def stats_command(args: argparse.Namespace) -> int:
    """``unitnorm stats``: fit a scaler over a corpus and save it (a checkpoint ``--stats`` reads)."""
    import unitnorm as un
    from unitnorm import preprocessing

    out = os.fspath(args.out)
    if os.path.isdir(out):
        raise ValueError(f"{out}: is a folder; give a file name such as {os.path.join(out, 'stats.npz')}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise ValueError(f"{out}: the output folder does not exist")
    scheduler, workers = _scheduler(args)
    report = preprocessing.fit_corpus(
        args.inputs,
        preprocessing.scaler_for(args.method or "zscore", **_nan_policy(args)),
        channels=_corpus_channels(args.channels),
        on_error=args.on_error,
        scheduler=scheduler,
        n_workers=workers,
        progress=args.progress,
    )
    un.save(out, report.scaler)
    _report_skipped(report)
    _warn_nonfinite(report.scaler)
    n_channels = len(report.channel_names)
    print(
        f"fitted {type(report.scaler).__name__} over {len(report.files)} recording"
        f"{'s' if len(report.files) != 1 else ''} ({len(report.skipped)} skipped), "
        f"{n_channels} channel{'s' if n_channels != 1 else ''}: {', '.join(report.channel_names)}"
    )
    print(f"wrote {out}")
    return 0


def _normalize_corpus_command(args: argparse.Namespace) -> int:
    """``unitnorm normalize PATHS... --out-dir DIR``: one Zarr store per recording."""
    from unitnorm import preprocessing

    unused = [
        flag
        for flag, value in (
            ("--save-stats", args.save_stats),
            ("--factor-new", args.factor_new),
            ("--init-block-size", args.init_block_size),
            ("--eps", args.eps),
            ("--chunk-seconds", args.chunk_seconds),
            ("--name", args.name),
        )
        if value is not None
    ]
    if args.skip_unknown_units:
        unused.append("--skip-unknown-units")
    if unused:
        raise ValueError(f"{', '.join(unused)}: not available with --out-dir (one recording with --out)")
    if args.method == "ems":
        raise ValueError("--method ems adapts within each recording; use --out per recording")
    scaler: Any = preprocessing.scaler_for(args.method or "zscore", **_nan_policy(args))
    if args.stats is not None:
        scaler, _ = _load_stats(args.stats, args.method)
    scheduler, workers = _scheduler(args)
    report = preprocessing.normalize_corpus(
        args.inputs,
        args.out_dir,
        scaler,
        channels=_corpus_channels(args.channels),
        on_error=args.on_error,
        scheduler=scheduler,
        n_workers=workers,
        progress=args.progress,
    )
    _report_skipped(report)
    if args.stats is None:
        _warn_nonfinite(report.scaler)
    print(
        f"wrote {len(report.written)} Zarr store{'s' if len(report.written) != 1 else ''} to {args.out_dir} "
        f"({len(report.reused)} already complete, {len(report.skipped)} skipped), "
        f"method {preprocessing._stream._method_of(report.scaler)}"
    )
    return 0


# ---------------------------------------------------------------------------- normalize


def normalize_command(args: argparse.Namespace) -> int:
    """``unitnorm normalize``: read, normalize per channel, write an .npz atomically."""
    import unitnorm as un
    from unitnorm import io, preprocessing

    if args.out_dir is not None:
        return _normalize_corpus_command(args)
    if len(args.inputs) != 1:
        raise ValueError(f"--out takes one recording, got {len(args.inputs)}; use --out-dir DIR for several")
    if any(k is not None for k in (args.scheduler, args.workers)) or args.on_error != "raise":
        raise ValueError("--scheduler, --workers and --on-error apply to --out-dir")
    args.input = args.inputs[0]
    channels = _split_channels(args.channels)
    if args.chunk_seconds is not None and not (0 < args.chunk_seconds < float("inf")):
        raise ValueError(f"--chunk-seconds must be a positive number of seconds, got {args.chunk_seconds}")
    method = args.method
    scaler = None
    policy = _nan_policy(args)  # before reading --stats: a conflict of options is named first
    if args.stats is not None:
        scaler, method = _load_stats(args.stats, method)
    method = method or "zscore"
    ems = method == "ems"
    if not ems and any(v is not None for v in (args.factor_new, args.init_block_size, args.eps)):
        raise ValueError("--factor-new, --init-block-size and --eps apply to --method ems only")
    if ems and args.save_stats is not None:
        raise ValueError("--save-stats: ems keeps no fitted statistics (it adapts as it goes)")
    rec = io.read_recording(
        args.input, channels=channels, name=args.name, skip_unknown_units=args.skip_unknown_units
    )
    out = os.fspath(args.out)
    for path in (out, args.save_stats):
        if path is not None and os.path.exists(path) and os.path.samefile(path, args.input):
            raise ValueError(f"{path}: the output would overwrite the input")
    print(f"read {args.input}: {rec}")
    if scaler is not None and scaler._layout.names is not None:
        missing = [n for n in scaler._layout.names if n not in rec.channel_names]
        if missing:
            raise ValueError(
                f"{args.input} lacks the channel{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))} of --stats {args.stats}"
            )
    step = None
    if args.chunk_seconds is not None:
        step = max(1, round(args.chunk_seconds * float(rec.sampling_rate.mantissa)))
    if ems:
        _write_ems(rec, out, args, step)
    else:
        if scaler is None:
            scaler = preprocessing.scaler_for(method, **policy).fit(
                rec, chunk_samples=step, progress=args.progress
            )
            _warn_nonfinite(scaler)
        scaler = preprocessing.write_normalized(
            rec, out, method, scaler=scaler, chunk_samples=step, progress=args.progress
        )
        if args.save_stats is not None:
            un.save(args.save_stats, scaler)
        # the table comes from the fitted statistics, not from reading the (large) output back
        saved = _with_units(preprocessing._stream.summary_fields(scaler, rec, method))
        keys = ["mean", "std"] if method == "zscore" else ["center", "scale"]
        keys += ["mad"] if method == "mad" else []
        heads = {"mad": "MAD", "center": "median", "scale": "scale"}
        rows = [["channel", *(heads.get(k, k) for k in keys)]]
        rows += [[name, *(_fmt(saved[k][i]) for k in keys)] for i, name in enumerate(saved["channel_names"])]
        print("\n".join(_table(rows)))
    print(
        f"wrote {out}: {rec.n_samples} samples x {rec.n_channels} "
        f"channel{'s' if rec.n_channels != 1 else ''}, float32, method {method}"
    )
    if args.save_stats is not None:
        print(f"wrote {args.save_stats}: the fitted {type(scaler).__name__}")
    return 0


def _write_ems(rec: Any, out: str, args: argparse.Namespace, step: int | None) -> None:
    """Exponential moving standardization, chunk by chunk, state carried across chunks."""
    import numpy as np

    from unitnorm import io, preprocessing

    eps: Any = 1e-4
    if args.eps is not None:
        eps = _quantity(args.eps, "--eps")
    kwargs: dict[str, Any] = {"eps": eps}
    if args.factor_new is not None:
        if not (0 < args.factor_new <= 1):
            raise ValueError(f"--factor-new must be in (0, 1], got {args.factor_new}")
        kwargs["factor_new"] = args.factor_new
    if args.init_block_size is not None:
        if args.init_block_size < 1:
            raise ValueError(f"--init-block-size must be >= 1, got {args.init_block_size}")
        kwargs["init_block_size"] = args.init_block_size
    ems = preprocessing.ExponentialMovingStandardizer(**kwargs)
    source = _EmsSource(rec, ems, step or max(1, (1 << 20) // max(1, rec.n_channels)))
    lazy = io.Recording._from_source(
        source, rec.channel_names, _unitless(rec), float(rec.sampling_rate.mantissa)
    )
    fields = {
        "format": np.array("unitnorm.normalized/1"),
        "method": np.array("ems"),
        "channel_names": np.array(rec.channel_names, dtype=str),
        "sampling_rate": np.array(float(rec.sampling_rate.mantissa)),
        "mean": np.full(rec.n_channels, np.nan),
        "mean_unit": np.array([str(x) for x in rec.channel_units], dtype=str),
        "std": np.full(rec.n_channels, np.nan),
        "std_unit": np.array([str(x) for x in rec.channel_units], dtype=str),
        "factor_new": np.array(float(kwargs.get("factor_new", 1e-3))),
        "eps": np.array(str(eps)),
    }
    io.write_npz(out, lazy, fields, chunk_samples=source.step, progress=args.progress)


def _unitless(rec: Any) -> list[Any]:
    import brainunit as u

    return [u.UNITLESS] * rec.n_channels


class _EmsSource:
    """Reads a recording in order and standardizes each chunk with a stateful EMS (sequential only)."""

    def __init__(self, rec: Any, ems: Any, step: int):
        self.rec, self.ems, self.step = rec, ems, step
        self.n_samples = rec.n_samples

    def open(self) -> Any:
        import contextlib

        import numpy as np

        from unitnorm.io._recording import attach, common_unit

        target, conv = common_unit(self.rec.channel_names, self.rec.channel_units, "--method ems")

        @contextlib.contextmanager
        def opened() -> Any:
            self.ems.reset()
            expected = [0]
            # With an initial block the standardizer holds samples back until the block is full, so
            # output rows lag the input: keep the rows produced but not yet asked for.
            ready: list[Any] = []
            read_to = [0]
            with self.rec._reader() as raw:  # the file is opened once, read in order

                def produce() -> None:
                    start = read_to[0]
                    if start >= self.n_samples:
                        out = self.ems.flush()
                        if out.shape[0] == 0:
                            raise ValueError("ems: the stream ended before the rows asked for")
                    else:
                        stop = min(self.n_samples, start + self.step)
                        read_to[0] = stop
                        out = self.ems.partial_transform(attach(raw(start, stop) * conv, target))
                    ready.append(np.asarray(out, dtype=np.float64))

                def read(start: int, stop: int, columns: Any) -> Any:
                    if start != expected[0]:
                        raise ValueError("ems output must be read in order, from the start")
                    expected[0] = stop
                    while sum(b.shape[0] for b in ready) < stop - start:
                        produce()
                    rows = np.concatenate(ready) if len(ready) != 1 else ready[0]
                    block, rest = rows[: stop - start], rows[stop - start :]
                    ready[:] = [rest] if rest.shape[0] else []
                    return block[:, list(columns)]

                yield read

        return opened()


def _quantity(text: str, flag: str) -> Any:
    """Read ``'1e-4uV'`` or ``'1e-4 uV'`` as a Quantity; a bare number stays a float."""
    import re

    import brainunit as u

    from unitnorm.io import parse_unit

    match = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*", text)
    if match is None:
        raise ValueError(f"{flag} expected a number with a unit such as 1e-4uV, got {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    if not unit:
        return value
    return u.Quantity(value, unit=parse_unit(unit))


def _with_units(fields: dict[str, Any]) -> dict[str, Any]:
    """``{name: values}`` with each ``<name>_unit`` attached, as ``load_normalized`` gives them."""
    from unitnorm.io import parse_unit

    out = dict(fields)
    for key, units in fields.items():
        if key.endswith("_unit") and key[: -len("_unit")] in fields:
            name = key[: -len("_unit")]
            out[name] = [v * parse_unit(str(unit)) for v, unit in zip(fields[name], units, strict=True)]
    return out


def _fmt(value: Any) -> str:
    """Format a scalar with its unit, e.g. ``'-0.3978 uV'``."""
    if hasattr(value, "mantissa"):
        return f"{float(value.mantissa):.4g} {value.unit}"
    return f"{float(value):.4g}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# ---------------------------------------------------------------------------- demo


def demo(plot_path: str = DEMO_PLOT) -> int:
    """Run the README's demo on the bundled EEG recording (no network)."""
    from importlib.resources import as_file, files

    # checked first: a wrong --plot fails at once, not after the demo has run
    folder = os.path.dirname(os.path.abspath(plot_path))
    if os.path.isdir(plot_path):
        raise ValueError(
            f"--plot {plot_path}: is a folder; give a file name such as {os.path.join(plot_path, DEMO_PLOT)}"
        )
    if not os.path.isdir(folder):
        raise ValueError(f"--plot {plot_path}: the folder {folder} does not exist")

    missing = [m for m in ("pyedflib", "matplotlib") if not _importable(m)]
    if missing:
        print(
            f'unitnorm demo: error: the demo needs {" and ".join(missing)}: pip install -e ".[io]"',
            file=sys.stderr,
        )
        return 1

    import brainunit as u
    import jax.numpy as jnp
    import numpy as np

    import unitnorm as un
    from unitnorm import io, preprocessing

    with as_file(files("unitnorm") / "data" / DEMO_FILE) as path:
        rec = io.read_edf(path)
        print("unitnorm demo: normalize a real EEG recording, keeping its units\n")
        print(
            "1. The bundled recording: a 120 s crop of pyedflib's test_subsecond.edf "
            f"(BSD license, see {DEMO_FILE[:-4]}.txt)"
        )
        print(f"   {rec}")
        print("   units come from the EDF header; its physical range is 8711 .. -8711 uV, a negative gain")

        print("\n2. Per-channel statistics: one streaming pass in 10 s chunks, exact in float64")
        stats = preprocessing.channel_stats(rec, chunk_seconds=10.0, progress=False)
        robust = preprocessing.robust_stats(rec, progress=False)
        for line in _format_stats(rec, stats, robust):
            print(f"   {line}")
        x = rec.data
        mean, var = un.functional.compute_stats(x, axes=0)
        rel = float(jnp.max(jnp.abs(mean.to_decimal(u.uvolt) - stats.mean_mantissa) / stats.std_mantissa))
        rel_var = float(jnp.max(jnp.abs(var.to_decimal(u.uvolt**2) / stats.var_mantissa - 1)))
        print(
            f"   in memory, unitnorm.functional.compute_stats(rec.data, axes=0) gives mean {mean[0]}, "
            f"var {var[0]}\n   (float32; differs from the float64 stream by {rel:.1e} std in the mean, "
            f"{rel_var:.1e} relative in the variance)"
        )

        print("\n3. Normalize each channel: z = (x - mean) / std, dimensionless")
        z, _ = preprocessing.normalize_recording(rec, chunk_seconds=10.0, progress=False)
        z_volts, _ = preprocessing.normalize_recording(rec.select(u.volt), chunk_seconds=10.0, progress=False)
        print(
            f"   z: mean {float(z.mean()):.3f}, std {float(z.std()):.3f}, "
            f"range {z.min():.2f} .. {z.max():.2f}"
        )
        print(
            "   the same EEG converted to volts gives the same z-scores: "
            f"max difference {np.abs(z - z_volts).max():.1e}"
        )
        # The file has one channel. Three channels in three units, all from its samples: as read (uV),
        # converted to V, and in mV on a 50 mV electrode offset (a DC offset such as electrodes have).
        uv = np.asarray(x.mantissa[:, 0], dtype=np.float64)
        columns = np.column_stack([uv, uv * 1e-6, uv * 1e-3 + 50.0])
        mixed = io.Recording(
            columns,
            rec.sampling_rate,
            channel_names=["Fp1", "Fp1 in V", "Fp1 + 50 mV"],
            channel_units=["uV", "V", "mV"],
        )
        z_mixed, _ = preprocessing.normalize_recording(mixed, chunk_seconds=10.0, progress=False)
        print(
            "   three channels in three units, from Fp1's samples (as read, converted to V, in mV on a "
            f"50 mV offset):\n   {mixed}\n   normalized per channel, their z-scores agree: max difference "
            f"{np.abs(z_mixed - z_mixed[:, :1]).max():.1e}"
        )
        x_volts = rec.select(u.volt).data
        layer = un.BatchNorm0d(in_size=rec.n_channels, in_unit=u.uvolt)
        z_layer = np.asarray(layer(x_volts))
        print(
            f"   un.BatchNorm0d(in_unit=u.uvolt) on the volt copy agrees with the stream: "
            f"max difference {np.abs(z_layer - z).max():.1e}"
        )

        print("\n4. The trap and the fix: the same EEG in uV and in V through two layers each")
        adopt_uv, adopt_v = un.BatchNorm0d(rec.n_channels), un.BatchNorm0d(rec.n_channels)
        trap_uv, trap_v = np.asarray(adopt_uv(x)), np.asarray(adopt_v(x_volts))
        naive = float(np.max(np.abs(trap_uv - trap_v)))
        print(
            f"   two BatchNorm0d layers that each adopt their input's unit differ by {naive:.2f}: "
            "their float\n"
            "   epsilon 1e-5 is read in uV^2 by one and in V^2 (far above the EEG's variance) by the other"
        )
        fixed_uv = un.BatchNorm0d(rec.n_channels, in_unit=u.uvolt)
        fixed_v = un.BatchNorm0d(rec.n_channels, in_unit=u.uvolt)
        fix_uv, fix_v = np.asarray(fixed_uv(x)), np.asarray(fixed_v(x_volts))
        fixed = float(np.max(np.abs(fix_uv - fix_v)))
        print(
            f"   the fix: two BatchNorm0d(in_unit=u.uvolt) layers, one fed uV and one fed V, agree: "
            f"max difference {fixed:.1e}\n"
            "   (or pass a Quantity epsilon, e.g. epsilon=1e-5 * u.uvolt**2)"
        )

        seconds = 10.0
        n = int(seconds * float(rec.sampling_rate.mantissa))
        _plot(
            plot_path,
            mixed,
            columns,
            z_mixed,
            n,
            trap=(trap_uv[:n, 0], trap_v[:n, 0], naive, float(stats.var_mantissa[0]) * 1e-12),
            fix=(fix_uv[:n, 0], fix_v[:n, 0], fixed),
        )
    print(f"\n5. Wrote the plot (first {seconds:g} s: three channels before and after, the trap, the fix):")
    print(f"   {plot_path}")
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _plot(path: str, rec: Any, raw: Any, z: Any, n: int, trap: tuple, fix: tuple) -> None:
    """Write the demo's figure (first ``n`` samples), 1280 x 800 px; PNG via Agg, written atomically.

    Left: each channel before, in its own unit (small multiples); right: all after, dimensionless,
    stacked. Below: the same EEG in uV and V through two unit-adopting layers (float epsilon; the
    trap), and through two layers with ``in_unit`` (the fix).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    rate = float(rec.sampling_rate.mantissa)
    t = np.arange(n) / rate
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    fig = Figure(figsize=(12.8, 8), layout="constrained")
    FigureCanvasAgg(fig)
    rows = [[f"before{j}", "after"] for j in range(rec.n_channels)] + [["trap", "fix"]]
    ax = fig.subplot_mosaic(rows, height_ratios=[1] * rec.n_channels + [1.7])
    fig.suptitle(
        "unitnorm demo: one EEG channel (Fp1, bundled) as three channels in three units, "
        "normalized per channel",
        fontsize=13,
    )
    for j, (name, unit) in enumerate(zip(rec.channel_names, rec.channel_units, strict=True)):
        a = ax[f"before{j}"]
        mean, std = raw[:, j].mean(), raw[:, j].std()  # of the whole recording, as normalized
        a.plot(t, raw[:n, j], lw=0.6, color=colors[j])
        a.set_ylabel(str(unit), fontsize=11)
        a.set_title(f"before: {name}   mean {mean:.4g} {unit}, std {std:.4g} {unit}", fontsize=10, loc="left")
        if np.abs(raw[:n, j]).max() < 1e-2:  # tick labels as 2.5e-05: no exponent above the axis
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1e}"))
        else:
            a.ticklabel_format(axis="y", useOffset=False)
        if j < rec.n_channels - 1:
            a.tick_params(labelbottom=False)
    ax[f"before{rec.n_channels - 1}"].set_xlabel("time (s)")
    after = ax["after"]
    step = 8.0
    for j in range(rec.n_channels):
        after.plot(t, z[:n, j] - j * step, lw=0.6, color=colors[j])
    after.set_yticks([-j * step for j in range(rec.n_channels)], list(rec.channel_names), fontsize=10)
    spread = float(np.abs(z - z[:, :1]).max())
    after.set_title(
        f"after: z = (x - mean) / std, dimensionless, stacked {step:g} apart\n"
        f"the three channels' z-scores: max difference {spread:.1e}",
        fontsize=10,
        loc="left",
    )
    after.set_xlabel("time (s)")
    diff, var_v = trap[2], trap[3]
    shrink = np.sqrt((var_v + 1e-5) / var_v)
    titles = {
        "trap": "the trap: BatchNorm0d() adopts each input's unit; float epsilon=1e-5\n"
        f"in V, epsilon (1e-5 V^2) swamps the variance ({var_v:.2g} V^2): output {shrink:.0f}x smaller\n"
        f"max difference {diff:.2f}",
        "fix": "the fix: BatchNorm0d(in_unit=u.uvolt): V is converted to uV first,\n"
        "so epsilon is read in uV^2 for both\n"
        f"max difference {fix[2]:.1e}",
    }
    for key, (y_uv, y_v) in (("trap", trap[:2]), ("fix", fix[:2])):
        a = ax[key]
        a.plot(t, y_uv, lw=0.8, color="#1f77b4", label="fed the EEG in uV")
        dash = "--" if key == "fix" else "-"
        a.plot(t, y_v, lw=0.8, color="#ff7f0e", ls=dash, label="fed the same EEG in V")
        a.set_title(titles[key], fontsize=10, loc="left")
        a.set_xlabel("time (s)")
        a.set_ylabel("layer output (dimensionless)")
        a.legend(loc="upper right", fontsize=9)
    ax["fix"].sharey(ax["trap"])
    for a in ax.values():
        a.grid(alpha=0.3)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m unitnorm``; returns the exit status (see :func:`unitnorm_cli.main`)."""
    import unitnorm_cli

    return unitnorm_cli.main(argv)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand that :func:`unitnorm_cli.main` parsed; returns the exit status."""
    command = demo if args.command == "demo" else None
    caught: list[warnings.WarningMessage] = []
    # Batch schedulers stop jobs with SIGTERM: turn it into an exception, so the temporary output
    # is removed on the way out (as for Ctrl-C), and exit 128 + 15 like a process killed by it.
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _in_main_thread() else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if command:
                status = demo(args.plot)
            elif args.command == "stats":
                status = stats_command(args)
            else:
                status = normalize_command(args)
    except KeyboardInterrupt:
        print("unitnorm: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("unitnorm: terminated (SIGTERM); no output was written", file=sys.stderr)
        return 143
    except Exception as err:  # one line, never a traceback: the files are data from strangers
        inputs = getattr(args, "inputs", None) or [None]
        print(f"unitnorm: error: {_one_line(err, inputs[0] if len(inputs) == 1 else None)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    seen = set()
    for w in caught:
        if not _concerns_data(w):
            continue
        text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            print(f"unitnorm: warning: {w.category.__name__}: {text}", file=sys.stderr)
    return status


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
